"""Pool sizing: peak concurrency of held numbers, exhaustions, and the size that avoids them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from aiohttp import web
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

import models


@dataclass(frozen=True)
class PoolAdvice:
    pool_id: int
    pool_name: str
    period_start: datetime
    period_end: datetime
    hold_time: int
    pool_size: int
    leases: int
    # Peak number of pool numbers held at one moment.
    peak_held: int
    exhaustions: int
    # Peak demand: leases plus the visitors who found the pool exhausted, each counted as
    # holding a number for at least the hold time.
    peak_demand: int
    recommended_size: int

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["period_start"] = self.period_start.isoformat()
        data["period_end"] = self.period_end.isoformat()
        return data


class PoolNotFound(LookupError):
    pass


async def advise_pool(
    session: AsyncSession, pool_ref: str | int, start: datetime, end: datetime
) -> PoolAdvice:
    """Replay the lease history of a pool over [start, end) and size the pool from its peak.

    A lease holds its number from `leased_at` to its last sign of life plus the hold time, and
    a live lease for one heartbeat interval more, as leasing does. A visitor who found the pool
    exhausted and got no lease counts as holding a number for the hold time only, so the
    recommended size is a lower bound when such visitors stayed long.
    """
    pool = await _find_pool(session, pool_ref)
    hold = timedelta(seconds=pool.hold_time)
    grace = timedelta(seconds=pool.heartbeat_interval)

    pool_size = (
        await session.execute(
            select(func.count()).where(
                models.TrackingNumber.pool_id == pool.id,
                models.TrackingNumber.state == models.NumberState.ACTIVE.value,
            )
        )
    ).scalar_one()

    lease = models.NumberLease
    lease_rows = (
        await session.execute(
            select(lease.leased_at, lease.last_seen_at, lease.released_at, lease.session_id)
            .join(models.TrackingNumber, models.TrackingNumber.id == lease.number_id)
            .where(
                models.TrackingNumber.pool_id == pool.id,
                lease.leased_at < end,
                or_(lease.last_seen_at >= start - hold - grace, lease.released_at >= start - hold),
            )
        )
    ).all()
    held: list[tuple[datetime, datetime]] = []
    leased_sessions: set[int] = set()
    for leased_at, last_seen, released, session_id in lease_rows:
        until = released + hold if released is not None else last_seen + hold + grace
        held.append((leased_at, until))
        leased_sessions.add(session_id)

    exhaustion_rows = (
        await session.execute(
            select(models.PoolExhaustion.occurred_at, models.PoolExhaustion.session_id).where(
                models.PoolExhaustion.pool_id == pool.id,
                models.PoolExhaustion.occurred_at >= start,
                models.PoolExhaustion.occurred_at < end,
            )
        )
    ).all()
    unserved = [
        (occurred_at, occurred_at + hold)
        for occurred_at, session_id in exhaustion_rows
        if session_id not in leased_sessions
    ]

    peak_held = _peak_overlap(held, start, end)
    peak_demand = _peak_overlap(held + unserved, start, end)
    return PoolAdvice(
        pool_id=pool.id,
        pool_name=pool.name,
        period_start=start,
        period_end=end,
        hold_time=pool.hold_time,
        pool_size=pool_size,
        leases=len(held),
        peak_held=peak_held,
        exhaustions=len(exhaustion_rows),
        peak_demand=peak_demand,
        recommended_size=max(peak_demand, 1),
    )


def default_period(now: datetime, days: int = 7) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now


def parse_time(text: str) -> datetime:
    """Read an ISO 8601 date or time; a value without a zone is UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


async def pool_advice_handler(request: web.Request) -> web.Response:
    """GET /api/v1/pools/{pool_id}/advice?from=&to= for administrators."""
    from pbx_bridge.admin.auth import require_admin
    from pbx_bridge.admin.errors import ApiError, FieldError, not_found, validation_failed
    from pbx_bridge.http.app import CONTEXT

    require_admin(request)
    from pbx_bridge.admin.params import path_id

    pool_id = path_id(request, "pool", "pool_id")

    now = models.utcnow()
    start, end = default_period(now)
    errors: list[FieldError] = []
    try:
        if "from" in request.query:
            start = parse_time(request.query["from"])
        if "to" in request.query:
            end = parse_time(request.query["to"])
    except (ValueError, OverflowError):
        # OverflowError: a time such as 9999-12-31T23:00-05:00 is beyond datetime.max in UTC.
        errors.append(FieldError("from" if "from" in request.query else "to", "invalid_datetime"))
    if not errors and end <= start:
        errors.append(FieldError("to", "invalid_datetime"))
    if errors:
        raise validation_failed(errors)

    async with request.app[CONTEXT].database.sessions() as session:
        try:
            advice = await advise_pool(session, pool_id, start, end)
        except PoolNotFound:
            raise not_found("pool") from None
        except OverflowError:
            raise ApiError(422, "validation_failed") from None
    return web.json_response(advice.as_json())


async def _find_pool(session: AsyncSession, pool_ref: str | int) -> models.NumberPool:
    if isinstance(pool_ref, int) or pool_ref.isdigit():
        pool = await session.get(models.NumberPool, int(pool_ref))
        if pool is None:
            raise PoolNotFound(f"no number pool has the id {pool_ref}")
        return pool
    pools = (
        await session.execute(select(models.NumberPool).where(models.NumberPool.name == pool_ref))
    ).scalars().all()
    if not pools:
        raise PoolNotFound(f"no number pool is named {pool_ref!r}")
    if len(pools) > 1:
        ids = ", ".join(str(pool.id) for pool in pools)
        raise PoolNotFound(f"several pools are named {pool_ref!r} (ids {ids}); pass the id")
    return pools[0]


def _peak_overlap(intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> int:
    events: list[tuple[datetime, int]] = []
    for begin, finish in intervals:
        begin, finish = max(begin, start), min(finish, end)
        if begin < finish:
            events.append((begin, 1))
            events.append((finish, -1))
    # At equal times the end comes first: a number freed at t can be leased again at t.
    events.sort(key=lambda event: (event[0], event[1]))
    peak = current = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak
