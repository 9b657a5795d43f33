"""Leases of pool numbers: race-free claims, heartbeats, leaving, and the lease history.

A pool number is free when its `held_until` has passed; a number never leased has held_until at the
epoch. A claim serves a batch of sessions at once. It selects the first free numbers in claim
order, which PostgreSQL locks with FOR UPDATE SKIP LOCKED. Then an UPDATE re-checks on each
written row that the number is still free, so two sessions can never claim one number together,
within one process or across several.

Claims read the (pool_id, state, held_until, id) index of tracking_numbers in its order, so a claim
costs one index range read whatever the pool's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, bindparam, insert, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

import models
from models.base import UTCDateTime
from pbx_bridge.tracking.batching import padded
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
    session_id: int
    reused: bool = False


def live_hold_until(pool: PoolSettings, now: datetime) -> datetime:
    """End of the hold of a number whose visitor is still on the page.

    The next heartbeat is due within one heartbeat interval, so the number stays held for the
    hold time plus that interval. Attribution still counts the hold from the last heartbeat.
    """
    return now + timedelta(seconds=pool.hold_time + pool.heartbeat_interval)


async def claim_free_numbers(
    connection: AsyncConnection, pool: PoolSettings, session_ids: list[int], now: datetime
) -> list[LeasedNumber]:
    """Claim one number for each session, those free the longest first.

    Returns fewer numbers than sessions when the pool runs out; the sessions left out are the
    last ones of `session_ids`.
    """
    if connection.dialect.name == "postgresql":
        return await _claim_free_postgres(connection, pool, session_ids, now)
    return await _claim(connection, pool, session_ids, now, _NUMBER.held_until < now, reused=False)


async def _claim_free_postgres(
    connection: AsyncConnection, pool: PoolSettings, session_ids: list[int], now: datetime
) -> list[LeasedNumber]:
    rows = await connection.execute(
        _CLAIM_FREE_POSTGRES,
        {
            "pool_id": pool.pool_id,
            "state": models.NumberState.ACTIVE.value,
            "now": now,
            "count": len(session_ids),
            "session_ids": session_ids,
            "held_until": live_hold_until(pool, now),
        },
    )
    numbers = {row.session_id: LeasedNumber(row.id, row.number, row.session_id) for row in rows}
    return [numbers[session_id] for session_id in session_ids if session_id in numbers]


# The claim of _claim in one statement: the SELECT ... FOR UPDATE SKIP LOCKED, the UPDATE and
# the INSERT of the leases cost one round trip instead of four. One pass is enough here because
# FOR UPDATE re-evaluates the WHERE clause on the newest version of a row that a concurrent
# transaction changed (PostgreSQL manual, "Read Committed Isolation Level"), so every candidate
# is free and stays locked until this transaction ends.
# unnest pairs the candidates, in claim order, with the sessions in their given order, and pads
# the shorter array with NULLs, which match no number.
_CLAIM_FREE_POSTGRES = text(
    """
    WITH claimed AS (
        UPDATE tracking_numbers AS number
        SET held_until = :held_until, held_by_session_id = pair.session_id
        FROM unnest(
            ARRAY(
                SELECT id FROM tracking_numbers
                WHERE pool_id = :pool_id AND state = :state AND held_until < :now
                ORDER BY held_until, id
                LIMIT :count
                FOR UPDATE SKIP LOCKED
            ),
            :session_ids
        ) AS pair (number_id, session_id)
        WHERE number.id = pair.number_id AND pair.session_id IS NOT NULL
        RETURNING number.id, number.number, pair.session_id
    ), leased AS (
        INSERT INTO number_leases (number_id, session_id, leased_at, last_seen_at, reused)
        SELECT id, session_id, :now, :now, false FROM claimed
    )
    SELECT id, number, session_id FROM claimed
    """
).bindparams(
    bindparam("pool_id", type_=Integer),
    bindparam("state", type_=String),
    bindparam("now", type_=UTCDateTime()),
    bindparam("count", type_=Integer),
    bindparam("session_ids", type_=ARRAY(Integer)),
    bindparam("held_until", type_=UTCDateTime()),
)


async def claim_reused_numbers(
    connection: AsyncConnection,
    pool: PoolSettings,
    session_ids: list[int],
    now: datetime,
    *,
    keep: list[int] | None = None,
) -> list[LeasedNumber]:
    """Take over the least recently active numbers of an exhausted pool, one per session.

    The leases are marked reused, and calls that two leases cover become pool-ambiguous.
    Numbers in `keep` (leased earlier in the same transaction, to visitors who arrived together
    with these) are left alone. Returns fewer numbers than sessions when concurrent claims
    lock the rest at this moment, or when the rest are in `keep`.
    """
    conditions = (_NUMBER.id.not_in(padded(keep)),) if keep else ()
    return await _claim(connection, pool, session_ids, now, *conditions, reused=True)


async def resume_held_numbers(
    connection: AsyncConnection, pool: PoolSettings, session_ids: list[int], now: datetime
) -> dict[int, LeasedNumber]:
    """Give returning visitors' sessions their numbers back where they still hold them.

    Returns the numbers by session id; sessions that hold none are left out.
    """
    rows = (
        await connection.execute(
            update(_NUMBER)
            .where(
                _NUMBER.held_by_session_id.in_(padded(session_ids)),
                _NUMBER.pool_id == pool.pool_id,
                _NUMBER.held_until >= now,
            )
            .values(held_until=live_hold_until(pool, now))
            .returning(_NUMBER.id, _NUMBER.number, _NUMBER.held_by_session_id)
        )
    ).all()
    await _touch_leases(connection, [(row.held_by_session_id, row.id) for row in rows], now)
    return {row.held_by_session_id: LeasedNumber(row.id, row.number, row.held_by_session_id) for row in rows}


async def extend_holds(
    connection: AsyncConnection,
    pool: PoolSettings,
    site_id: int,
    visitors: list[tuple[int, str]],
    now: datetime,
) -> set[tuple[int, str]]:
    """Record heartbeats of (session id, visitor id) pairs; returns the pairs whose session
    belongs to that visitor and still has a number.

    A number stays with its session as long as no other session claimed it, even after a gap
    in heartbeats (a laptop that slept), so the visitor keeps seeing the same number.
    """
    if connection.dialect.name == "postgresql":
        rows = await connection.execute(
            _EXTEND_HOLDS_POSTGRES,
            {
                "session_ids": [session_id for session_id, _ in visitors],
                "visitor_ids": [visitor_id for _, visitor_id in visitors],
                "site_id": site_id,
                "pool_id": pool.pool_id,
                "held_until": live_hold_until(pool, now),
                "now": now,
            },
        )
        return {(row.session_id, row.visitor_id) for row in rows}

    # Elsewhere, first the sessions that belong to the visitors who name them, then their numbers.
    owned = await connection.execute(
        select(_VISITOR.id, _VISITOR.visitor_id).where(*_ownership(site_id, visitors))
    )
    owners = {session_id: visitor_id for session_id, visitor_id in owned}
    if not owners:
        return set()
    rows = (
        await connection.execute(
            update(_NUMBER)
            .where(
                _NUMBER.pool_id == pool.pool_id,
                _NUMBER.held_by_session_id.in_(padded(list(owners))),
            )
            .values(held_until=live_hold_until(pool, now))
            .returning(_NUMBER.id, _NUMBER.held_by_session_id)
        )
    ).all()
    await _touch_leases(connection, [(row.held_by_session_id, row.id) for row in rows], now)
    return {(row.held_by_session_id, owners[row.held_by_session_id]) for row in rows}


# Both UPDATEs in one statement, which is a transaction of its own: a heartbeat batch costs one
# round trip instead of four (BEGIN, the two UPDATEs, COMMIT).
_EXTEND_HOLDS_POSTGRES = text(
    """
    WITH held AS (
        UPDATE tracking_numbers AS number SET held_until = :held_until
        FROM unnest(:session_ids, :visitor_ids) AS beat (session_id, visitor_id)
        JOIN visitor_sessions AS visit
            ON visit.id = beat.session_id AND visit.visitor_id = beat.visitor_id
        WHERE visit.site_id = :site_id
            AND number.held_by_session_id = visit.id
            AND number.pool_id = :pool_id
        RETURNING number.id AS number_id, number.held_by_session_id AS session_id,
            visit.visitor_id
    ), touched AS (
        UPDATE number_leases AS lease SET last_seen_at = :now, released_at = NULL
        FROM held
        WHERE lease.session_id = held.session_id AND lease.number_id = held.number_id
    )
    SELECT session_id, visitor_id FROM held
    """
).bindparams(
    bindparam("session_ids", type_=ARRAY(Integer)),
    bindparam("visitor_ids", type_=ARRAY(String)),
    bindparam("site_id", type_=Integer),
    bindparam("pool_id", type_=Integer),
    bindparam("held_until", type_=UTCDateTime()),
    bindparam("now", type_=UTCDateTime()),
)


async def release_hold(
    connection: AsyncConnection,
    pool: PoolSettings,
    site_id: int,
    session_id: int,
    visitor_id: str,
    now: datetime,
) -> bool:
    """Record that the visitor left: the number stays held for the hold time from now."""
    row = (
        await connection.execute(
            update(_NUMBER)
            .where(
                _NUMBER.held_by_session_id == session_id,
                _NUMBER.pool_id == pool.pool_id,
                _NUMBER.held_by_session_id.in_(_owned_sessions(site_id, [(session_id, visitor_id)])),
            )
            .values(held_until=now + timedelta(seconds=pool.hold_time))
            .returning(_NUMBER.id)
        )
    ).first()
    if row is None:
        return False
    await connection.execute(
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
    connection: AsyncConnection,
    pool: PoolSettings,
    session_ids: list[int],
    now: datetime,
    *conditions: Any,
    reused: bool,
) -> list[LeasedNumber]:
    hold = live_hold_until(pool, now)
    leased: list[LeasedNumber] = []
    waiting = list(session_ids)
    while waiting:
        candidates = (
            await connection.execute(_first_active_numbers(pool, len(waiting), *conditions))
        ).scalars().all()
        if not candidates:
            break
        # The conditions are checked again on the rows the UPDATE writes. On PostgreSQL this
        # transaction holds their locks already. On SQLite the SELECT may run before the write
        # transaction begins, so a row that another process claimed meanwhile is left out here
        # and replaced in the next round.
        rows = (
            await connection.execute(
                update(_NUMBER)
                .where(_NUMBER.id.in_(padded(candidates)), *conditions)
                .values(held_until=hold)
                .returning(_NUMBER.id, _NUMBER.number)
                )
        ).all()
        # The number free the longest goes to the session that came first.
        order = {number_id: index for index, number_id in enumerate(candidates)}
        owners = list(zip(sorted(rows, key=lambda row: order[row.id]), waiting))
        if owners:
            # The rows are this transaction's now. One prepared statement for every batch size,
            # which asyncpg sends for all rows in one go.
            await connection.execute(
                update(_NUMBER.__table__)
                .where(_NUMBER.__table__.c.id == bindparam("number_id"))
                .values(held_by_session_id=bindparam("session_id")),
                [{"number_id": row.id, "session_id": session_id} for row, session_id in owners],
            )
        leased += [LeasedNumber(row.id, row.number, session_id, reused) for row, session_id in owners]
        waiting = waiting[len(owners) :]
        if len(rows) == len(candidates):
            # Nothing was lost to a concurrent claim, so the SELECT found every number it could.
            break
    if leased:
        # One multi-row INSERT, which SQLAlchemy renders when RETURNING is asked for; an ORM
        # insert would process each row in Python.
        await connection.execute(
            insert(_LEASE.__table__).returning(_LEASE.id),
            [
                {
                    "number_id": lease.number_id,
                    "session_id": lease.session_id,
                    "leased_at": now,
                    "last_seen_at": now,
                    "reused": reused,
                }
                for lease in leased
            ],
        )
    return leased


def _first_active_numbers(pool: PoolSettings, limit: int, *conditions: Any) -> Any:
    """Select the pool's active numbers first in claim order, skipping rows that a concurrent
    claim has locked."""
    return (
        select(_NUMBER.id)
        .where(
            _NUMBER.pool_id == pool.pool_id,
            _NUMBER.state == models.NumberState.ACTIVE.value,
            *conditions,
        )
        .order_by(*_CLAIM_ORDER)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


async def _touch_leases(connection: AsyncConnection, pairs: list[tuple[int, int]], now: datetime) -> None:
    # The live leases of these (session, number) pairs: the visitor is back, so not released.
    if not pairs:
        return
    await connection.execute(
        update(_LEASE)
        .where(tuple_(_LEASE.session_id, _LEASE.number_id).in_(padded(pairs)))
        .values(last_seen_at=now, released_at=None)
    )


def _owned_sessions(site_id: int, visitors: list[tuple[int, str]]) -> Any:
    return select(_VISITOR.id).where(*_ownership(site_id, visitors))


def _ownership(site_id: int, visitors: list[tuple[int, str]]) -> tuple[Any, ...]:
    # Heartbeats and leave requests name a session; only its own visitor may act on it.
    # The plain id list lets PostgreSQL read the primary key; the pairs then filter the rows.
    return (
        _VISITOR.id.in_(padded([session_id for session_id, _ in visitors])),
        _VISITOR.site_id == site_id,
        tuple_(_VISITOR.id, _VISITOR.visitor_id).in_(padded(visitors)),
    )
