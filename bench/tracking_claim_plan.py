"""Plan and time of one pool number claim on a pool of 60,000 numbers.

Seeds a fresh database like bench/tracking_http.py, marks 10,000 numbers as held and 10,000 as
recently released, and runs VACUUM ANALYZE on PostgreSQL. It then prints the plan of the
statement that picks the number in claim_free_numbers and claim_reused_numbers (EXPLAIN ANALYZE
on PostgreSQL, EXPLAIN QUERY PLAN on SQLite), and the median and max time of 50 such statements,
each rolled back. On PostgreSQL that statement of claim_free_numbers is the whole claim, which
also marks the number held and inserts the lease.

Usage: python bench/tracking_claim_plan.py [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import event, select, text, update

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import models  # noqa: E402
import tracking_http  # noqa: E402
from pbx_bridge.storage import Database  # noqa: E402
from pbx_bridge.tracking import leasing  # noqa: E402
from pbx_bridge.tracking.sites import PoolSettings  # noqa: E402

NOW = datetime(2026, 12, 5, 12, tzinfo=timezone.utc)
HELD = 10_000
RELEASED = 10_000
CLAIMS = (leasing.claim_free_numbers, leasing.claim_reused_numbers)


class _Stop(Exception):
    pass


class _FirstStatement:
    """A stand-in for a claim's session that runs only the claim's first statement, which picks
    the number, then stops the claim."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect
        self.rows: list = []
        self.seconds = 0.0

    async def execute(self, statement, parameters=None):
        begin = time.perf_counter()
        self.rows = (await self.connection.execute(statement, parameters)).all()
        self.seconds = time.perf_counter() - begin
        raise _Stop


async def _prepare(database: Database) -> PoolSettings:
    async with database.transaction() as session:
        pool_id = (await session.execute(select(models.NumberPool.id))).scalar_one()
        ids = (
            await session.execute(
                select(models.TrackingNumber.id)
                .where(models.TrackingNumber.pool_id == pool_id)
                .order_by(models.TrackingNumber.id)
                .limit(HELD + RELEASED)
            )
        ).scalars().all()
        held, released = ids[:HELD], ids[HELD:]
        number = models.TrackingNumber
        await session.execute(
            update(number).where(number.id.in_(held)).values(held_until=NOW + timedelta(minutes=10))
        )
        await session.execute(
            update(number).where(number.id.in_(released)).values(held_until=NOW - timedelta(minutes=10))
        )
    if not database.is_sqlite:
        async with database.engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE tracking_numbers"))
    return PoolSettings(pool_id, 900, 30, models.ExhaustedPolicy.DEFAULT_NUMBER)


async def _claim_once(database: Database, claim, pool: PoolSettings, explain: str | None):
    def prefix(connection, cursor, statement, parameters, context, executemany):
        return (explain + statement if explain else statement), parameters

    async with database.engine.connect() as connection:
        if explain:
            event.listen(connection.sync_connection, "before_cursor_execute", prefix, retval=True)
        recorder = _FirstStatement(connection)
        try:
            await claim(recorder, pool, [1], NOW)
        except _Stop:
            pass
        await connection.rollback()
    return recorder


async def bench_backend(backend: str, folder: Path) -> None:
    postgres_name = None
    if backend == "postgres":
        url, postgres_name = await tracking_http.postgres_database()
    else:
        url = f"sqlite+aiosqlite:///{folder / 'claims.db'}"
    try:
        await tracking_http.seed(url)
        database = Database(url)
        try:
            pool = await _prepare(database)
            explain = "EXPLAIN QUERY PLAN " if database.is_sqlite else "EXPLAIN (ANALYZE, COSTS OFF) "
            for claim in CLAIMS:
                recorder = await _claim_once(database, claim, pool, explain)
                print(f"\n[{backend}] {claim.__name__}")
                for row in recorder.rows:
                    print("   ", " | ".join(str(value) for value in row))
            for claim in CLAIMS:
                times = sorted([(await _claim_once(database, claim, pool, None)).seconds for _ in range(50)])
                print(
                    f"[{backend}] {claim.__name__}: median {times[25] * 1000:.2f} ms, "
                    f"max {times[-1] * 1000:.2f} ms over 50 claims"
                )
        finally:
            await database.close()
    finally:
        if postgres_name:
            await tracking_http.drop_postgres(postgres_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="pbx-bridge-claims-") as folder:
            asyncio.run(bench_backend(backend, Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
