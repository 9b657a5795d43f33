"""Failures inside pbx-bridge: the caller is always sent on and the journal row always written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from pbx_bridge.calls.flow import CallFlow
from pbx_bridge.calls.journal import Journal
from pbx_bridge.calls.stasis import StasisApp
from pbx_bridge.config import load_config
from pbx_bridge.service import Service
from tests.calls.conftest import OFFICE, TRACKED_DIALED, journal_row, write_config
from tests.fake_asterisk import Answer


@pytest.fixture
async def service(database_url, company, fake_asterisk, tmp_path) -> AsyncIterator[Service]:
    """The service in this process, so that a test can break one of its parts."""
    config = load_config(write_config(tmp_path / "c.toml", database_url, fake_asterisk.url), environ={})
    service = Service(config, with_http=False, with_delivery=False)
    await service.start()
    await fake_asterisk.wait_for(lambda: fake_asterisk.websocket_count > 0, timeout=10)
    yield service
    await service.stop()


async def test_internal_error_sends_caller_to_fallback(service, fake_asterisk, database, monkeypatch):
    async def broken_dial_next(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(CallFlow, "_dial_next", broken_dial_next)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["extension"] == TRACKED_DIALED
    assert call.fell_back["variables"]["CT_DESTINATION"] == OFFICE
    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert row.error == "internal error: RuntimeError: boom"
    assert row.tags == ["fallback"]
    # Only the caller is left, now running the fallback context's dialplan.
    assert fake_asterisk.live_channels() == [call.channel_id]


async def test_orphan_left_for_fallback_not_taken(service, fake_asterisk, database, monkeypatch):
    from pbx_bridge.calls import stasis

    async def broken_dial_next(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(CallFlow, "_dial_next", broken_dial_next)
    monkeypatch.setattr(stasis, "ORPHAN_GRACE_SECONDS", 0.0)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await journal_row(database, call.channel_id)
    requests_before = len(fake_asterisk.requests)

    # A reconnect's list of the application's channels named the caller just before the call
    # sent it to the fallback context.
    await service.stasis._adopt_orphan(call.channel_id)

    new_requests = [request.rest for request in fake_asterisk.requests[requests_before:]]
    assert new_requests == [f"GET /channels/{call.channel_id}"]
    assert fake_asterisk.live_channels() == [call.channel_id]
    assert service.stasis.active_calls == 0


async def test_error_after_answer_keeps_call_up(service, fake_asterisk, database, monkeypatch):
    async def broken_answered(self, call_id, **fields):
        raise RuntimeError("journal bug")

    monkeypatch.setattr(Journal, "answered", broken_answered)
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.3))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert call.fell_back is None
    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.answered_by == OFFICE
    assert row.talk_seconds >= 0.3
    assert row.error == "internal error: RuntimeError: journal bug"
    assert "internal-error" in row.tags


async def test_database_down_at_call_start_row_written_later(service, fake_asterisk, database, monkeypatch):
    original = Journal._open_once
    database_down = True

    async def open_while_down(self, start):
        if database_down:
            raise OperationalError("INSERT INTO calls", {}, OSError("database is down"))
        return await original(self, start)

    monkeypatch.setattr(Journal, "_open_once", open_while_down)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: call.fell_back is not None, timeout=10)
    database_down = False

    row = await journal_row(database, call.channel_id, timeout=15)

    assert call.fell_back["context"] == "calltracking-fallback"
    assert row.outcome == "failed"
    assert row.attribution == "static"
    assert row.caller_number == "+79161234567"
    assert row.error.startswith("journal unavailable: OperationalError")
    assert row.tags == ["fallback"]


async def test_lost_stasis_start_call_taken_over(service, fake_asterisk, database, monkeypatch):
    original = StasisApp._on_stasis_start
    lost: list[str] = []

    def lose_first_stasis_start(self, event):
        if not lost:
            lost.append(event["channel"]["id"])
            return
        original(self, event)

    monkeypatch.setattr(StasisApp, "_on_stasis_start", lose_first_stasis_start)
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: lost == [call.channel_id], timeout=5)
    await fake_asterisk.drop_websockets(refuse_for=0.1)

    row = await journal_row(database, call.channel_id, timeout=15)

    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert "taken-over" in row.tags
    # The lost StasisStart never reached the call flow, so the row starts at the channel's
    # creation time, which Asterisk stamps a little before StasisStart.
    assert row.started_at == channel_creation_time(fake_asterisk, call.channel_id)


async def test_failed_final_write_is_retried(service, fake_asterisk, database, monkeypatch):
    original = Journal._finish_once
    failures: list[int] = []

    async def finish_fails_once(self, call_id, end, recording):
        if not failures:
            failures.append(call_id)
            raise OperationalError("UPDATE calls", {}, OSError("database is locked"))
        await original(self, call_id, end, recording)

    monkeypatch.setattr(Journal, "_finish_once", finish_fails_once)
    monkeypatch.setattr("pbx_bridge.calls.journal.WRITE_LATER_DELAYS", (0.1,))
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id, timeout=10)

    assert len(failures) == 1
    assert row.id == failures[0]
    assert row.outcome == "answered"
    assert row.recording.state == "done"


async def test_blocked_journal_falls_back(service, fake_asterisk, database, company, monkeypatch):
    monkeypatch.setattr("pbx_bridge.calls.flow.JOURNAL_OPEN_TIMEOUT", 0.5)
    monkeypatch.setattr("pbx_bridge.calls.journal.WRITE_LATER_DELAYS", (0.2,))
    async with database.engine.connect() as locker:
        # The INSERT of the row waits: on PostgreSQL for the company row its foreign key reads,
        # on SQLite for the write lock of this open transaction.
        if database.is_sqlite:
            await locker.execute(text("UPDATE companies SET name = name WHERE id = :id"), {"id": company})
        else:
            await locker.execute(text("SELECT id FROM companies WHERE id = :id FOR UPDATE"), {"id": company})
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        await fake_asterisk.wait_for(lambda: call.fell_back is not None, timeout=5)
        await locker.rollback()

    row = await journal_row(database, call.channel_id, timeout=15)

    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["extension"] == TRACKED_DIALED
    assert row.outcome == "failed"
    assert row.error.startswith("journal unavailable: TimeoutError")
    assert row.tags == ["fallback"]
    assert row.company_id == company


def channel_creation_time(fake, channel_id: str) -> datetime:
    for event in fake.events + fake.undelivered_events:
        channel = event.get("channel") or {}
        if channel.get("id") == channel_id and channel.get("creationtime"):
            return datetime.strptime(channel["creationtime"], "%Y-%m-%dT%H:%M:%S.%f%z")
    raise AssertionError(f"no event carries the creation time of {channel_id}")
