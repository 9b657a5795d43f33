"""Report figures computed in the database where the volume is, for SQLite and PostgreSQL.

A period is a range of whole days in the company's time zone. A call belongs to the day and hour
that the company's wall clock showed when the call started.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, case, distinct, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from models import (
    Attribution,
    Call,
    NumberLease,
    NumberMode,
    NumberPool,
    Outcome,
    PoolExhaustion,
    Site,
    Source,
    SourceSpend,
    TrackingNumber,
    utcnow,
)

MISSED_OUTCOMES = (Outcome.BUSY.value, Outcome.NO_ANSWER.value, Outcome.ABANDONED.value, Outcome.FAILED.value)


@dataclass(frozen=True)
class Period:
    """Whole days `first`..`last` (both included) in time zone `zone`."""

    first: date
    last: date
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), self.zone).astimezone(timezone.utc)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), self.zone).astimezone(timezone.utc)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


@dataclass(frozen=True)
class SourceRow:
    source_id: int | None
    source_name: str | None
    calls: int
    unique_callers: int
    first_time_callers: int
    answered: int
    missed: int
    answered_share: float | None
    missed_share: float | None
    average_wait_seconds: float | None
    average_talk_seconds: float | None
    spend: Decimal | None
    cost_per_call: Decimal | None
    cost_per_first_time_caller: Decimal | None


@dataclass(frozen=True)
class DayRow:
    day: date
    calls: int
    answered: int
    missed: int


@dataclass(frozen=True)
class HourRow:
    hour: int
    calls: int
    answered: int
    missed: int


@dataclass(frozen=True)
class DestinationRow:
    destination: str
    answered: int
    missed: int
    talk_seconds: float


@dataclass(frozen=True)
class PoolRow:
    pool_id: int
    pool_name: str
    site_id: int
    numbers: int
    leases: int
    utilisation: float | None
    exhaustions: int
    calls: int
    ambiguous_calls: int


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _money_per(spend: Decimal | None, count: int) -> Decimal | None:
    if spend is None or not count:
        return None
    return (spend / count).quantize(Decimal("0.01"))


def _in_period(company_id: int, period: Period):
    return (Call.company_id == company_id, Call.started_at >= period.start, Call.started_at < period.end)


async def source_report(session: AsyncSession, company_id: int, period: Period) -> list[SourceRow]:
    """Per source: calls, callers, outcomes, durations and cost; calls without a source come in
    one row with source_id None. Sources with no calls are listed too, so spend shows up.

    Unique callers count distinct E.164 caller numbers, so anonymous callers are not counted.
    Shares are of all calls, including calls still in progress. Average talk time is over
    answered calls.
    """
    await _use_custom_plans(session)
    figures = await _source_figures(session, company_id, period)
    sources = (await session.execute(select(Source.id, Source.name).where(Source.company_id == company_id))).all()
    spend = await _spend_by_source(session, company_id, period)

    rows: list[SourceRow] = []
    for source_id, name in sorted(sources, key=lambda item: item[1]):
        rows.append(_source_row(source_id, name, figures.pop(source_id, None), spend.get(source_id)))
    if None in figures:
        rows.append(_source_row(None, None, figures.pop(None), None))
    rows.sort(key=lambda row: (-row.calls, row.source_name or "\uffff"))
    return rows


async def _use_custom_plans(session: AsyncSession) -> None:
    """Make PostgreSQL plan each statement for its own period until the transaction ends.

    asyncpg prepares every statement, and after five runs of a prepared statement PostgreSQL
    may switch to a generic plan that ignores the period bounds (PostgreSQL docs, PREPARE). On
    the million-call bench that turned a 0.5 s whole-year report into 1.5 s.
    """
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


async def _source_figures(session: AsyncSession, company_id: int, period: Period) -> dict[int | None, tuple]:
    """Map each source id with calls in the period to (calls, unique callers, first-time callers,
    answered, missed, average wait, average talk).

    The distinct caller count is a subquery of its own, joined to the sums by source. In one
    GROUP BY with the sums, PostgreSQL sorts every row of the period by source first. Apart, the
    sums need no sort and can run as a parallel hash aggregate, and the count can read callers
    in order from the index on (company_id, source_id, caller_number, started_at).
    """
    answered = func.sum(case((Call.outcome == Outcome.ANSWERED.value, 1), else_=0))
    missed = func.sum(case((Call.outcome.in_(MISSED_OUTCOMES), 1), else_=0))
    first_time = func.sum(case((Call.first_time_caller.is_(True), 1), else_=0))
    average_talk = func.avg(case((Call.outcome == Outcome.ANSWERED.value, Call.talk_seconds), else_=None))
    sums = (
        select(
            Call.source_id,
            func.count().label("calls"),
            first_time.label("first_time"),
            answered.label("answered"),
            missed.label("missed"),
            func.avg(Call.wait_seconds).label("average_wait"),
            average_talk.label("average_talk"),
        )
        .where(*_in_period(company_id, period))
        .group_by(Call.source_id)
        .subquery()
    )
    callers = (
        select(Call.source_id, func.count(distinct(Call.caller_number)).label("unique_callers"))
        .where(*_in_period(company_id, period))
        .group_by(Call.source_id)
        .subquery()
    )
    statement = select(
        sums.c.source_id,
        sums.c.calls,
        callers.c.unique_callers,
        sums.c.first_time,
        sums.c.answered,
        sums.c.missed,
        sums.c.average_wait,
        sums.c.average_talk,
    ).join_from(sums, callers, sums.c.source_id.is_not_distinct_from(callers.c.source_id))
    return {row[0]: row[1:] for row in (await session.execute(statement)).all()}


def _source_row(source_id: int | None, name: str | None, figures: tuple | None, spend: Decimal | None) -> SourceRow:
    calls, unique, first_time, answered, missed, wait, talk = figures or (0, 0, 0, 0, 0, None, None)
    first_time, answered, missed = int(first_time or 0), int(answered or 0), int(missed or 0)
    return SourceRow(
        source_id=source_id,
        source_name=name,
        calls=calls,
        unique_callers=unique,
        first_time_callers=first_time,
        answered=answered,
        missed=missed,
        answered_share=_share(answered, calls),
        missed_share=_share(missed, calls),
        average_wait_seconds=round(float(wait), 2) if wait is not None else None,
        average_talk_seconds=round(float(talk), 2) if talk is not None else None,
        spend=spend,
        cost_per_call=_money_per(spend, calls),
        cost_per_first_time_caller=_money_per(spend, first_time),
    )


async def _spend_by_source(session: AsyncSession, company_id: int, period: Period) -> dict[int, Decimal]:
    """Spend that falls into the period: each spend entry counts in proportion to the days of
    its own period that overlap the report's days."""
    statement = (
        select(SourceSpend)
        .join(Source, Source.id == SourceSpend.source_id)
        .where(
            Source.company_id == company_id,
            SourceSpend.period_start <= period.last,
            SourceSpend.period_end >= period.first,
        )
    )
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for spend in (await session.scalars(statement)).all():
        overlap_first = max(spend.period_start, period.first)
        overlap_last = min(spend.period_end, period.last)
        overlap_days = (overlap_last - overlap_first).days + 1
        spend_days = (spend.period_end - spend.period_start).days + 1
        totals[spend.source_id] += Decimal(spend.amount) * overlap_days / spend_days
    return {source_id: amount.quantize(Decimal("0.01")) for source_id, amount in totals.items()}


async def _local_buckets(session: AsyncSession, company_id: int, period: Period, unit: str) -> dict:
    """Count calls, answered and missed per local day ("day") or hour of day ("hour").

    PostgreSQL converts to the zone itself. SQLite has no time zone data, so its start times
    are bucketed here in Python, which is fine at the embedded database's scale.
    """
    answered = case((Call.outcome == Outcome.ANSWERED.value, 1), else_=0)
    missed = case((Call.outcome.in_(MISSED_OUTCOMES), 1), else_=0)
    counts: dict = defaultdict(lambda: [0, 0, 0])
    if session.bind.dialect.name == "postgresql":
        local = func.timezone(period.zone.key, Call.started_at)
        bucket = func.date(local) if unit == "day" else func.cast(func.extract("hour", local), Integer)
        statement = (
            select(bucket, func.count(), func.sum(answered), func.sum(missed))
            .where(*_in_period(company_id, period))
            .group_by(bucket)
        )
        for key, calls, answered_count, missed_count in (await session.execute(statement)).all():
            counts[key] = [calls, int(answered_count or 0), int(missed_count or 0)]
        return counts

    statement = select(Call.started_at, answered, missed).where(*_in_period(company_id, period))
    for started_at, answered_flag, missed_flag in (await session.execute(statement)).all():
        local_time = started_at.astimezone(period.zone)
        key = local_time.date() if unit == "day" else local_time.hour
        entry = counts[key]
        entry[0] += 1
        entry[1] += answered_flag
        entry[2] += missed_flag
    return counts


async def calls_by_day(session: AsyncSession, company_id: int, period: Period) -> list[DayRow]:
    """Count calls per day of the period in order, days without calls included."""
    counts = await _local_buckets(session, company_id, period, "day")
    days = [period.first + timedelta(days=offset) for offset in range(period.days)]
    return [DayRow(day, *counts.get(day, (0, 0, 0))) for day in days]


async def calls_by_hour(session: AsyncSession, company_id: int, period: Period) -> list[HourRow]:
    """Count calls per hour 0..23 of the company's wall clock, summed over the period."""
    counts = await _local_buckets(session, company_id, period, "hour")
    return [HourRow(hour, *counts.get(hour, (0, 0, 0))) for hour in range(24)]


async def destination_report(session: AsyncSession, company_id: int, period: Period) -> list[DestinationRow]:
    """Per destination (a manager's line): calls it answered, calls it rang for and did not
    answer (from the call's attempts), and its total talk time in seconds."""
    answered: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    talk: dict[str, float] = defaultdict(float)
    statement = (
        select(Call.answered_by, Call.outcome, Call.talk_seconds, Call.attempts)
        .where(*_in_period(company_id, period))
        .execution_options(yield_per=5000)
    )
    async for answered_by, outcome, talk_seconds, attempts in await session.stream(statement):
        if outcome == Outcome.ANSWERED.value and answered_by:
            answered[answered_by] += 1
            talk[answered_by] += talk_seconds or 0.0
        rang = {attempt.get("endpoint") for attempt in attempts or [] if isinstance(attempt, dict)}
        for endpoint in rang - {answered_by, None}:
            missed[endpoint] += 1
    names = sorted(set(answered) | set(missed), key=lambda name: (-answered[name], name))
    return [DestinationRow(name, answered[name], missed[name], round(talk[name], 2)) for name in names]


async def pool_report(session: AsyncSession, company_id: int, period: Period, now: datetime | None = None) -> list[PoolRow]:
    """Per pool: numbers, leases, utilisation and exhaustions over the period.

    Utilisation is the share of number-time held by leases: a lease holds its number from
    leased_at until released_at (or last_seen_at when not released) plus the pool's hold time,
    clipped to the period and to `now`. Overlapping leases of one reused number count twice,
    so an exhausted pool on the reuse policy can exceed 1.0.
    """
    now = now or utcnow()
    pools = (
        await session.execute(
            select(NumberPool).join(Site, Site.id == NumberPool.site_id).where(Site.company_id == company_id).order_by(NumberPool.name)
        )
    ).scalars().all()
    period_end = min(period.end, now)
    rows = []
    for pool in pools:
        number_ids = (
            await session.scalars(
                select(TrackingNumber.id).where(TrackingNumber.pool_id == pool.id, TrackingNumber.mode == NumberMode.POOL.value)
            )
        ).all()
        rows.append(await _pool_row(session, pool, list(number_ids), period, period_end))
    return rows


async def _pool_row(session: AsyncSession, pool: NumberPool, number_ids: list[int], period: Period, period_end: datetime) -> PoolRow:
    hold = timedelta(seconds=pool.hold_time)
    leases = (
        await session.execute(
            select(NumberLease.leased_at, NumberLease.last_seen_at, NumberLease.released_at).where(
                NumberLease.number_id.in_(number_ids),
                NumberLease.leased_at < period_end,
                NumberLease.last_seen_at >= period.start - hold,
            )
        )
    ).all()
    held_seconds = 0.0
    counted = 0
    for leased_at, last_seen_at, released_at in leases:
        held_until = (released_at or last_seen_at) + hold
        overlap = (min(held_until, period_end) - max(leased_at, period.start)).total_seconds()
        if overlap > 0:
            held_seconds += overlap
            counted += 1
    capacity = len(number_ids) * max((period_end - period.start).total_seconds(), 0)

    exhaustions = await session.scalar(
        select(func.count()).select_from(PoolExhaustion).where(
            PoolExhaustion.pool_id == pool.id,
            PoolExhaustion.occurred_at >= period.start,
            PoolExhaustion.occurred_at < period.end,
        )
    )
    call_figures = (
        await session.execute(
            select(
                func.count(),
                func.sum(case((Call.attribution == Attribution.POOL_AMBIGUOUS.value, 1), else_=0)),
            ).where(Call.tracking_number_id.in_(number_ids), Call.started_at >= period.start, Call.started_at < period.end)
        )
    ).one()
    return PoolRow(
        pool_id=pool.id,
        pool_name=pool.name,
        site_id=pool.site_id,
        numbers=len(number_ids),
        leases=counted,
        utilisation=round(held_seconds / capacity, 4) if capacity else None,
        exhaustions=exhaustions or 0,
        calls=call_figures[0],
        ambiguous_calls=int(call_figures[1] or 0),
    )
