"""Attribution accuracy of a simulated day of website visitors and calls, against pool size.

Visitors arrive over a day (busier in the afternoon), stay on the page for an exponentially
distributed time (mean 4 minutes), heartbeat every 30 s while there, leave, and one in five
calls within the hold time after arriving. Every event goes through the real TrackingService and
attribute_pool_call on a fresh database, in time order. A call counts as correct when it is
attributed to the session that made it. A caller who was shown the default number because the
pool was exhausted counts as lost.

The peak demand is measured first with an oversized pool, then the day is replayed with pools
from half to 1.2 times that peak. Usage: python bench/tracking_accuracy.py [--visitors 1500]
[--postgres-admin-url URL] (default: SQLite files in a temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import random
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

import models  # noqa: E402
from pbx_bridge.storage import Database  # noqa: E402
from pbx_bridge.storage.migrations import upgrade  # noqa: E402
from pbx_bridge.tracking.attribution import attribute_pool_call  # noqa: E402
from pbx_bridge.tracking.sessions import NumberKind, TrackingService  # noqa: E402
from pbx_bridge.tracking.sites import SiteDirectory  # noqa: E402
from pbx_bridge.tracking.sizing import advise_pool  # noqa: E402
from pbx_bridge.tracking.visitor import read_start_request  # noqa: E402

DAY = datetime(2026, 12, 1, tzinfo=timezone.utc)
HOLD_TIME = 600
HEARTBEAT = 30
CALL_SHARE = 0.2
CREATED_DATABASES: list[str] = []


@dataclass
class Visitor:
    index: int
    arrives: datetime
    stays: timedelta
    calls_at: datetime | None


def simulate_visitors(count: int, seed: int) -> list[Visitor]:
    generator = random.Random(seed)
    visitors = []
    for index in range(count):
        # Arrival hour drawn from a bell around 15:00 UTC, clipped to the day.
        hour = min(23.99, max(0.0, generator.gauss(15, 3.5)))
        arrives = DAY + timedelta(hours=hour)
        stays = timedelta(seconds=generator.expovariate(1 / 240))
        calls_at = None
        if generator.random() < CALL_SHARE:
            window = stays.total_seconds() + HOLD_TIME - 1
            calls_at = arrives + timedelta(seconds=generator.uniform(1, window))
        visitors.append(Visitor(index, arrives, stays, calls_at))
    return visitors


async def seed_site(database: Database, pool_size: int) -> None:
    async with database.transaction() as session:
        company = models.Company(name="Accuracy")
        session.add(company)
        await session.flush()
        source = models.Source(company_id=company.id, name="Google", kind="online", dynamic=True, match_utm_source="google")
        session.add(source)
        await session.flush()
        site = models.Site(company_id=company.id, name="site", site_key="accuracy", allowed_origins=["https://a.example"])
        session.add(site)
        await session.flush()
        pool = models.NumberPool(site_id=site.id, name="main", hold_time=HOLD_TIME, heartbeat_interval=HEARTBEAT)
        default = models.TrackingNumber(number="+74990000000", company_id=company.id)
        session.add_all([pool, default])
        await session.flush()
        site.default_number_id = default.id
        for index in range(pool_size):
            session.add(models.TrackingNumber(number=f"+7495{index:07d}", company_id=company.id, mode="pool", pool_id=pool.id))


async def run_day(url: str, visitors: list[Visitor], pool_size: int) -> dict[str, float]:
    await upgrade(url)
    database = Database(url)
    try:
        await seed_site(database, pool_size)
        service = TrackingService(database, SiteDirectory(database, ttl=3600))
        site = await service.sites.get("accuracy")

        # (time, order, kind, visitor index): starts before heartbeats before calls at one instant.
        events: list[tuple[datetime, int, str, int]] = []
        for visitor in visitors:
            events.append((visitor.arrives, 0, "start", visitor.index))
            beats = int(visitor.stays.total_seconds() // HEARTBEAT)
            for beat in range(1, beats + 1):
                events.append((visitor.arrives + timedelta(seconds=beat * HEARTBEAT), 1, "heartbeat", visitor.index))
            events.append((visitor.arrives + visitor.stays, 2, "leave", visitor.index))
            if visitor.calls_at is not None:
                events.append((visitor.calls_at, 3, "call", visitor.index))
        heapq.heapify(events)

        sessions: dict[int, int] = {}
        shown: dict[int, str | None] = {}
        correct = lost = wrong = ambiguous = 0
        while events:
            at, _, kind, index = heapq.heappop(events)
            visitor_id = f"visitor-{index:06d}"
            if kind == "start":
                data = read_start_request({"site_key": "accuracy", "visitor_id": visitor_id, "utm_source": "google"}, None)
                started = await service.start(site, data, None, at)
                sessions[index] = started.session_id
                shown[index] = started.number if started.kind in (NumberKind.POOL, NumberKind.POOL_REUSED) else None
            elif kind == "heartbeat":
                await service.heartbeat(site, sessions[index], visitor_id, at)
            elif kind == "leave":
                await service.leave(site, sessions[index], visitor_id, at)
            elif shown[index] is None:
                lost += 1
            else:
                async with database.sessions() as session:
                    number = (await session.execute(select(models.TrackingNumber).where(models.TrackingNumber.number == shown[index]))).scalar_one()
                    result = await attribute_pool_call(session, number, at)
                if result.kind is models.Attribution.POOL_AMBIGUOUS:
                    ambiguous += 1
                if result.session_id == sessions[index]:
                    correct += 1
                else:
                    wrong += 1

        async with database.sessions() as session:
            advice = await advise_pool(session, "main", DAY, DAY + timedelta(days=1, hours=1))
        calls = correct + lost + wrong
        return {
            "calls": calls,
            "correct": correct,
            "lost": lost,
            "wrong": wrong,
            "ambiguous": ambiguous,
            "accuracy": correct / calls if calls else math.nan,
            "peak_demand": advice.peak_demand,
            "exhaustions": advice.exhaustions,
        }
    finally:
        await database.close()


async def main_async(visitors_count: int, url_template: str | None, seed: int) -> None:
    visitors = simulate_visitors(visitors_count, seed)
    with tempfile.TemporaryDirectory(prefix="pbx-bridge-accuracy-") as folder:
        counter = 0

        async def fresh_url() -> str:
            nonlocal counter
            counter += 1
            if url_template is None:
                return f"sqlite+aiosqlite:///{Path(folder) / f'day-{counter}.db'}"
            return await fresh_postgres(url_template, counter)

        baseline = await run_day(await fresh_url(), visitors, visitors_count)
        peak = baseline["peak_demand"]
        print(f"visitors {visitors_count}, calls {baseline['calls']}, hold {HOLD_TIME} s, peak demand {peak} numbers")
        print(f"{'pool':>6} {'pool/peak':>9} {'accuracy':>9} {'correct':>8} {'lost':>5} {'wrong':>6} {'ambiguous':>9} {'exhaustions':>11}")
        for share in (0.5, 0.75, 0.9, 1.0, 1.2):
            size = max(1, round(peak * share))
            result = await run_day(await fresh_url(), visitors, size)
            print(
                f"{size:>6} {share:>9.2f} {result['accuracy']:>9.1%} {result['correct']:>8} {result['lost']:>5} "
                f"{result['wrong']:>6} {result['ambiguous']:>9} {result['exhaustions']:>11}"
            )


async def fresh_postgres(admin_url: str, counter: int) -> str:
    import asyncpg

    name = f"pbx_bridge_accuracy_{random.randrange(1 << 30):x}_{counter}"
    connection = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"), timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    CREATED_DATABASES.append(name)
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def drop_postgres(admin_url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"), timeout=5)
    try:
        for name in CREATED_DATABASES:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1500, help="visitors in the day (default 1500)")
    parser.add_argument("--postgres-admin-url", help="PostgreSQL URL to create throwaway databases from")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the simulated day")
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args.visitors, args.postgres_admin_url, args.seed))
    finally:
        if CREATED_DATABASES:
            asyncio.run(drop_postgres(args.postgres_admin_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
