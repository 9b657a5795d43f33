"""Leases of pool numbers: race-free claims, heartbeats, leaving, and the lease history.

A pool number is free when its `held_until` has passed; a number never leased has held_until at the
epoch. Every claim is one conditional UPDATE of the number row, so two sessions can never claim one
number together. On PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED, and the
UPDATE re-checks the condition on the row it locked. On SQLite every write transaction runs alone.

Claims read the (pool_id, state, held_until, id) index of tracking_numbers in its order, so a claim
costs one index lookup whatever the pool's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import models
from pbx_bridge.tracking.sites import PoolSettings

_NUMBER = models.TrackingNumber
_LEASE = models.NumberLease
_VISITOR = models.VisitorSession

# The order of ix_tracking_numbers_pool_id_state_held_until_id after its pool_id and state columns,
# so claims read that index without a sort. The id orders numbers never leased, which all share the
# epoch as held_until.
_CLAIM_ORDER = (_NUMBER.held_until, _NUMBER.id)


@dataclass(frozen=True)
class LeasedNumber:
    number_id: int
    number: str
    reused: bool = False


def live_hold_until(pool: PoolSettings, now: datetime) -> datetime:
    """End of the hold of a number whose visitor is still on the page.

    The next heartbeat is due within one heartbeat interval, so the number stays held for the
    hold time plus that interval. Attribution still counts the hold from the last heartbeat.
    """
    return now + timedelta(seconds=pool.hold_time + pool.heartbeat_interval)


async def claim_free_number(
    session: AsyncSession, pool: PoolSettings, session_id: int, now: datetime
) -> LeasedNumber | None:
    """Claim the pool number that has been free the longest, or return None when none is free."""
    is_free = _NUMBER.held_until < now
    candidate = _first_active_number(pool, is_free)
    return await _claim(session, candidate, is_free, pool, session_id, now, reused=False)


async def claim_reused_number(
    session: AsyncSession, pool: PoolSettings, session_id: int, now: datetime
) -> LeasedNumber | None:
    """Take over the least recently active number of an exhausted pool.

    The lease is marked reused, and calls that both leases cover become pool-ambiguous.
    Returns None when every number is locked by a concurrent claim at this moment.
    """
    candidate = _first_active_number(pool)
    return await _claim(session, candidate, None, pool, session_id, now, reused=True)


def _first_active_number(pool: PoolSettings, *conditions: Any) -> Any:
    """Build the subquery of the pool's active number first in claim order, skipping rows that
    a concurrent claim has locked."""
    return (
        select(_NUMBER.id)
        .where(
            _NUMBER.pool_id == pool.pool_id,
            _NUMBER.state == models.NumberState.ACTIVE.value,
            *conditions,
        )
        .order_by(*_CLAIM_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


async def resume_held_number(
    session: AsyncSession, pool: PoolSettings, session_id: int, now: datetime
) -> LeasedNumber | None:
    """Give a returning visitor's session its number back if the session still holds it."""
    row = (
        await session.execute(
            update(_NUMBER)
            .where(
                _NUMBER.held_by_session_id == session_id,
                _NUMBER.pool_id == pool.pool_id,
                _NUMBER.held_until >= now,
            )
            .values(held_until=live_hold_until(pool, now))
            .returning(_NUMBER.id, _NUMBER.number)
        )
    ).first()
    if row is None:
        return None
    await _touch_lease(session, session_id, row.id, now)
    return LeasedNumber(row.id, row.number)


async def extend_hold(
    session: AsyncSession,
    pool: PoolSettings,
    site_id: int,
    session_id: int,
    visitor_id: str,
    now: datetime,
) -> bool:
    """Record a heartbeat; returns False when the session no longer holds a number.

    The number stays with the session as long as no other session claimed it, even after a gap
    in heartbeats (a laptop that slept), so the visitor keeps seeing the same number.
    """
    row = (
        await session.execute(
            update(_NUMBER)
            .where(
                _NUMBER.held_by_session_id == session_id,
                _NUMBER.pool_id == pool.pool_id,
                _NUMBER.held_by_session_id.in_(_owned_session(site_id, session_id, visitor_id)),
            )
            .values(held_until=live_hold_until(pool, now))
            .returning(_NUMBER.id)
        )
    ).first()
    if row is None:
        return False
    await _touch_lease(session, session_id, row.id, now)
    return True


async def release_hold(
    session: AsyncSession,
    pool: PoolSettings,
    site_id: int,
    session_id: int,
    visitor_id: str,
    now: datetime,
) -> bool:
    """Record that the visitor left: the number stays held for the hold time from now."""
    row = (
        await session.execute(
            update(_NUMBER)
            .where(
                _NUMBER.held_by_session_id == session_id,
                _NUMBER.pool_id == pool.pool_id,
                _NUMBER.held_by_session_id.in_(_owned_session(site_id, session_id, visitor_id)),
            )
            .values(held_until=now + timedelta(seconds=pool.hold_time))
            .returning(_NUMBER.id)
        )
    ).first()
    if row is None:
        return False
    await session.execute(
        update(_LEASE)
        .where(
            _LEASE.session_id == session_id,
            _LEASE.number_id == row.id,
            _LEASE.released_at.is_(None),
        )
        .values(last_seen_at=now, released_at=now)
    )
    return True


async def _claim(
    session: AsyncSession,
    candidate,
    still_free,
    pool: PoolSettings,
    session_id: int,
    now: datetime,
    *,
    reused: bool,
) -> LeasedNumber | None:
    statement = update(_NUMBER).where(_NUMBER.id == candidate)
    if still_free is not None:
        # Re-checked on the row version the UPDATE locks, which PostgreSQL's READ COMMITTED
        # re-reads when another transaction changed the row in the meantime.
        statement = statement.where(still_free)
    row = (
        await session.execute(
            statement.values(held_by_session_id=session_id, held_until=live_hold_until(pool, now))
            .returning(_NUMBER.id, _NUMBER.number)
            # Rows of the ORM identity map need no refresh: the claim is the whole transaction.
            .execution_options(synchronize_session=False)
        )
    ).first()
    if row is None:
        return None
    await session.execute(
        insert(_LEASE).values(
            number_id=row.id,
            session_id=session_id,
            leased_at=now,
            last_seen_at=now,
            reused=reused,
        )
    )
    return LeasedNumber(row.id, row.number, reused)


async def _touch_lease(session: AsyncSession, session_id: int, number_id: int, now: datetime) -> None:
    # The live lease of this session and number: the visitor is back, so it is not released.
    await session.execute(
        update(_LEASE)
        .where(_LEASE.session_id == session_id, _LEASE.number_id == number_id)
        .values(last_seen_at=now, released_at=None)
        .execution_options(synchronize_session=False)
    )


def _owned_session(site_id: int, session_id: int, visitor_id: str):
    # Heartbeats and leave requests name a session; only its own visitor may act on it.
    return select(_VISITOR.id).where(
        _VISITOR.id == session_id,
        _VISITOR.site_id == site_id,
        _VISITOR.visitor_id == visitor_id,
    )
