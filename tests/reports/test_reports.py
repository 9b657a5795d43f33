"""Every report figure against a journal built with known answers.

The company is in Moscow (UTC+3, no daylight saving time) and the period is 1-2 March 2026 of
Moscow time, i.e. 2026-02-28 21:00 to 2026-03-02 21:00 UTC. Calls just outside those bounds
check that the period follows the company's clock and not UTC.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from models import (
    Call,
    Company,
    NumberLease,
    NumberPool,
    PoolExhaustion,
    Site,
    Source,
    SourceSpend,
    TrackingNumber,
    VisitorSession,
)
from pbx_bridge.reports import (
    Period,
    calls_by_day,
    calls_by_hour,
    destination_report,
    pool_report,
    source_report,
)
from pbx_bridge.storage import Database

MOSCOW = ZoneInfo("Europe/Moscow")
PERIOD = Period(date(2026, 3, 1), date(2026, 3, 2), MOSCOW)


def utc(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


def call(number: int, **values) -> Call:
    values.setdefault("attribution", "static")
    values.setdefault("caller_raw", values.get("caller_number") or "anonymous")
    return Call(channel_id=f"call-{number}", **values)


async def build_journal(database: Database) -> dict[str, int]:
    async with database.transaction() as session:
        company = Company(name="Окна", timezone="Europe/Moscow")
        session.add(company)
        await session.flush()
        source_a = Source(company_id=company.id, name="A Директ")
        source_b = Source(company_id=company.id, name="B Билборд")
        session.add_all([source_a, source_b])
        await session.flush()
        # 3100 over the 31 days of March is 100 a day, so 200.00 falls into two days.
        session.add(SourceSpend(source_id=source_a.id, period_start=date(2026, 3, 1), period_end=date(2026, 3, 31), amount=Decimal("3100")))
        company_id, a, b = company.id, source_a.id, source_b.id
        session.add_all(
            [
                call(1, company_id=company_id, source_id=a, caller_number="+79160000001", first_time_caller=True,
                     outcome="answered", wait_seconds=10, talk_seconds=100, started_at=utc(28, 21, 30, month=2),
                     answered_by="PJSIP/anna", attempts=[{"endpoint": "PJSIP/anna", "status": "answered"}]),
                call(2, company_id=company_id, source_id=a, caller_number="+79160000001", first_time_caller=False,
                     outcome="answered", wait_seconds=20, talk_seconds=50, started_at=utc(1, 9),
                     answered_by="PJSIP/boris",
                     attempts=[{"endpoint": "PJSIP/anna", "status": "no-answer"}, {"endpoint": "PJSIP/boris", "status": "answered"}]),
                call(3, company_id=company_id, source_id=a, caller_number="+79160000002", first_time_caller=True,
                     outcome="no-answer", wait_seconds=30, started_at=utc(2, 20, 59),
                     attempts=[{"endpoint": "PJSIP/anna", "status": "no-answer"}, {"endpoint": "PJSIP/boris", "status": "no-answer"}]),
                call(4, company_id=company_id, source_id=a, caller_number=None, caller_raw="anonymous",
                     outcome="abandoned", wait_seconds=5, started_at=utc(2, 10)),
                call(5, company_id=company_id, source_id=b, caller_number="+79160000003", first_time_caller=True,
                     outcome="answered", wait_seconds=4, talk_seconds=40, started_at=utc(2, 6),
                     answered_by="PJSIP/anna", attempts=[{"endpoint": "PJSIP/anna", "status": "answered"}]),
                call(6, company_id=company_id, caller_number="+79160000004", attribution="unknown-number",
                     outcome="busy", wait_seconds=2, started_at=utc(1, 12)),
                # Outside the period: 3 March 00:00 and 28 February 23:59 in Moscow.
                call(7, company_id=company_id, source_id=a, caller_number="+79160000005", outcome="answered",
                     wait_seconds=1, talk_seconds=1, started_at=utc(2, 21)),
                call(8, company_id=company_id, source_id=a, caller_number="+79160000006", outcome="answered",
                     wait_seconds=1, talk_seconds=1, started_at=utc(28, 20, 59, month=2)),
            ]
        )
        return {"company": company_id, "a": a, "b": b}


@pytest.fixture
async def journal(database: Database) -> dict[str, int]:
    return await build_journal(database)


async def _sources(database: Database, company_id: int) -> dict:
    async with database.transaction() as session:
        rows = await source_report(session, company_id, PERIOD)
    return {row.source_name: row for row in rows}


async def test_source_rows_ordered_by_calls(database: Database, journal: dict) -> None:
    async with database.transaction() as session:
        rows = await source_report(session, journal["company"], PERIOD)
    assert [row.source_name for row in rows] == ["A Директ", "B Билборд", None]


async def test_source_counts(database: Database, journal: dict) -> None:
    row = (await _sources(database, journal["company"]))["A Директ"]
    assert row.calls == 4
    assert row.unique_callers == 2
    assert row.first_time_callers == 2
    assert row.answered == 2
    assert row.missed == 2


async def test_source_shares_and_durations(database: Database, journal: dict) -> None:
    row = (await _sources(database, journal["company"]))["A Директ"]
    assert row.answered_share == 0.5
    assert row.missed_share == 0.5
    assert row.average_wait_seconds == 16.25
    assert row.average_talk_seconds == 75.0


async def test_source_spend_prorated_to_period(database: Database, journal: dict) -> None:
    row = (await _sources(database, journal["company"]))["A Директ"]
    assert row.spend == Decimal("200.00")
    assert row.cost_per_call == Decimal("50.00")
    assert row.cost_per_first_time_caller == Decimal("100.00")


async def test_source_without_spend_has_no_cost(database: Database, journal: dict) -> None:
    row = (await _sources(database, journal["company"]))["B Билборд"]
    assert (row.calls, row.unique_callers, row.first_time_callers, row.answered, row.missed) == (1, 1, 1, 1, 0)
    assert row.answered_share == 1.0
    assert row.average_wait_seconds == 4.0
    assert row.average_talk_seconds == 40.0
    assert row.spend is None
    assert row.cost_per_call is None


async def test_calls_without_source_in_own_row(database: Database, journal: dict) -> None:
    row = (await _sources(database, journal["company"]))[None]
    assert (row.calls, row.unique_callers, row.answered, row.missed) == (1, 1, 0, 1)
    assert row.average_talk_seconds is None


async def test_source_with_no_calls_is_listed(database: Database, journal: dict) -> None:
    async with database.transaction() as session:
        session.add(Source(company_id=journal["company"], name="C Радио"))
    row = (await _sources(database, journal["company"]))["C Радио"]
    assert row.calls == 0
    assert row.answered_share is None


async def test_calls_by_day_in_company_zone(database: Database, journal: dict) -> None:
    async with database.transaction() as session:
        rows = await calls_by_day(session, journal["company"], PERIOD)
    assert [(row.day, row.calls, row.answered, row.missed) for row in rows] == [
        (date(2026, 3, 1), 3, 2, 1),
        (date(2026, 3, 2), 3, 1, 2),
    ]


async def test_calls_by_hour_in_company_zone(database: Database, journal: dict) -> None:
    async with database.transaction() as session:
        rows = await calls_by_hour(session, journal["company"], PERIOD)
    busy_hours = {row.hour: (row.calls, row.answered, row.missed) for row in rows if row.calls}
    assert len(rows) == 24
    assert busy_hours == {0: (1, 1, 0), 9: (1, 1, 0), 12: (1, 1, 0), 13: (1, 0, 1), 15: (1, 0, 1), 23: (1, 0, 1)}


async def test_destination_report(database: Database, journal: dict) -> None:
    async with database.transaction() as session:
        rows = await destination_report(session, journal["company"], PERIOD)
    assert [(row.destination, row.answered, row.missed, row.talk_seconds) for row in rows] == [
        ("PJSIP/anna", 2, 2, 140.0),
        ("PJSIP/boris", 1, 1, 50.0),
    ]


async def build_pool(database: Database) -> int:
    async with database.transaction() as session:
        company = Company(name="Пулы", timezone="Europe/Moscow")
        session.add(company)
        await session.flush()
        site = Site(company_id=company.id, name="site", site_key="pool-site-key")
        session.add(site)
        await session.flush()
        pool = NumberPool(site_id=site.id, name="main", hold_time=600)
        session.add(pool)
        await session.flush()
        first = TrackingNumber(number="+74950000001", company_id=company.id, mode="pool", pool_id=pool.id)
        second = TrackingNumber(number="+74950000002", company_id=company.id, mode="pool", pool_id=pool.id)
        visit = VisitorSession(site_id=site.id, visitor_id="v")
        session.add_all([first, second, visit])
        await session.flush()
        session.add_all(
            [
                # Held 00:00-01:00 UTC on 1 March: 50 minutes seen plus 10 of hold time.
                NumberLease(number_id=first.id, session_id=visit.id, leased_at=utc(1, 0), last_seen_at=utc(1, 0, 50)),
                # Held until exactly the period's start: no overlap.
                NumberLease(number_id=first.id, session_id=visit.id, leased_at=utc(28, 20, month=2),
                            last_seen_at=utc(28, 20, 50, month=2), released_at=utc(28, 20, 50, month=2)),
                # Held 20:30-21:30 UTC on 2 March; the period ends at 21:00, so 30 minutes count.
                NumberLease(number_id=second.id, session_id=visit.id, leased_at=utc(2, 20, 30),
                            last_seen_at=utc(2, 21, 20), released_at=utc(2, 21, 20)),
                PoolExhaustion(pool_id=pool.id, occurred_at=utc(1, 10), policy="default-number"),
                PoolExhaustion(pool_id=pool.id, occurred_at=utc(3, 10), policy="default-number"),
                call(20, company_id=company.id, tracking_number_id=first.id, attribution="pool-ambiguous",
                     outcome="answered", started_at=utc(1, 0, 30)),
                call(21, company_id=company.id, tracking_number_id=second.id, attribution="pool",
                     outcome="answered", started_at=utc(2, 20, 40)),
            ]
        )
        return company.id


async def test_pool_utilisation_and_exhaustion(database: Database) -> None:
    company_id = await build_pool(database)
    async with database.transaction() as session:
        rows = await pool_report(session, company_id, PERIOD, now=utc(10, 0))
    assert len(rows) == 1
    row = rows[0]
    assert (row.pool_name, row.numbers, row.leases) == ("main", 2, 2)
    # 5400 seconds held out of 2 numbers x 48 hours.
    assert row.utilisation == round(5400 / (2 * 48 * 3600), 4)
    assert row.exhaustions == 1
    assert (row.calls, row.ambiguous_calls) == (2, 1)


async def test_pool_utilisation_stops_at_now(database: Database) -> None:
    company_id = await build_pool(database)
    async with database.transaction() as session:
        rows = await pool_report(session, company_id, PERIOD, now=utc(1, 0, 30))
    # 3.5 hours of the period have passed; the first number was held for the last 30 minutes.
    assert rows[0].utilisation == round(1800 / (2 * 3.5 * 3600), 4)
