"""Many calls at once: each call's events in order, no call held up by another's journal write."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from models import Call
from pbx_bridge.calls.journal import Journal
from pbx_bridge.config import load_config
from pbx_bridge.service import Service
from tests.calls.conftest import (
    OFFICE,
    TRACKED_DIALED,
    event_time,
    journal_row,
    seconds_between,
    write_config,
)
from tests.fake_asterisk import Answer


async def test_two_hundred_concurrent_calls_all_journaled(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.2, hangup_after=2.0))
    calls = await asyncio.gather(
        *(
            fake_asterisk.incoming_call(TRACKED_DIALED, caller_number=f"+7916{index:07d}")
            for index in range(200)
        )
    )

    rows = [await journal_row(database, call.channel_id, timeout=60) for call in calls]

    assert len({row.channel_id for row in rows}) == 200
    assert [row.caller_number for row in rows] == [f"+7916{index:07d}" for index in range(200)]
    assert {row.outcome for row in rows} == {"answered"}
    assert {row.hangup_side for row in rows} == {"company"}
    assert {row.answered_by for row in rows} == {OFFICE}
    assert all([attempt["status"] for attempt in row.attempts] == ["ANSWER"] for row in rows)
    assert {row.hangup_cause for row in rows} == {16}
    assert {row.error for row in rows} == {None}
    assert [row.tags for row in rows] == [[]] * 200
    assert all(row.recording.state == "done" for row in rows)
    assert all(row.recording.name.endswith(row.channel_id) for row in rows)
    assert {row.recording.error for row in rows} == {None}
    assert all(abs(row.recording.duration_seconds - row.talk_seconds) <= 1 for row in rows)
    # Each row's times are Asterisk's event times, however busy pbx-bridge was.
    for row in rows:
        started = event_time(fake_asterisk, "StasisStart", row.channel_id)
        answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
        ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
        assert row.wait_seconds == seconds_between(started, answered), row.channel_id
        assert row.talk_seconds == seconds_between(answered, ended), row.channel_id
    assert fake_asterisk.live_channels() == []


async def test_slow_journal_write_delays_only_its_call(
    database_url, company, database, fake_asterisk, tmp_path, monkeypatch
):
    release = asyncio.Event()
    original_open = Journal.open

    async def open_slowly(self, start):
        if start.caller_raw == "+79160000001":
            await release.wait()
        return await original_open(self, start)

    monkeypatch.setattr(Journal, "open", open_slowly)
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.05))
    config = load_config(write_config(tmp_path / "c.toml", database_url, fake_asterisk.url), environ={})
    service = Service(config, with_http=False)
    await service.start()
    try:
        await fake_asterisk.wait_for(lambda: fake_asterisk.websocket_count > 0, timeout=10)
        slow = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79160000001")
        fast = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79160000002")

        fast_row = await journal_row(database, fast.channel_id)
        slow_answered_before_release = fake_asterisk.is_bridged(slow.channel_id)
        release.set()
        slow_row = await journal_row(database, slow.channel_id)
    finally:
        await service.stop()

    assert fast_row.outcome == "answered"
    assert slow_answered_before_release is False
    assert slow_row.outcome == "answered"
    assert slow_row.started_at <= fast_row.started_at
    assert slow_row.ended_at > fast_row.ended_at


# Row locks exist on PostgreSQL only: an SQLite writer locks the whole database.
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_locked_row_delays_only_its_call(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=1.0, hangup_after=0.3))
    locked = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79160000001")
    await _wait_for_row(database, locked.channel_id)

    async with database.engine.connect() as locker:
        # Another transaction locks the first call's row, so the UPDATE that records its answer waits.
        await locker.execute(
            text("SELECT id FROM calls WHERE channel_id = :channel FOR UPDATE"), {"channel": locked.channel_id}
        )
        await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(locked.channel_id), timeout=10)
        other = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79160000002")
        other_row = await journal_row(database, other.channel_id, timeout=20)
        row_during_lock = await _wait_for_row(database, locked.channel_id)
        await locker.rollback()

    locked_row = await journal_row(database, locked.channel_id, timeout=20)
    assert other_row.outcome == "answered"
    assert other_row.hangup_side == "company"
    assert other_row.answered_by == OFFICE
    assert other_row.recording.state == "done"
    assert row_during_lock.answered_at is None
    assert row_during_lock.ended_at is None
    assert locked_row.outcome == "answered"
    assert locked_row.hangup_side == "company"
    assert locked_row.answered_by == OFFICE
    assert locked_row.recording.state == "done"
    assert fake_asterisk.live_channels() == []


async def _wait_for_row(database, channel_id: str) -> Call:
    """Return the call's journal row as soon as it exists."""
    for _ in range(200):
        async with database.sessions() as session:
            call = await session.scalar(select(Call).where(Call.channel_id == channel_id))
        if call is not None:
            return call
        await asyncio.sleep(0.05)
    raise AssertionError(f"no journal row for {channel_id} after 10 s")
