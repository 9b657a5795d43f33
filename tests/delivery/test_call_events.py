"""Webhooks of real calls: `pbx-bridge serve` journals a call from the fake Asterisk, and its
outbox worker sends call.started, call.answered and call.ended exactly once each, also when the
receiver is down and pbx-bridge is restarted before it comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

import models
from pbx_bridge.delivery.checks import WebhookSpec
from pbx_bridge.delivery.webhooks import replace_company_webhooks
from pbx_bridge.storage import Database
from tests.calls.conftest import (
    ARI_PASSWORD,
    ARI_USER,
    OFFICE,
    TRACKED,
    TRACKED_DIALED,
    journal_row,
    start_serve,
    write_config,
)
from tests.delivery.conftest import WEBHOOK_SECRET
from tests.delivery.receivers import WebhookReceiver
from tests.fake_asterisk import Answer, FakeAsterisk

EVENTS = ["call.started", "call.answered", "call.ended"]
# Retries every 50 to 200 ms, so a test waits for deliveries in seconds.
FAST_DELIVERY = {"poll_interval": 0.05, "retry_min_delay": 0.05, "retry_max_delay": 0.2}


@pytest.fixture
async def fake_asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk(app="calltracking", username=ARI_USER, password=ARI_PASSWORD)
    await fake.start()
    fake.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    yield fake
    await fake.stop()


async def add_company_with_webhook(database: Database, url: str) -> int:
    async with database.transaction() as session:
        company = models.Company(name="Ромашка")
        company.destinations = [models.Destination(position=1, endpoint=OFFICE)]
        session.add(company)
        await session.flush()
        source = models.Source(company_id=company.id, name="Газета")
        session.add(source)
        await session.flush()
        session.add(
            models.TrackingNumber(
                number=TRACKED, company_id=company.id, mode="static", source_id=source.id
            )
        )
        await replace_company_webhooks(session, company.id, [WebhookSpec(url, WEBHOOK_SECRET)])
        return company.id


async def wait_for_deliveries(
    database: Database, receiver: WebhookReceiver, count: int, timeout: float = 30.0
) -> list[models.Delivery]:
    """Return the outbox rows once `count` are delivered and the receiver accepted as many."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with database.sessions() as session:
            rows = list(await session.scalars(select(models.Delivery).order_by(models.Delivery.id)))
        delivered = [row for row in rows if row.state == "delivered"]
        if len(delivered) >= count and len(receiver.accepted) >= count:
            return rows
        if loop.time() > deadline:
            raise AssertionError(
                f"{len(delivered)} of {count} deliveries done after {timeout} s: "
                f"{[(row.event, row.state, row.last_error) for row in rows]}"
            )
        await asyncio.sleep(0.05)


async def test_call_sends_three_webhooks_once(
    database_url: str, database: Database, fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    await receiver.start()
    await add_company_with_webhook(database, receiver.url)
    # With a poll interval of a minute, only the journal waking the worker delivers in seconds.
    config = write_config(
        tmp_path / "pbx-bridge.toml", database_url, fake_asterisk.url, delivery={"poll_interval": 60.0}
    )
    serve = await start_serve(config, fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
        deliveries = await wait_for_deliveries(database, receiver, 3, timeout=10.0)
    finally:
        await serve.stop()
        await receiver.stop()

    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.hangup_side == "company"
    assert row.hangup_cause == 16
    # With outbox rows to add, the answer and the end write the recording row through SQLAlchemy.
    assert row.recording.state == "done"
    assert row.recording.name.endswith(call.channel_id)
    assert row.recording.duration_seconds is not None
    assert row.recording.error is None
    assert [delivery.event for delivery in deliveries] == EVENTS
    assert sorted(document["event"] for document in receiver.accepted) == sorted(EVENTS)
    assert sorted(receiver.delivery_ids()) == [delivery.id for delivery in deliveries]
    assert {document["call"]["id"] for document in receiver.accepted} == {row.id}
    ended = next(document for document in receiver.accepted if document["event"] == "call.ended")
    assert ended["call"]["outcome"] == "answered"
    assert ended["source"]["name"] == "Газета"


async def test_receiver_down_across_restart_delivers_once(
    database_url: str, database: Database, fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    receiver.failure_status = 503
    await receiver.start()
    await add_company_with_webhook(database, receiver.url)
    config = write_config(
        tmp_path / "pbx-bridge.toml", database_url, fake_asterisk.url, delivery=FAST_DELIVERY
    )
    try:
        first = await start_serve(config, fake_asterisk, tmp_path)
        try:
            call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
            await journal_row(database, call.channel_id)
            for _ in range(200):
                if receiver.requests >= 6:
                    break
                await asyncio.sleep(0.05)
        finally:
            first_status = await first.stop()
        failed_requests = receiver.requests

        receiver.failure_status = None
        second = await start_serve(config, fake_asterisk, tmp_path)
        try:
            deliveries = await wait_for_deliveries(database, receiver, 3)
        finally:
            await second.stop()
    finally:
        await receiver.stop()

    assert first_status == 0
    assert failed_requests >= 6
    assert [delivery.state for delivery in deliveries] == ["delivered"] * 3
    assert all(delivery.attempts >= 2 for delivery in deliveries)
    assert sorted(document["event"] for document in receiver.accepted) == sorted(EVENTS)
    assert sorted(receiver.delivery_ids()) == [delivery.id for delivery in deliveries]
