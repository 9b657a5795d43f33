"""End-to-end calls: the fake Asterisk places calls, `pbx-bridge serve` handles them, the journal
row is checked field by field. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from pbx_bridge.calls.flow import event_time as flow_event_time
from pbx_bridge.calls.journal import stored_channel_id
from tests.calls.conftest import (
    MOBILE,
    OFFICE,
    TRACKED,
    TRACKED_DIALED,
    event_time,
    journal_row,
    seconds_between,
)
from tests.fake_asterisk import Answer, Busy, Fail, NoAnswer
from tests.fake_asterisk.channels import LiveRecording


def call_requests(fake) -> list[tuple[str, int]]:
    """Return the REST requests and their statuses in order, without those on the application
    (event filter, reconcile)."""
    return [(r.rest, r.status) for r in fake.requests if not r.path.startswith("/applications")]


async def test_answered_call_caller_hangs_up(serve, fake_asterisk, database, company):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567", caller_name="Ivan Petrov")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(call.channel_id), timeout=5)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.3)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.hangup_side == "caller"
    assert row.company_id == company
    assert row.dialed_number == TRACKED
    assert row.dialed_raw == TRACKED_DIALED
    assert row.attribution == "static"
    assert row.source_id is not None
    assert row.caller_raw == "+79161234567"
    assert row.caller_number == "+79161234567"
    assert row.caller_name == "Ivan Petrov"
    assert row.linkedid == call.channel_id
    assert row.first_time_caller is True
    assert row.answered_by == OFFICE
    assert row.answered_at is not None and row.answered_at > row.started_at
    assert row.ended_at > row.answered_at
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", call.channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == "Normal Clearing"
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.error is None
    assert row.tags == []
    assert row.recording is not None
    assert row.recording.state == "done"
    assert row.recording.format == "wav"
    assert row.recording.name == f"calltracking/{row.started_at:%Y/%m/%d}/{call.channel_id}"
    assert row.recording.duration_seconds is not None
    assert abs(row.recording.duration_seconds - row.talk_seconds) <= 1
    assert row.recording.error is None
    caller, leg, bridge = call.channel_id, row.outbound_channel_id, f"ct-{call.channel_id}"
    # The caller left on their own, so only the company leg and the bridge are torn down.
    assert call_requests(fake_asterisk) == [
        (f"POST /channels/{caller}/ring", 204),
        ("POST /bridges", 200),
        ("POST /channels/create", 200),
        (f"POST /channels/{leg}/dial", 204),
        (f"POST /channels/{caller}/answer", 204),
        (f"POST /bridges/{bridge}/addChannel", 204),
        (f"POST /bridges/{bridge}/record", 201),
        (f"DELETE /channels/{leg}", 204),
        (f"DELETE /bridges/{bridge}", 204),
    ]
    assert fake_asterisk.live_channels() == []
    # Every call log line names the call, and the service logged no warning or error.
    call_lines = [line for line in serve.log.splitlines() if " pbx_bridge.calls: " in line]
    assert call_lines
    assert all(f"call {caller}: " in line for line in call_lines)
    assert [line for line in serve.log.splitlines() if " WARNING " in line or " ERROR " in line] == []


async def test_answered_call_company_hangs_up(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.answered_by == OFFICE
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.talk_seconds >= 0.2
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == "Normal Clearing"
    assert row.error is None
    assert row.tags == []
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.recording.state == "done"
    assert row.recording.name == f"calltracking/{row.started_at:%Y/%m/%d}/{call.channel_id}"
    assert row.recording.format == "wav"
    assert row.recording.duration_seconds == int(row.talk_seconds)
    assert row.recording.error is None
    assert not fake_asterisk.channel_exists(call.channel_id)


async def test_busy_first_destination_second_answers(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Busy(after=0.05))
    fake_asterisk.script_endpoint(MOBILE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.answered_by == MOBILE
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE, MOBILE]
    assert [attempt["status"] for attempt in row.attempts] == ["BUSY", "ANSWER"]
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.hangup_side == "company"
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == "Normal Clearing"
    assert row.error is None
    assert row.tags == []
    assert row.recording.state == "done"
    assert row.recording.name == f"calltracking/{row.started_at:%Y/%m/%d}/{call.channel_id}"
    assert row.recording.duration_seconds == int(row.talk_seconds)
    creates = [r for r in fake_asterisk.requests if r.rest == "POST /channels/create"]
    assert [r.params["endpoint"] for r in creates] == [OFFICE, MOBILE]
    office_leg, mobile_leg = (r.params["channelId"] for r in creates)
    caller, bridge = call.channel_id, f"ct-{call.channel_id}"
    assert mobile_leg == row.outbound_channel_id
    # The busy leg was gone when pbx-bridge hung it up, and the mobile line was dialed after it.
    assert call_requests(fake_asterisk) == [
        (f"POST /channels/{caller}/ring", 204),
        ("POST /bridges", 200),
        ("POST /channels/create", 200),
        (f"POST /channels/{office_leg}/dial", 204),
        (f"DELETE /channels/{office_leg}", 404),
        ("POST /channels/create", 200),
        (f"POST /channels/{mobile_leg}/dial", 204),
        (f"POST /channels/{caller}/answer", 204),
        (f"POST /bridges/{bridge}/addChannel", 204),
        (f"POST /bridges/{bridge}/record", 201),
        (f"DELETE /channels/{caller}", 204),
        (f"DELETE /bridges/{bridge}", 204),
    ]
    assert fake_asterisk.live_channels() == []


async def test_every_destination_busy(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Busy(after=0.05, tech_cause=486))
    fake_asterisk.script_endpoint(MOBILE, Busy(after=0.05, tech_cause=486))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "busy"
    assert row.hangup_side == "system"
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE, MOBILE]
    assert [attempt["status"] for attempt in row.attempts] == ["BUSY", "BUSY"]
    # Asterisk sends a leg's Dial BUSY before the ChannelHangupRequest that carries cause 17.
    assert row.hangup_cause == 17
    assert row.hangup_cause_text == "User busy"
    assert row.answered_at is None
    assert row.answered_by is None
    assert row.talk_seconds is None
    assert 0.1 <= row.wait_seconds < 5.0
    assert row.error is None
    assert row.tags == []
    assert row.recording is None
    assert fake_asterisk.live_channels() == []
    # Each busy leg was gone when pbx-bridge hung it up: Asterisk's 404 is no error of the call.
    leg_deletes = [r for r in fake_asterisk.requests if r.method == "DELETE" and r.path.startswith("/channels/")
                   and not r.path.endswith(call.channel_id)]
    assert len(leg_deletes) >= 2
    assert {r.status for r in leg_deletes} == {404}
    assert "Traceback" not in serve.log


async def test_no_answer_until_ring_timeout(database_url, company, database, fake_asterisk, tmp_path):
    from tests.calls.conftest import start_serve, write_config
    from models import Destination
    from sqlalchemy import update

    async with database.transaction() as session:
        await session.execute(update(Destination).values(ring_timeout=1))
    fake_asterisk.script_endpoint(OFFICE, NoAnswer())
    fake_asterisk.script_endpoint(MOBILE, NoAnswer())
    serve = await start_serve(write_config(tmp_path / "c.toml", database_url, fake_asterisk.url), fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
    finally:
        await serve.stop()

    assert row.outcome == "no-answer"
    assert row.hangup_side == "system"
    assert row.answered_at is None
    assert row.talk_seconds is None
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE, MOBILE]
    assert [attempt["status"] for attempt in row.attempts] == ["NOANSWER", "NOANSWER"]
    # Each destination rang for its ring timeout of 1 s, ended by Asterisk's dial timeout.
    assert 2.0 <= row.wait_seconds < 4.0
    dials = [r for r in fake_asterisk.requests if r.path.endswith("/dial")]
    assert [r.params["timeout"] for r in dials] == ["1", "1"]
    assert row.answered_by is None
    assert row.error is None
    assert row.tags == []
    # Asterisk ended each dial with a soft hangup, whose `cause` 32 is a flag, not a Q.850 cause.
    assert row.hangup_cause is None
    assert row.hangup_cause_text is None
    assert row.recording is None
    assert not fake_asterisk.channel_exists(call.channel_id)
    # The wait lasts from the caller's StasisStart until pbx-bridge gave up after the last leg.
    creates = [r for r in fake_asterisk.requests if r.rest == "POST /channels/create"]
    office_leg, mobile_leg = (r.params["channelId"] for r in creates)
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    last_leg_ended = event_time(fake_asterisk, "StasisEnd", mobile_leg)
    assert row.started_at.replace(tzinfo=None) == started.replace(tzinfo=None)
    assert row.ended_at.replace(tzinfo=None) >= last_leg_ended.replace(tzinfo=None)
    assert row.wait_seconds == pytest.approx(seconds_between(row.started_at, row.ended_at), abs=0.001)
    caller, bridge = call.channel_id, f"ct-{call.channel_id}"
    # Asterisk hung up each leg at its dial timeout, so only the caller and the bridge are left.
    assert call_requests(fake_asterisk) == [
        (f"POST /channels/{caller}/ring", 204),
        ("POST /bridges", 200),
        ("POST /channels/create", 200),
        (f"POST /channels/{office_leg}/dial", 204),
        ("POST /channels/create", 200),
        (f"POST /channels/{mobile_leg}/dial", 204),
        (f"DELETE /channels/{caller}", 204),
        (f"DELETE /bridges/{bridge}", 204),
    ]
    caller_hangup = next(r for r in fake_asterisk.requests if r.rest == f"DELETE /channels/{caller}")
    assert caller_hangup.params == {"reason": "normal"}


async def test_early_media_until_ring_timeout(database_url, company, database, fake_asterisk, tmp_path):
    """Lines that respond to the INVITE with 183 Session Progress instead of 180 Ringing, as
    provider trunks often do, were reached, so ringing them out is no answer rather than an
    unavailable channel."""
    from tests.calls.conftest import start_serve, write_config
    from models import Destination
    from sqlalchemy import update

    async with database.transaction() as session:
        await session.execute(update(Destination).values(ring_timeout=1))
    fake_asterisk.script_endpoint(OFFICE, NoAnswer(early_media=True))
    fake_asterisk.script_endpoint(MOBILE, NoAnswer(early_media=True))
    serve = await start_serve(write_config(tmp_path / "c.toml", database_url, fake_asterisk.url), fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
    finally:
        await serve.stop()

    assert row.outcome == "no-answer"
    assert row.hangup_side == "system"
    assert [attempt["status"] for attempt in row.attempts] == ["NOANSWER", "NOANSWER"]
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE, MOBILE]
    assert 2.0 <= row.wait_seconds < 4.0
    assert row.answered_at is None
    assert row.answered_by is None
    assert row.talk_seconds is None
    assert row.hangup_cause is None
    assert row.error is None
    assert row.tags == []
    assert row.recording is None
    assert fake_asterisk.live_channels() == []


async def test_caller_abandons_while_ringing(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, NoAnswer())
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing(OFFICE), timeout=5)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.2)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "abandoned"
    assert row.hangup_side == "caller"
    assert row.answered_at is None
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    ended = event_time(fake_asterisk, "StasisEnd", call.channel_id)
    assert row.wait_seconds == seconds_between(started, ended)
    # The line that was ringing missed the call, and the destination report counts it.
    assert row.attempts == [{"endpoint": OFFICE, "status": "CANCEL", "at": row.ended_at.isoformat()}]
    assert row.talk_seconds is None
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == "Normal Clearing"
    assert row.answered_by is None
    assert row.outbound_channel_id is None
    assert row.recording is None
    assert row.error is None
    assert row.tags == []
    assert fake_asterisk.live_channels() == []
    create = next(r for r in fake_asterisk.requests if r.rest == "POST /channels/create")
    caller, leg, bridge = call.channel_id, create.params["channelId"], f"ct-{call.channel_id}"
    # The ringing leg is hung up when the caller leaves, and the caller is not answered.
    assert call_requests(fake_asterisk) == [
        (f"POST /channels/{caller}/ring", 204),
        ("POST /bridges", 200),
        ("POST /channels/create", 200),
        (f"POST /channels/{leg}/dial", 204),
        (f"DELETE /channels/{leg}", 204),
        (f"DELETE /bridges/{bridge}", 204),
    ]


async def test_caller_gone_as_line_answers(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.3))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    # The caller's answer request is slow, and the caller hangs up while it waits.
    fake_asterisk.delay_responses(f"POST /channels/{call.channel_id}/answer", 0.3)
    await fake_asterisk.wait_for(
        lambda: any(event.get("dialstatus") == "ANSWER" for event in fake_asterisk.events), timeout=5
    )
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.1)

    row = await journal_row(database, call.channel_id)

    # The caller was never answered nor connected, so the call was abandoned.
    assert row.outcome == "abandoned"
    assert row.hangup_side == "caller"
    assert row.hangup_cause == 16
    assert row.answered_at is None
    assert row.answered_by is None
    assert row.talk_seconds is None
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    ended = event_time(fake_asterisk, "StasisEnd", call.channel_id)
    assert row.wait_seconds == seconds_between(started, ended)
    # The line did answer, too late for the caller.
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.recording is None
    assert row.error is None
    assert row.tags == []
    create = next(r for r in fake_asterisk.requests if r.rest == "POST /channels/create")
    caller, leg, bridge = call.channel_id, create.params["channelId"], f"ct-{call.channel_id}"
    assert call_requests(fake_asterisk) == [
        (f"POST /channels/{caller}/ring", 204),
        ("POST /bridges", 200),
        ("POST /channels/create", 200),
        (f"POST /channels/{leg}/dial", 204),
        (f"POST /channels/{caller}/answer", 404),
        (f"DELETE /channels/{leg}", 204),
        (f"DELETE /bridges/{bridge}", 204),
    ]
    assert fake_asterisk.live_channels() == []


async def test_caller_gone_before_hunt_rings_nobody(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, NoAnswer())
    # The ring request is slow, and the caller hangs up before pbx-bridge reaches the hunt.
    fake_asterisk.delay_responses("POST /channels/*/ring", 0.3)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.1)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "abandoned"
    assert row.hangup_side == "caller"
    assert row.hangup_cause == 16
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    ended = event_time(fake_asterisk, "StasisEnd", call.channel_id)
    assert row.wait_seconds == seconds_between(started, ended)
    # No destination rang, so none has an attempt to count as missed.
    assert row.attempts == []
    assert row.error is None
    rest = [r.rest for r in fake_asterisk.requests]
    assert "POST /bridges" not in rest
    assert "POST /channels/create" not in rest
    assert fake_asterisk.live_channels() == []
    assert fake_asterisk.pbx.bridges == {}


async def test_caller_gone_during_hunt_stops_it(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Busy(after=0.05))
    fake_asterisk.script_endpoint(MOBILE, NoAnswer())
    # pbx-bridge hangs up the busy leg before it dials on. That request is slow, and the caller
    # hangs up meanwhile.
    fake_asterisk.delay_responses("DELETE /channels/*", 0.3)
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(
        lambda: any(event.get("dialstatus") == "BUSY" for event in fake_asterisk.events), timeout=5
    )
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.1)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "abandoned"
    assert row.hangup_side == "caller"
    assert row.hangup_cause == 16
    # The mobile line was not dialed for a caller who had hung up.
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["BUSY"]
    creates = [r for r in fake_asterisk.requests if r.rest == "POST /channels/create"]
    assert [r.params["endpoint"] for r in creates] == [OFFICE]
    assert fake_asterisk.live_channels() == []


async def test_start_event_with_nan_handled(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    # NaN is not JSON, and orjson rejects the frame. A frame that pbx-bridge skipped would leave
    # its caller in Stasis, with no call flow to forward the call.
    call = await fake_asterisk.incoming_call(
        TRACKED_DIALED, caller_number="+79161234567", stasis_args=[TRACKED_DIALED, float("nan")]
    )

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.dialed_raw == TRACKED_DIALED
    assert row.answered_by == OFFICE
    assert "malformed" not in serve.log


async def test_unknown_number_goes_to_default_destination(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call("74950000000", caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert row.attribution == "unknown-number"
    assert row.company_id is None
    assert row.source_id is None
    assert row.dialed_number == "+74950000000"
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.hangup_side == "company"
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.talk_seconds >= 0.1
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == "Normal Clearing"
    assert row.caller_raw == "+79161234567"
    assert row.caller_number == "+79161234567"
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.error is None
    assert row.tags == []
    assert row.recording.state == "done"
    assert row.recording.name == f"calltracking/{row.started_at:%Y/%m/%d}/{call.channel_id}"
    assert row.recording.duration_seconds == int(row.talk_seconds)
    # The default destination rings for calls.ring_timeout, 20 s unless configured.
    create = next(r for r in fake_asterisk.requests if r.rest == "POST /channels/create")
    dial = next(r for r in fake_asterisk.requests if r.path.endswith("/dial"))
    assert create.params["endpoint"] == OFFICE
    assert dial.params["timeout"] == "20"
    assert call.fell_back is None


@pytest.mark.parametrize("caller", ["anonymous", "", "alice"])
async def test_non_numeric_caller_id_kept_raw(serve, fake_asterisk, database, caller):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number=caller)

    row = await journal_row(database, call.channel_id)

    assert row.caller_raw == caller
    assert row.caller_number is None
    assert row.first_time_caller is None
    assert row.attribution == "static"
    assert row.dialed_number == TRACKED
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.hangup_side == "company"
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.talk_seconds >= 0.1
    assert row.hangup_cause == 16
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.error is None
    assert row.tags == []
    assert row.recording.state == "done"
    assert row.recording.name == f"calltracking/{row.started_at:%Y/%m/%d}/{call.channel_id}"
    create = next(r for r in fake_asterisk.requests if r.rest == "POST /channels/create")
    # A raw caller id still reaches the company line, and an empty one sets none.
    assert create.params.get("variables") == ({"CALLERID(num)": caller} if caller else None)


async def test_caller_id_not_text_ignored(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    # ARI's CallerID model has strings, but a proxy or a bug could send other JSON values.
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number=79161234567, caller_name=["Ivan"])

    row = await journal_row(database, call.channel_id)

    assert call.fell_back is None
    assert row.caller_raw == ""
    assert row.caller_number is None
    assert row.caller_name is None
    assert row.outcome == "answered"


def test_start_event_odd_objects_ignored():
    from pbx_bridge.calls.flow import CallFlow
    from pbx_bridge.config import Config

    # ARI's Channel model has objects here; another JSON value must not stop the call's setup.
    event = {
        "type": "StasisStart",
        "args": [],
        "channel": {"id": "1796461574.7", "caller": "79161234567", "dialplan": ["x"], "channelvars": "y"},
    }

    flow = CallFlow(event, ari=None, journal=None, config=Config(), registry=None)

    assert flow.dialed_raw == ""
    assert flow.caller.raw == ""
    assert flow.caller.e164 is None
    assert flow.caller_name is None
    assert flow.linkedid == "1796461574.7"


@pytest.mark.parametrize("stamp", [1796461574, ["2026-12-05T09:30:00.000+0000"], "2026-12-05"])
def test_event_time_odd_timestamp_now(stamp):
    before = datetime.now(timezone.utc)

    at = flow_event_time({"type": "StasisStart", "timestamp": stamp})

    assert before <= at <= datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("status", "message"),
    [(500, "Internal Server Error"), (409, "Recording with the same name already in progress")],
)
async def test_recording_failure_does_not_affect_call(serve, fake_asterisk, database, status, message):
    fake_asterisk.fail_recordings(status=status, message=message)
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert call.fell_back is None
    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.answered_by == OFFICE
    assert row.talk_seconds is not None and row.talk_seconds >= 0.2
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.hangup_cause == 16
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.error is None
    assert row.tags == []
    record = next(r for r in fake_asterisk.requests if r.rest.endswith("/record"))
    assert record.status == status
    assert row.recording.name == record.params["name"]
    assert row.recording.format == "wav"
    assert row.recording.state == "failed"
    assert row.recording.duration_seconds is None
    assert row.recording.error.startswith("recording did not start: ")
    assert str(status) in row.recording.error
    assert message in row.recording.error
    assert fake_asterisk.live_channels() == []


async def _recording_event(fake_asterisk, call, event_type: str, **fields) -> LiveRecording:
    """Send an event about the call's recording, with `fields` over its own, once it is recorded;
    return the fake's recording."""
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(call.channel_id), timeout=5)
    await fake_asterisk.wait_for(lambda: bool(fake_asterisk.pbx.live_recordings), timeout=5)
    recording = next(iter(fake_asterisk.pbx.live_recordings.values()))
    bridge = fake_asterisk.pbx.bridges[recording.bridge_id]
    fake_asterisk.pbx.emit(set(bridge.apps), event_type, recording={**recording.to_json(), **fields})
    return recording


async def test_recording_failed_after_start(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    # Asterisk accepted the recording, then could not write its file. The fake's own
    # RecordingFinished follows when the bridge is destroyed, and the call flow ignores it.
    recording = await _recording_event(
        fake_asterisk, call, "RecordingFailed", state="failed", cause="could not open the file"
    )
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.3)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.hangup_side == "caller"
    assert row.answered_by == OFFICE
    assert row.talk_seconds >= 0.3
    assert row.hangup_cause == 16
    assert row.error is None
    assert row.tags == []
    assert row.recording.name == recording.name
    assert row.recording.state == "failed"
    assert row.recording.error == "could not open the file"
    assert row.recording.duration_seconds is None


async def test_second_call_is_not_first_time(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.05))
    first = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await journal_row(database, first.channel_id)
    second = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="8 916 123-45-67")

    row = await journal_row(database, second.channel_id)

    assert row.caller_number == "+79161234567"
    assert row.first_time_caller is False


async def test_websocket_drop_mid_call_keeps_control(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(call.channel_id), timeout=5)

    await fake_asterisk.drop_websockets(refuse_for=0.3)
    await fake_asterisk.wait_for(lambda: fake_asterisk.websocket_count > 0, timeout=10)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.1)

    row = await journal_row(database, call.channel_id)
    assert row.outcome == "answered"
    assert row.hangup_side == "caller"
    assert row.answered_by == OFFICE
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", call.channel_id)
    assert row.wait_seconds == seconds_between(started, answered)
    assert row.talk_seconds == seconds_between(answered, ended)
    assert row.talk_seconds >= 0.3
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == "Normal Clearing"
    assert row.error is None
    assert "ended-while-disconnected" not in row.tags
    assert row.tags == []
    assert [attempt["endpoint"] for attempt in row.attempts] == [OFFICE]
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.recording.state == "done"
    assert row.recording.name == f"calltracking/{row.started_at:%Y/%m/%d}/{call.channel_id}"
    assert row.recording.duration_seconds == int(row.talk_seconds)
    assert fake_asterisk.live_channels() == []
    # After the reconnect pbx-bridge read the application's channels, then tore the call down.
    rest = [r.rest for r in fake_asterisk.requests]
    reconciled = [index for index, request in enumerate(rest) if request == "GET /applications/calltracking"]
    assert len(reconciled) == 2
    leg, bridge = row.outbound_channel_id, f"ct-{call.channel_id}"
    assert rest[reconciled[1] + 1:] == [f"DELETE /channels/{leg}", f"DELETE /bridges/{bridge}"]


async def test_call_ended_while_disconnected_is_finished(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(call.channel_id), timeout=5)

    await fake_asterisk.drop_websockets(refuse_for=0.5)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16)

    row = await journal_row(database, call.channel_id)
    assert row.outcome == "answered"
    assert row.hangup_side == "caller"
    assert "ended-while-disconnected" in row.tags
    # The hangup's event was lost with the websocket: the row ends when pbx-bridge reconnected.
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    hung_up = event_time(fake_asterisk, "StasisEnd", call.channel_id)
    assert row.ended_at >= hung_up
    assert row.talk_seconds >= seconds_between(answered, hung_up)
    assert row.hangup_cause is None
    assert fake_asterisk.live_channels() == []


async def test_call_answered_while_disconnected(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.3, hangup_after=1.0))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing(OFFICE), timeout=5)

    # The line answers during the outage, and its Dial ANSWER is lost with the websocket.
    await fake_asterisk.drop_websockets(refuse_for=0.6)
    await fake_asterisk.wait_for(lambda: fake_asterisk.websocket_count > 0, timeout=10)

    row = await journal_row(database, call.channel_id)
    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.answered_by == OFFICE
    assert [attempt["status"] for attempt in row.attempts] == ["ANSWER"]
    assert row.tags == ["answered-while-disconnected"]
    assert row.error is None
    # The answer is timed at the reconnect, so the wait time includes the rest of the outage.
    started = event_time(fake_asterisk, "StasisStart", call.channel_id)
    answered = event_time(fake_asterisk, "Dial", row.outbound_channel_id, dialstatus="ANSWER")
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.wait_seconds >= seconds_between(started, answered)
    assert row.talk_seconds <= seconds_between(answered, ended)
    assert row.wait_seconds + row.talk_seconds == pytest.approx(seconds_between(started, ended), abs=0.01)
    assert row.hangup_cause == 16
    add_channel = next(r for r in fake_asterisk.requests if r.path.endswith("/addChannel"))
    assert add_channel.params["channel"] == f"{call.channel_id},{row.outbound_channel_id}"
    assert add_channel.status == 204
    assert row.recording.state == "done"
    assert fake_asterisk.live_channels() == []


async def test_leg_rang_out_while_disconnected(serve, fake_asterisk, database):
    from sqlalchemy import update

    from models import Destination

    async with database.transaction() as session:
        await session.execute(update(Destination).where(Destination.endpoint == OFFICE).values(ring_timeout=1))
    fake_asterisk.script_endpoint(OFFICE, NoAnswer())
    fake_asterisk.script_endpoint(MOBILE, Answer(after=0.1, hangup_after=0.5))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing(OFFICE), timeout=5)
    # pbx-bridge reads the leg's Dial RINGING before the outage: a leg that left without one
    # would be journaled as unavailable.
    await asyncio.sleep(0.2)

    # The office's dial timeout ends its leg during the outage.
    await fake_asterisk.drop_websockets(refuse_for=1.5)
    await fake_asterisk.wait_for(lambda: fake_asterisk.websocket_count > 0, timeout=10)

    row = await journal_row(database, call.channel_id)
    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.answered_by == MOBILE
    assert [attempt["status"] for attempt in row.attempts] == ["NOANSWER", "ANSWER"]
    # The call itself did not end during the outage, and its end time is Asterisk's.
    assert "ended-while-disconnected" not in row.tags
    ended = event_time(fake_asterisk, "StasisEnd", row.outbound_channel_id)
    assert row.ended_at.replace(tzinfo=None) == ended.replace(tzinfo=None)
    assert row.hangup_cause == 16
    assert row.error is None
    assert row.recording.state == "done"
    assert fake_asterisk.live_channels() == []


async def test_no_destination_sends_caller_to_fallback(database_url, company, database, fake_asterisk, tmp_path):
    from sqlalchemy import delete

    from models import Destination
    from tests.calls.conftest import start_serve, write_config

    async with database.transaction() as session:
        await session.execute(delete(Destination))
    config = write_config(tmp_path / "c.toml", database_url, fake_asterisk.url, calls={"default_destination": ""})
    serve = await start_serve(config, fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
    finally:
        await serve.stop()

    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert row.error == f"no destination to forward to: company {company} has no destinations"
    assert row.tags == ["fallback"]
    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["extension"] == TRACKED_DIALED


async def test_unknown_number_without_default_falls_back(database_url, database, fake_asterisk, tmp_path):
    from tests.calls.conftest import start_serve, write_config

    config = write_config(tmp_path / "c.toml", database_url, fake_asterisk.url, calls={"default_destination": ""})
    serve = await start_serve(config, fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call("74950000000", caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
    finally:
        await serve.stop()

    assert row.attribution == "unknown-number"
    assert row.outcome == "failed"
    assert row.error == (
        "no destination to forward to: the number is not tracked and calls.default_destination is empty"
    )
    assert row.tags == ["fallback"]
    assert call.fell_back is not None
    assert call.fell_back["context"] == "calltracking-fallback"
    assert call.fell_back["extension"] == "74950000000"


async def test_answered_call_requests_in_order(database_url, company, database, fake_asterisk, tmp_path):
    from tests.calls.conftest import start_serve, write_config

    config = write_config(tmp_path / "c.toml", database_url, fake_asterisk.url, recording={"format": "gsm"})
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))
    serve = await start_serve(config, fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
        requests = [r for r in fake_asterisk.requests if not r.path.startswith("/applications")]
    finally:
        await serve.stop()

    caller, leg, bridge = call.channel_id, row.outbound_channel_id, f"ct-{call.channel_id}"
    assert [(r.rest, r.status) for r in requests] == [
        (f"POST /channels/{caller}/ring", 204),
        ("POST /bridges", 200),
        ("POST /channels/create", 200),
        (f"POST /channels/{leg}/dial", 204),
        (f"POST /channels/{caller}/answer", 204),
        (f"POST /bridges/{bridge}/addChannel", 204),
        (f"POST /bridges/{bridge}/record", 201),
        (f"DELETE /channels/{caller}", 204),
        (f"DELETE /bridges/{bridge}", 204),
    ]
    params = {r.rest: r.params for r in requests}
    assert params["POST /bridges"]["type"] == "mixing"
    assert params["POST /bridges"]["bridgeId"] == bridge
    assert params["POST /channels/create"]["channelId"] == leg
    assert params["POST /channels/create"]["endpoint"] == OFFICE
    assert params[f"POST /channels/{leg}/dial"]["timeout"] == "20"
    assert params[f"POST /bridges/{bridge}/addChannel"]["channel"] == f"{caller},{leg}"
    record = params[f"POST /bridges/{bridge}/record"]
    assert record["format"] == "gsm"
    assert record["name"] == f"calltracking/{row.started_at:%Y/%m/%d}/{caller}"
    assert row.recording.format == "gsm"
    assert row.recording.name == record["name"]


async def test_company_line_gets_caller_id(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="8 916 123-45-67", caller_name="Ivan")

    row = await journal_row(database, call.channel_id)

    create = next(r for r in fake_asterisk.requests if r.rest == "POST /channels/create")
    dial = next(r for r in fake_asterisk.requests if r.path.endswith("/dial"))
    assert create.params["endpoint"] == OFFICE
    assert create.params["appArgs"] == f"outbound,{call.channel_id}"
    assert create.params["channelId"] == row.outbound_channel_id
    assert create.params["variables"] == {"CALLERID(num)": "+79161234567", "CALLERID(name)": "Ivan"}
    assert dial.params["caller"] == call.channel_id
    assert dial.params["timeout"] == "20"


async def test_long_recording_name_fits_column(database_url, company, database, fake_asterisk, tmp_path):
    from tests.calls.conftest import start_serve, write_config

    # The recordings table keeps names of up to 255 characters.
    template = "calltracking/" + "f" * 240 + "/{date}/{call_id}"
    config = write_config(tmp_path / "c.toml", database_url, fake_asterisk.url, recording={"name_template": template})
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))
    serve = await start_serve(config, fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        row = await journal_row(database, call.channel_id)
    finally:
        await serve.stop()

    record = next(r for r in fake_asterisk.requests if r.rest.endswith("/record"))
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.error is None
    assert row.recording.state == "done"
    assert len(row.recording.name) == 255
    assert row.recording.name == record.params["name"]


async def test_long_channel_id_answered(serve, fake_asterisk, database):
    # Asterisk's channel ids reach 149 characters (AST_MAX_PUBLIC_UNIQUEID in channel.h), because
    # a systemname of up to 127 characters comes first. This one fills the 64-character column.
    channel_id = "asterisk-" + "a" * 42 + "-1796461574.1"
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567", channel_id=channel_id)

    row = await journal_row(database, channel_id)

    create = next(r for r in fake_asterisk.requests if r.rest == "POST /channels/create")
    assert call.channel_id == channel_id
    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert row.answered_by == OFFICE
    assert row.outbound_channel_id == create.params["channelId"]
    assert len(row.outbound_channel_id) <= 64
    assert row.error is None
    assert row.recording.state == "done"


async def test_channel_id_over_column_answered(serve, fake_asterisk, database):
    channel_id = "asterisk-" + "a" * 127 + "-1796461574.1"
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567", channel_id=channel_id)

    row = await journal_row(database, stored_channel_id(channel_id))

    assert call.fell_back is None
    assert row.channel_id.startswith(channel_id[:40])
    assert row.linkedid == channel_id[:64]
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.error is None
    assert row.recording.state == "done"
    assert row.recording.name.endswith(channel_id)


@pytest.mark.parametrize("cause", [2**40, -1, "busy"])
async def test_invalid_hangup_cause_not_journaled(serve, fake_asterisk, database, cause):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(call.channel_id), timeout=5)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=cause)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.hangup_side == "caller"
    assert row.hangup_cause is None
    assert row.hangup_cause_text is None
    assert row.error is None


@pytest.mark.parametrize("text", [["Normal Clearing"], "x" * 300])
async def test_odd_cause_text_journaled(serve, fake_asterisk, database, text):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await fake_asterisk.wait_for(lambda: fake_asterisk.is_bridged(call.channel_id), timeout=5)
    channel = fake_asterisk.pbx.channels[call.channel_id]
    fake_asterisk.pbx.emit_channel(channel, "ChannelHangupRequest", cause=16, cause_txt=text)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.hangup_cause == 16
    assert row.hangup_cause_text == ("Normal Clearing" if isinstance(text, list) else text[:100])


@pytest.mark.parametrize("duration", [2**40, -5, "long"])
async def test_invalid_recording_duration_not_journaled(serve, fake_asterisk, database, duration):
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    # Asterisk's own RecordingFinished comes after this one, which the call flow reads first.
    await _recording_event(fake_asterisk, call, "RecordingFinished", state="done", duration=duration)
    await fake_asterisk.caller_hangs_up(call.channel_id, cause=16, after=0.1)

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "answered"
    assert row.hangup_cause == 16
    assert row.recording.state == "done"
    assert row.recording.duration_seconds is None


async def test_failing_destinations_journal_failed(serve, fake_asterisk, database):
    fake_asterisk.script_endpoint(OFFICE, Fail(cause=34))
    fake_asterisk.script_endpoint(MOBILE, Fail(cause=38))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")

    row = await journal_row(database, call.channel_id)

    assert row.outcome == "failed"
    assert row.hangup_side == "system"
    assert [attempt["status"] for attempt in row.attempts] == ["CONGESTION", "CHANUNAVAIL"]
    assert row.hangup_cause == 38
    assert fake_asterisk.live_channels() == []


async def test_call_survives_service_restart(database_url, company, database, fake_asterisk, tmp_path):
    from tests.calls.conftest import start_serve, write_config

    config = write_config(tmp_path / "c.toml", database_url, fake_asterisk.url)
    fake_asterisk.script_endpoint(OFFICE, Answer(after=1.5, hangup_after=0.3))
    first = await start_serve(config, fake_asterisk, tmp_path)
    try:
        call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
        await fake_asterisk.wait_for(lambda: fake_asterisk.is_ringing(OFFICE), timeout=10)
    finally:
        # Killed rather than stopped, as a crash would; also when the test fails before this.
        first.process.kill()
        await first.process.wait()
    await fake_asterisk.wait_for(lambda: fake_asterisk.websocket_count == 0, timeout=10)

    second = await start_serve(config, fake_asterisk, tmp_path)
    try:
        row = await journal_row(database, call.channel_id, timeout=20)
    finally:
        await second.stop()

    assert row.outcome == "answered"
    assert row.hangup_side == "company"
    assert "taken-over" in row.tags
    assert fake_asterisk.live_channels() == []


async def test_service_limits_events_to_those_it_reads(serve, fake_asterisk, database):
    from pbx_bridge.calls.stasis import EVENT_TYPES

    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.05))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await journal_row(database, call.channel_id)

    allowed, disallowed = fake_asterisk.event_filters["calltracking"]
    assert allowed == frozenset(EVENT_TYPES)
    assert disallowed == frozenset()
    assert {event["type"] for event in fake_asterisk.events} <= set(EVENT_TYPES)


async def test_asterisk_without_event_filter(database_url, company, database, tmp_path, monkeypatch):
    """Asterisk before 13.26 and 16.3 has no event filter and sends every event, RecordingStarted too."""
    from aiohttp import web

    from tests.calls.conftest import ARI_PASSWORD, ARI_USER, start_serve, write_config
    from tests.fake_asterisk import FakeAsterisk
    from tests.fake_asterisk.rest import RestApi

    async def no_event_filter(self, request):
        return web.json_response({"message": "Resource not found"}, status=404)

    monkeypatch.setattr(RestApi, "filter_application", no_event_filter)
    fake = FakeAsterisk(app="calltracking", username=ARI_USER, password=ARI_PASSWORD)
    await fake.start()
    try:
        config = write_config(tmp_path / "c.toml", database_url, fake.url)
        fake.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.2))
        serve = await start_serve(config, fake, tmp_path)
        try:
            call = await fake.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
            row = await journal_row(database, call.channel_id)
        finally:
            await serve.stop()
    finally:
        await fake.stop()

    assert "RecordingStarted" in {event["type"] for event in fake.events}
    assert "cannot set the ARI event filter" in serve.log
    assert row.outcome == "answered"
    assert row.error is None
    assert row.recording.state == "done"
    assert row.recording.error is None


async def test_debug_log_without_driver_statements(serve, fake_asterisk, database):
    # `serve` runs at DEBUG. aiosqlite logs every statement it runs there, with its parameter
    # values, which include caller numbers and, for the admin API's writes, webhook secrets.
    fake_asterisk.script_endpoint(OFFICE, Answer(after=0.05, hangup_after=0.1))
    call = await fake_asterisk.incoming_call(TRACKED_DIALED, caller_number="+79161234567")
    await journal_row(database, call.channel_id)

    lines = serve.log.splitlines()
    assert any(f"call {call.channel_id}: ended answered" in line for line in lines)
    assert [line for line in lines if " aiosqlite: " in line] == []
    assert "INSERT INTO calls" not in serve.log


class _QuietAri:
    """An ARI client whose requests all succeed and do nothing."""

    async def hangup(self, channel_id: str, reason: str | None = None) -> None:
        return None

    async def destroy_bridge(self, bridge_id: str) -> None:
        return None


async def test_abandoned_call_cancels_ringing_legs_only():
    from pbx_bridge.calls.flow import CallFlow, Leg, Phase
    from pbx_bridge.calls.routing import Destination
    from pbx_bridge.config import Config

    start = {"type": "StasisStart", "args": [TRACKED_DIALED], "channel": {"id": "1796461574.8"}}
    flow = CallFlow(start, ari=_QuietAri(), journal=None, config=Config(), registry=None)
    flow.phase = Phase.RINGING
    for channel_id, endpoint, status in (("leg-1", OFFICE, "RINGING"), ("leg-2", MOBILE, None)):
        flow.legs[channel_id] = Leg(channel_id, Destination(endpoint, 20), in_stasis=True, status=status)

    await flow.handle({"type": "StasisEnd", "timestamp": "2026-12-05T10:00:03.500+0000", "channel": {"id": "1796461574.8"}})

    assert flow.phase is Phase.ENDED
    # The line that rang missed the call. The one not ringing yet never showed it.
    assert flow.state.attempts == [{"endpoint": OFFICE, "status": "CANCEL", "at": "2026-12-05T10:00:03.500000+00:00"}]
