"""Calls through `pbx-bridge serve` while Asterisk's HTTP server misbehaves: slow or missing REST
responses, connections it closes, more calls at once than REST connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.calls.conftest import (
    ARI_PASSWORD,
    ARI_USER,
    OFFICE,
    TRACKED_DIALED,
    ServeProcess,
    journal_row,
    start_serve,
    write_config,
)
from tests.fake_asterisk import Answer, FakeAsterisk

# Seconds `serve` waits for one REST response in these tests (ari.request_timeout).
REQUEST_TIMEOUT = 1.0
# Seconds `serve` retries a failed `continue` to the fallback context in these tests.
FALLBACK_RETRY_SECONDS = 2.0


@pytest.fixture
async def serve_short_timeout(database_url, company, fake_asterisk, tmp_path) -> AsyncIterator[ServeProcess]:
    config = write_config(
        tmp_path / "pbx-bridge.toml", database_url, fake_asterisk.url,
        ari={"request_timeout": REQUEST_TIMEOUT},
        calls={"fallback_retry_seconds": FALLBACK_RETRY_SECONDS},
    )
    process = await start_serve(config, fake_asterisk, tmp_path)
    yield process
    await process.stop()


async def test_answer_without_response_falls_back(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", None)

    row = await journal_row(database, call.channel_id)

    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["variables"]["CT_DESTINATION"] == OFFICE
    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert row.answered_at is None
    assert row.answered_by is None
    assert "timed out" in row.error
    assert "fallback" in row.tags
    # pbx-bridge hung up the company leg itself. Asterisk reports that hangup with the soft
    # hangup flag 32 as its cause, which does not describe how the call ended.
    assert row.hangup_cause is None
    # The company leg that answered is hung up: the fallback context dials the line again.
    assert fake_asterisk.live_channels() == [call.channel_id]
    assert ARI_PASSWORD not in serve_short_timeout.log


async def test_add_channel_without_response_falls_back(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    fake_asterisk.delay_responses("POST /bridges/*/addChannel", None)

    row = await journal_row(database, call.channel_id)

    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert row.outcome == "failed"
    assert "timed out" in row.error
    assert fake_asterisk.live_channels() == [call.channel_id]


# None: Asterisk never handles the request. A number: it creates the channel after pbx-bridge
# stopped waiting, and the channel enters Stasis when its call has ended.
@pytest.mark.parametrize("delay", [None, REQUEST_TIMEOUT + 0.3])
async def test_create_channel_without_response_falls_back(serve_short_timeout, fake_asterisk, database, delay):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    fake_asterisk.delay_responses("POST /channels/create", delay)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id, timeout=20)
    if delay is not None:
        await fake_asterisk.wait_for(lambda: len(fake_asterisk.live_channels()) == 1, timeout=5)

    # A missing response is Asterisk's failure, not the company line's. The fallback context
    # dials the line, and the next destination is not tried through the same unresponsive REST API.
    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["variables"]["CT_DESTINATION"] == OFFICE
    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert "fallback" in row.tags
    assert "timed out" in row.error
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["CHANUNAVAIL"]
    assert "timed out" in row.attempts[0]["error"]
    assert fake_asterisk.live_channels() == [call.channel_id]


# None: Asterisk never handles the request. A number: it handles the request after pbx-bridge
# stopped waiting and hung the leg up, so the dial gets 404.
@pytest.mark.parametrize("delay", [None, REQUEST_TIMEOUT + 0.3])
async def test_dial_without_response_falls_back(serve_short_timeout, fake_asterisk, database, delay):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    fake_asterisk.delay_responses("POST /channels/*/dial", delay)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id, timeout=20)
    if delay is not None:
        await fake_asterisk.wait_for(
            lambda: any(r.path.endswith("/dial") and r.status == 404 for r in fake_asterisk.requests), timeout=5
        )

    # The next destination would be dialed through the same unresponsive REST API, and after the
    # last one the caller would be hung up. The fallback context dials the line instead.
    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["variables"]["CT_DESTINATION"] == OFFICE
    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert row.tags == ["fallback"]
    assert row.error.startswith(f"cannot dial {OFFICE}: ")
    assert "timed out" in row.error
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["CHANUNAVAIL"]
    assert "timed out" in row.attempts[0]["error"]
    creates = [r for r in fake_asterisk.requests if r.rest == "POST /channels/create"]
    assert [r.params["endpoint"] for r in creates] == [OFFICE]
    leg = creates[0].params["channelId"]
    assert (f"DELETE /channels/{leg}", 204) in [(r.rest, r.status) for r in fake_asterisk.requests]
    assert fake_asterisk.live_channels() == [call.channel_id]


async def test_slow_responses_within_timeout_call_answered(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.delay_responses("* *", REQUEST_TIMEOUT * 0.6)
    # The company line talks long enough for the slow answer, addChannel and record requests.
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=3.0))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id, timeout=20)

    assert call.fell_back is None
    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.error is None
    assert row.recording.state == "done"


async def test_connection_close_after_each_response(serve, fake_asterisk, database):
    fake_asterisk.close_connections_after_responses()
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))

    for caller in ("+79160000001", "+79160000002"):
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number=caller)
        row = await journal_row(database, call.channel_id)

        assert row.outcome == "answered"
        assert row.error is None
        assert row.recording.state == "done"


@pytest.fixture
async def quick_idle_asterisk() -> AsyncIterator[FakeAsterisk]:
    """An Asterisk whose http.conf sets session_keep_alive to 0.3 s."""
    fake = FakeAsterisk(app="calltracking", username=ARI_USER, password=ARI_PASSWORD,
                        session_keep_alive=0.3)
    await fake.start()
    yield fake
    await fake.stop()


async def test_idle_connections_closed_by_asterisk(database_url, company, quick_idle_asterisk, database, tmp_path):
    fake = quick_idle_asterisk
    config = write_config(tmp_path / "pbx-bridge.toml", database_url, fake.url)
    process = await start_serve(config, fake, tmp_path)
    fake.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    try:
        rows = []
        for caller in ("+79160000001", "+79160000002", "+79160000003"):
            call = await fake.incoming_call(TRACKED_DIALED, caller_number=caller)
            rows.append(await journal_row(database, call.channel_id))
            # Longer than session_keep_alive: Asterisk has closed every pooled connection.
            await asyncio.sleep(0.6)
    finally:
        await process.stop()

    assert [row.outcome for row in rows] == ["answered"] * 3
    assert [row.error for row in rows] == [None] * 3
    problems = [line for line in process.log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert problems == []


async def test_more_calls_than_connections(serve, fake_asterisk, database):
    # Every request keeps its connection busy for 50 ms, so 100 calls need more than 64 at once.
    fake_asterisk.delay_responses("* *", 0.05)
    # The company line talks long enough for the queued answer and addChannel requests even on a
    # loaded machine. A leg gone before it is bridged leaves no recording.
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.2, hangup_after=3.0))
    calls = await asyncio.gather(
        *(
            fake_asterisk.incoming_call(TRACKED_DIALED, caller_number=f"+7916{index:07d}")
            for index in range(100)
        )
    )

    rows = [await journal_row(database, call.channel_id, timeout=60) for call in calls]

    assert {row.outcome for row in rows} == {"answered"}
    assert {row.error for row in rows} == {None}
    assert all(row.recording.state == "done" for row in rows)
    assert fake_asterisk.live_channels() == []


async def test_http_restart_while_ringing(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=1.0, hangup_after=0.3))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing(OFFICE), timeout=5)
    await fake_asterisk.restart_http(down_for=0.5)

    row = await journal_row(database, call.channel_id, timeout=15)
    next_call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79160000002")
    next_row = await journal_row(database, next_call.channel_id, timeout=15)

    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert next_row.outcome == "answered"
    assert next_row.error is None


async def test_http_restart_at_call_start(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.3))
    # The call's bridge request waits long enough to be cut by the restart.
    fake_asterisk.delay_responses("POST /bridges", 0.5)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await asyncio.sleep(0.2)
    await fake_asterisk.restart_http(down_for=0.5)

    row = await journal_row(database, call.channel_id, timeout=15)

    # The cut bridge request sends the caller to the fallback context. The refused continue is
    # retried until Asterisk listens again.
    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert row.answered_by is None
    assert "fallback" in row.tags
    assert "fallback-failed" not in row.tags
    assert "taken-over" not in row.tags
    assert "POST /bridges" in row.error
    assert "connection refused" in serve.log
    assert fake_asterisk.live_channels() == [call.channel_id]
    # Asterisk created the bridge although its response was lost, and the call's end removed it.
    bridge_requests = [r.rest for r in fake_asterisk.requests if r.path.startswith("/bridges")]
    assert bridge_requests == ["POST /bridges", f"DELETE /bridges/ct-{call.channel_id}"]
    assert fake_asterisk.pbx.bridges == {}


async def test_failed_fallback_hangs_up_and_tags_row(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", None)
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/continue", None)

    row = await journal_row(database, call.channel_id, timeout=20)

    assert call.fell_back is None
    assert row.outcome == "failed"
    assert "fallback-failed" in row.tags
    assert "fallback" not in row.tags
    assert fake_asterisk.live_channels() == []


async def test_fallback_retried_until_rest_recovers(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    continue_request = f"POST /channels/{call.channel_id}/continue"
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", None)
    fake_asterisk.delay_responses(continue_request, None)
    # The answer request times out after 1 s and the first continue after 2 s. The retry 0.5 s
    # later gets through.
    await asyncio.sleep(1.5)
    fake_asterisk.stop_delaying_responses(continue_request)

    row = await journal_row(database, call.channel_id, timeout=20)

    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert row.outcome == "failed"
    assert "fallback" in row.tags
    assert "fallback-failed" not in row.tags
    assert "fallback failed (POST /channels/{channelId}/continue" in serve_short_timeout.log
    assert "retrying in 0.5 s" in serve_short_timeout.log


async def test_fallback_late_response_keeps_caller(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", None)
    # Asterisk carries out the continue after pbx-bridge gave up waiting for the response, so
    # the retry finds the caller outside Stasis.
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/continue", REQUEST_TIMEOUT + 0.2)

    row = await journal_row(database, call.channel_id, timeout=20)

    assert call.fell_back is not None
    assert "fallback" in row.tags
    assert "fallback-failed" not in row.tags
    assert fake_asterisk.live_channels() == [call.channel_id]


async def test_shutdown_ends_fallback_retries(database_url, company, fake_asterisk, database, tmp_path):
    config = write_config(
        tmp_path / "pbx-bridge.toml", database_url, fake_asterisk.url,
        ari={"request_timeout": REQUEST_TIMEOUT},
        calls={"fallback_retry_seconds": 60.0},
    )
    process = await start_serve(config, fake_asterisk, tmp_path)
    loop = asyncio.get_running_loop()
    try:
        fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", None)
        fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/continue", None)
        # The answer request times out after 1 s. The continue then times out on every attempt,
        # and SIGTERM arrives while it waits for the next one.
        await fake_asterisk.wait_for(lambda: "retrying in" in process.log, timeout=10)
        stopping_at = loop.time()
    finally:
        returncode = await process.stop()
    stop_seconds = loop.time() - stopping_at

    row = await journal_row(database, call.channel_id, timeout=5)

    assert returncode == 0
    assert stop_seconds < 8
    assert call.fell_back is None
    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert "fallback-failed" in row.tags
    assert "pbx-bridge is stopping, so the fallback is not retried" in process.log
    assert fake_asterisk.live_channels() == []


async def test_caller_hangup_during_fallback_retries(serve_short_timeout, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", None)
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/continue", None)
    # The answer request times out after about 1 s, and the caller hangs up while the first
    # continue waits for its response.
    await asyncio.sleep(1.5)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16)

    row = await journal_row(database, call.channel_id, timeout=20)

    assert call.fell_back is None
    assert row.outcome == "abandoned"
    assert row.hangup_side == "caller"
    assert row.hangup_cause == 16
    assert row.answered_at is None
    assert "fallback-failed" in row.tags
    assert "timed out" in row.error
    assert fake_asterisk.live_channels() == []
