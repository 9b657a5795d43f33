"""Calls on pool numbers through `pbx-bridge serve`: the journal row names the visitor session.

Sessions start through the tracking service at the real current time, then the fake Asterisk
places a call on the session's number, so the lease must cover the call's Asterisk timestamp.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import models
from models import utcnow
from pbx_bridge.tracking.sessions import NumberKind, TrackingService
from pbx_bridge.tracking.sites import SiteDirectory
from pbx_bridge.tracking.visitor import read_start_request
from tests.calls.conftest import (
    ARI_PASSWORD,
    ARI_USER,
    OFFICE,
    ServeProcess,
    journal_row,
    start_serve,
    write_config,
)
from tests.fake_asterisk import Answer, FakeAsterisk
from tests.tracking.conftest import SiteSetup, create_site

CALLER = "+79161234567"


@pytest.fixture
async def fake_asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk(app="calltracking", username=ARI_USER, password=ARI_PASSWORD)
    await fake.start()
    fake.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    yield fake
    await fake.stop()


@pytest.fixture
async def serve(database_url, database, fake_asterisk, tmp_path) -> AsyncIterator[ServeProcess]:
    config = write_config(tmp_path / "pbx-bridge.toml", database_url, fake_asterisk.url)
    process = await start_serve(config, fake_asterisk, tmp_path)
    yield process
    await process.stop()


async def start_visit(database, visitor_id: str, **fields: str):
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    site = await service.sites.get("okna-key-1")
    body = {"site_key": "okna-key-1", "visitor_id": visitor_id, "utm_source": "google", **fields}
    return await service.start(site, read_start_request(body, None), "203.0.113.5", utcnow())


async def call_number(fake_asterisk: FakeAsterisk, database, number: str) -> models.Call:
    # The trunk sends the number without its plus sign, as in the call-flow tests.
    call = await fake_asterisk.incoming_call(number.lstrip("+"), caller_number=CALLER)
    return await journal_row(database, call.channel_id, timeout=20)


async def test_pool_call_carries_session_and_source(database, serve, fake_asterisk):
    setup: SiteSetup = await create_site(database, pool_size=2)
    visit = await start_visit(database, "visitor-0001", utm_campaign="windows")

    row = await call_number(fake_asterisk, database, visit.number)

    assert visit.kind is NumberKind.POOL
    assert row.attribution == "pool"
    assert row.session_id == visit.session_id
    assert row.source_id == setup.google_source_id
    assert row.dialed_number == visit.number
    assert row.outcome == "answered"


async def test_pool_call_after_leave_within_hold(database, serve, fake_asterisk):
    await create_site(database, pool_size=2)
    visit = await start_visit(database, "visitor-0001")
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    site = await service.sites.get("okna-key-1")
    await service.leave(site, visit.session_id, "visitor-0001", utcnow() - timedelta(seconds=1))

    row = await call_number(fake_asterisk, database, visit.number)

    assert row.attribution == "pool"
    assert row.session_id == visit.session_id


async def test_pool_call_without_lease_is_unmatched(database, serve, fake_asterisk):
    setup = await create_site(database, pool_size=2)

    row = await call_number(fake_asterisk, database, setup.pool_numbers[1])

    assert row.attribution == "pool-unmatched"
    assert row.session_id is None
    assert row.source_id == setup.default_source_id
    assert row.outcome == "answered"


async def test_reused_pool_number_call_is_ambiguous(database, serve, fake_asterisk):
    await create_site(database, pool_size=1, policy=models.ExhaustedPolicy.REUSE)
    first = await start_visit(database, "visitor-0001")
    second = await start_visit(database, "visitor-0002", utm_campaign="doors")

    row = await call_number(fake_asterisk, database, second.number)

    assert first.kind is NumberKind.POOL
    assert second.kind is NumberKind.POOL_REUSED
    assert second.number == first.number
    assert row.attribution == "pool-ambiguous"
    assert row.session_id == second.session_id


async def test_first_time_caller_counted_per_company(database, serve, fake_asterisk):
    setup = await create_site(database, pool_size=2)
    async with database.transaction() as session:
        other = models.Company(name="Other company")
        session.add(other)
        await session.flush()
        session.add(
            models.Call(
                channel_id="earlier-call-of-other-company",
                company_id=other.id,
                caller_number=CALLER,
                caller_raw=CALLER,
                attribution="static",
                outcome="answered",
                started_at=utcnow() - timedelta(days=1),
            )
        )

    first = await call_number(fake_asterisk, database, setup.newspaper_number)
    second = await call_number(fake_asterisk, database, setup.newspaper_number)

    assert first.first_time_caller is True
    assert second.first_time_caller is False
