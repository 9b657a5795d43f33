"""Time the source report and a filtered journal page on PostgreSQL with a million calls.

Creates a throwaway database on the server of PBX_BRIDGE_TEST_POSTGRES_URL (default: the local
test server), fills it with COPY and prints the median of several runs of each query. The goal
is under 300 ms for each. Run: python bench/reports_bench.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import func, select

from models import Call, Company, Source
from pbx_bridge.admin.journal import JournalQuery, filtered, journal_rows
from pbx_bridge.reports import Period, source_report
from pbx_bridge.storage import Database
from pbx_bridge.storage.migrations import upgrade

ADMIN_URL = os.environ.get("PBX_BRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
OUTCOMES = ["answered"] * 6 + ["no-answer", "busy", "abandoned", "failed"]
RUNS = 7


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def fill(url: str, calls: int, vacuum: bool) -> tuple[int, list[int]]:
    database = Database(url)
    async with database.transaction() as session:
        company = Company(name="Bench", timezone="Europe/Moscow")
        session.add(company)
        await session.flush()
        sources = [Source(company_id=company.id, name=f"source {index}") for index in range(20)]
        session.add_all(sources)
        await session.flush()
        company_id, source_ids = company.id, [source.id for source in sources]
    await database.close()

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    random.seed(7)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    span = 365 * 24 * 3600
    batch = []
    for number in range(calls):
        outcome = random.choice(OUTCOMES)
        answered = outcome == "answered"
        batch.append(
            (
                f"bench-{number}", f"+7916{random.randrange(10**7):07d}", "", company_id,
                random.choice(source_ids) if random.random() < 0.9 else None, "static",
                random.random() < 0.4, start + timedelta(seconds=random.randrange(span)),
                random.uniform(1, 40), random.uniform(10, 600) if answered else None, outcome,
                f"PJSIP/manager{random.randrange(8)}" if answered else None, "[]", "[]", start, "",
            )
        )
        if len(batch) == 50_000:
            await _copy(connection, batch)
            batch = []
    if batch:
        await _copy(connection, batch)
    # A table in service is vacuumed by autovacuum, which sets the visibility map that index-only
    # scans rely on. The local test server runs with autovacuum off, so the bench vacuums itself.
    await connection.execute("VACUUM ANALYZE calls" if vacuum else "ANALYZE calls")
    await connection.close()
    return company_id, source_ids


async def _copy(connection: asyncpg.Connection, rows: list[tuple]) -> None:
    columns = [
        "channel_id", "caller_number", "caller_raw", "company_id", "source_id", "attribution", "first_time_caller",
        "started_at", "wait_seconds", "talk_seconds", "outcome", "answered_by", "attempts", "tags", "updated_at", "dialed_raw",
    ]
    await connection.copy_records_to_table("calls", records=rows, columns=columns)


async def timed(label: str, run) -> None:
    durations = []
    for _ in range(RUNS):
        began = time.perf_counter()
        await run()
        durations.append((time.perf_counter() - began) * 1000)
    print(f"{label}: median {statistics.median(durations):.1f} ms, max {max(durations):.1f} ms over {RUNS} runs")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="journal rows to create (default: 1000000)")
    parser.add_argument(
        "--no-vacuum", action="store_true",
        help="only ANALYZE after the COPY, as in a freshly loaded table that autovacuum has not reached",
    )
    args = parser.parse_args()

    name = f"pbx_bridge_bench_{uuid.uuid4().hex[:8]}"
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        await upgrade(url)
        began = time.perf_counter()
        company_id, source_ids = await fill(url, args.calls, vacuum=not args.no_vacuum)
        print(f"filled {args.calls} calls in {time.perf_counter() - began:.0f} s")

        database = Database(url)
        month = Period(date(2025, 6, 1), date(2025, 6, 30), ZoneInfo("Europe/Moscow"))
        year = Period(date(2025, 1, 1), date(2025, 12, 31), ZoneInfo("Europe/Moscow"))

        async def report(period: Period) -> None:
            async with database.transaction() as session:
                await source_report(session, company_id, period)

        query = JournalQuery(
            company_id=company_id, start=month.start, end=month.end, source_ids=[source_ids[3]],
            tracking_number_ids=[], outcomes=["answered"], attributions=[], caller=None, answered_by=None,
            first_time=None, sort="-started_at", page=3, page_size=50,
        )

        async def journal_page() -> None:
            async with database.transaction() as session:
                statement = journal_rows(query).limit(query.page_size).offset((query.page - 1) * query.page_size)
                (await session.execute(statement)).all()
                await session.scalar(filtered(select(func.count()).select_from(Call), query))

        await timed("source report, one month", lambda: report(month))
        await timed("source report, whole year", lambda: report(year))
        await timed("journal page 3 (month, one source, answered) with total", journal_page)
        await database.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
