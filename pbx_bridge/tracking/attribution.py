"""Attribution of a call on a pool number to the visitor session whose lease covered its start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import models


@dataclass(frozen=True)
class AttributionResult:
    kind: models.Attribution
    source_id: int | None
    session_id: int | None


@dataclass(frozen=True)
class _CoveringLease:
    session_id: int
    visitor_id: str
    source_id: int | None
    leased_at: datetime
    last_active_at: datetime


async def attribute_pool_call(
    session: AsyncSession, number: models.TrackingNumber, at: datetime
) -> AttributionResult:
    """Find the session whose lease of `number` covered the call start `at` (aware UTC).

    A lease covers from `leased_at` to its last sign of life (`last_seen_at`, or `released_at`
    when the visitor left later) plus the pool's hold time. When leases of several visitors cover
    `at`, which happens after an exhausted pool reused the number, the most recently active one
    wins and the call is `pool-ambiguous`. With no covering lease the call is `pool-unmatched` and
    gets the site's default source.
    """
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r} given where UTC is required")

    pool_row = (
        await session.execute(
            select(models.NumberPool.hold_time, models.Site.default_source_id)
            .join(models.Site, models.Site.id == models.NumberPool.site_id)
            .where(models.NumberPool.id == number.pool_id)
        )
    ).one_or_none()
    if pool_row is None:
        return AttributionResult(models.Attribution.POOL_UNMATCHED, None, None)
    hold_time, default_source_id = pool_row

    leases = await _covering_leases(session, number.id, at, timedelta(seconds=hold_time))
    if not leases:
        return AttributionResult(models.Attribution.POOL_UNMATCHED, default_source_id, None)

    # Activity after the call start tells nothing about who called, so it counts as `at`.
    # Among leases still active at `at`, the newer lease wins.
    winner = max(
        leases, key=lambda lease: (min(lease.last_active_at, at), lease.leased_at, lease.session_id)
    )
    visitors = {lease.visitor_id for lease in leases}
    # Two leases of one visitor (a returning visitor given the number again) are no ambiguity.
    kind = models.Attribution.POOL if len(visitors) == 1 else models.Attribution.POOL_AMBIGUOUS
    return AttributionResult(kind, winner.source_id, winner.session_id)


async def _covering_leases(
    session: AsyncSession, number_id: int, at: datetime, hold: timedelta
) -> list[_CoveringLease]:
    lease = models.NumberLease
    visitor = models.VisitorSession
    # A lease still covers `at` when its last sign of life is no earlier than `at - hold`.
    active_since = at - hold
    rows = await session.execute(
        select(
            lease.session_id,
            lease.leased_at,
            lease.last_seen_at,
            lease.released_at,
            visitor.visitor_id,
            visitor.source_id,
        )
        .join(visitor, visitor.id == lease.session_id)
        .where(
            and_(
                lease.number_id == number_id,
                lease.leased_at <= at,
                or_(lease.last_seen_at >= active_since, lease.released_at >= active_since),
            )
        )
    )
    return [
        _CoveringLease(
            session_id=session_id,
            visitor_id=visitor_id,
            source_id=source_id,
            leased_at=leased_at,
            last_active_at=max(last_seen, released or last_seen),
        )
        for session_id, leased_at, last_seen, released, visitor_id, source_id in rows
    ]
