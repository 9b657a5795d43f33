"""Many calls at once: each call's events in order, no call held up by another's journal write."""

from __future__ import annotations

import asyncio

from pbx_bridge.calls.journal import Journal
from pbx_bridge.config import load_config
from pbx_bridge.service import Service
from tests.calls.conftest import OFFICE, TRACKED_DIALED, journal_row, write_config
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
    assert {row.outcome for row in rows} == {"answered"}
    assert {row.hangup_side for row in rows} == {"company"}
    assert all(row.recording.state == "done" for row in rows)
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
