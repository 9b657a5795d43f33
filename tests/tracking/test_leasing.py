"""Which pool number a claim takes, and the NOT NULL hold end the claim's index relies on."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import IntegrityError

import models
from models.numbers import NEVER_HELD
from pbx_bridge.storage import Database
from pbx_bridge.storage.migrations import upgrade
from pbx_bridge.tracking import leasing
from pbx_bridge.tracking.sessions import NumberKind, TrackingService
from pbx_bridge.tracking.sites import SiteDirectory
from pbx_bridge.tracking.visitor import read_start_request

from tests.conftest import _postgres_admin, _postgres_url
from tests.tracking.conftest import create_site

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)


async def _start(database: Database, visitor_id: str, now: datetime = T0):
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    site = await service.sites.get("okna-key-1")
    body = {
        "site_key": "okna-key-1",
        "visitor_id": visitor_id,
        "page_url": "https://okna.example/?utm_source=google",
        "utm_source": "google",
    }
    return await service.start(site, read_start_request(body, None), None, now)


async def _set_number(database: Database, number: str, **values: object) -> None:
    async with database.transaction() as session:
        await session.execute(
            update(models.TrackingNumber)
            .where(models.TrackingNumber.number == number)
            .values(**values)
        )


async def test_never_leased_numbers_go_in_id_order(database):
    setup = await create_site(database, pool_size=3)

    first = await _start(database, "visitor-0001")
    second = await _start(database, "visitor-0002")
    third = await _start(database, "visitor-0003")

    assert [first.number, second.number, third.number] == setup.pool_numbers


async def test_longest_free_number_goes_first(database):
    setup = await create_site(database, pool_size=3)
    await _set_number(database, setup.pool_numbers[0], held_until=T0 - timedelta(minutes=1))
    await _set_number(database, setup.pool_numbers[2], held_until=T0 - timedelta(minutes=5))

    started = await _start(database, "visitor-0001")

    assert started.number == setup.pool_numbers[1]


async def test_never_leased_number_goes_before_expired(database):
    setup = await create_site(database, pool_size=2)
    await _set_number(database, setup.pool_numbers[0], held_until=T0 - timedelta(minutes=5))

    first = await _start(database, "visitor-0001")
    second = await _start(database, "visitor-0002")

    assert first.number == setup.pool_numbers[1]
    assert second.number == setup.pool_numbers[0]


async def test_retired_number_is_never_claimed(database):
    setup = await create_site(database, pool_size=2)
    await _set_number(database, setup.pool_numbers[0], state=models.NumberState.RETIRED.value)

    first = await _start(database, "visitor-0001")
    second = await _start(database, "visitor-0002")

    assert first.number == setup.pool_numbers[1]
    assert second.kind is NumberKind.DEFAULT


async def test_number_held_until_now_is_not_free(database):
    setup = await create_site(database, pool_size=1)
    await _set_number(database, setup.pool_numbers[0], held_until=T0)

    started = await _start(database, "visitor-0001")

    assert started.kind is NumberKind.DEFAULT


async def test_new_number_gets_epoch_hold_end(database):
    setup = await create_site(database, pool_size=1)

    async with database.sessions() as session:
        held_until = (
            await session.execute(
                select(models.TrackingNumber.held_until).where(
                    models.TrackingNumber.number == setup.pool_numbers[0]
                )
            )
        ).scalar_one()

    assert held_until == NEVER_HELD


async def test_number_without_hold_end_is_rejected(database):
    setup = await create_site(database, pool_size=1)

    with pytest.raises(IntegrityError):
        await _set_number(database, setup.pool_numbers[0], held_until=None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request, tmp_path):
    """The URL of a database with no tables, so a test can migrate it step by step."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'steps.db'}"
        return
    request.getfixturevalue("postgres_url")  # skips or fails the test when PostgreSQL is missing
    name = f"pbx_bridge_steps_{uuid.uuid4().hex[:8]}"
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    yield _postgres_url(name)
    asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_migration_fills_missing_hold_end(empty_database_url):
    await upgrade(empty_database_url, "0006")
    database = Database(empty_database_url)
    try:
        # Raw SQL with the columns of revision 0006, as an operator's own insert would be.
        async with database.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO companies (id, name, timezone, ring_timeout, recording, created_at)"
                    " VALUES (1, 'Okna', 'Europe/Moscow', 30, false, :created)"
                ),
                {"created": T0},
            )
            await session.execute(
                text(
                    "INSERT INTO tracking_numbers (id, number, company_id, mode, state, created_at)"
                    " VALUES (1, '+74951000000', 1, 'static', 'active', :created)"
                ),
                {"created": T0},
            )

        await upgrade(empty_database_url)

        async with database.sessions() as session:
            held_until = (
                await session.execute(select(models.TrackingNumber.held_until))
            ).scalar_one()
    finally:
        await database.close()

    assert held_until == NEVER_HELD


class _PlanRecorder:
    """A stand-in for a claim's session that runs the claim's UPDATE as EXPLAIN and keeps the plan."""

    def __init__(self, connection, prefix: str) -> None:
        self.connection = connection
        self.dialect = connection.dialect
        self.prefix = prefix
        self.plan: list[str] = []

    def _explain(self, connection, cursor, statement, parameters, context, executemany):
        return self.prefix + statement, parameters

    async def execute(self, statement, parameters=None):
        target = self.connection.sync_connection
        event.listen(target, "before_cursor_execute", self._explain, retval=True)
        try:
            rows = (await self.connection.execute(statement, parameters)).all()
        finally:
            event.remove(target, "before_cursor_execute", self._explain)
        self.plan = [" ".join(str(value) for value in row) for row in rows]
        raise _PlanRecorded


class _PlanRecorded(Exception):
    pass


@pytest.mark.parametrize(
    "claim", [leasing.claim_free_numbers, leasing.claim_reused_numbers], ids=["free", "reused"]
)
async def test_claim_reads_index_without_sort(database, claim):
    setup = await create_site(database, pool_size=20)
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    pool = (await service.sites.get(setup.site_key)).pool

    async with database.engine.connect() as connection:
        if database.is_sqlite:
            recorder = _PlanRecorder(connection, "EXPLAIN QUERY PLAN ")
        else:
            # PostgreSQL scans a table of 22 rows rather than read an index, so turn scans off.
            await connection.execute(text("SET LOCAL enable_seqscan = off"))
            recorder = _PlanRecorder(connection, "EXPLAIN ")
        with pytest.raises(_PlanRecorded):
            await claim(recorder, pool, [1], T0)
        await connection.rollback()

    plan = "\n".join(recorder.plan)
    assert "ix_tracking_numbers_pool_id_state_held_until_id" in plan
    assert "Sort" not in plan
    assert "TEMP B-TREE" not in plan
