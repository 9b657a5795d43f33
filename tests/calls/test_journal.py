"""The journal on its own: rows written on the connection it keeps, and recovery when that connection fails."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timezone

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import selectinload

from models import Call, Delivery, Recording, RecordingState, Source, Webhook, utcnow
from pbx_bridge.calls import journal as journal_module
from pbx_bridge.calls.journal import (
    CallEnd,
    CallStart,
    Journal,
    RecordingEnd,
    RecordingStart,
    stored_recording_name,
)
from pbx_bridge.config import CallsConfig
from tests.calls.conftest import OFFICE, TRACKED_DIALED

AT = datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)


def _start(channel_id: str, caller: str | None = "+79161234567") -> CallStart:
    return CallStart(
        channel_id=channel_id,
        linkedid=channel_id,
        dialed_raw=TRACKED_DIALED,
        caller_raw=caller or "anonymous",
        caller_number=caller,
        caller_name=None,
        started_at=AT,
    )


def _end(outcome: str = "answered") -> CallEnd:
    return CallEnd(
        outcome=outcome,
        ended_at=AT.replace(minute=32),
        wait_seconds=4.0,
        talk_seconds=116.0,
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        hangup_side="caller",
        attempts=[{"endpoint": OFFICE, "status": "ANSWER"}],
        answered_at=AT.replace(second=4),
        answered_by=OFFICE,
        outbound_channel_id="leg-1",
    )


async def _row(database, channel_id: str) -> Call:
    async with database.sessions() as session:
        return await session.scalar(select(Call).where(Call.channel_id == channel_id))


async def _recording(database, call_id: int) -> Recording | None:
    async with database.sessions() as session:
        return await session.scalar(select(Recording).where(Recording.call_id == call_id))


async def _answer(journal: Journal, call_id: int, name: str, error: str | None = None) -> None:
    await journal.answered(
        call_id, at=AT.replace(second=4), endpoint=OFFICE, outbound_channel_id="leg-1",
        attempts=[{"endpoint": OFFICE, "status": "ANSWER"}],
        recording=RecordingStart(f"calltracking/{name}", "wav", AT.replace(second=5), error=error),
    )


async def _drop_kept_connection(journal: Journal) -> None:
    """Close the driver connection under the journal's kept one, as a server that dropped it would,
    while the journal has not noticed yet (as with a network failure that sent no FIN)."""
    journal_connection = journal._connections.connections[0]
    await (await journal_connection._connection.get_raw_connection()).driver_connection.close()
    journal_connection._direct.is_closed = lambda: False


async def test_first_call_is_first_time(database, company):
    journal = Journal(database, CallsConfig())
    try:
        await journal.open(_start("first"))
        await journal.open(_start("second"))
        await journal.open(_start("hidden", caller=None))
    finally:
        await journal.close()

    assert (await _row(database, "first")).first_time_caller is True
    assert (await _row(database, "second")).first_time_caller is False
    assert (await _row(database, "hidden")).first_time_caller is None


async def test_concurrent_calls_one_first_time(database, company):
    journal = Journal(database, CallsConfig())
    try:
        if database.is_sqlite:
            rows = await asyncio.gather(journal.open(_start("twin-1")), journal.open(_start("twin-2")))
        else:
            # An INSERT checks for an earlier call, then its foreign key check waits for the
            # company row locked here. Both INSERTs could wait there at once, on two connections.
            async with database.engine.connect() as locker:
                await locker.execute(text("SELECT id FROM companies WHERE id = :id FOR UPDATE"), {"id": company})
                opening = asyncio.gather(journal.open(_start("twin-1")), journal.open(_start("twin-2")))
                await _wait_for_lock_waits(database, 1)
                # Time for the second INSERT to reach the lock too, if nothing holds it back.
                await asyncio.sleep(0.3)
                await locker.rollback()
                rows = await opening
    finally:
        await journal.close()

    assert len(rows) == 2
    flags = [(await _row(database, channel_id)).first_time_caller for channel_id in ("twin-1", "twin-2")]
    assert sorted(flags) == [False, True]


async def _wait_for_lock_waits(database, count: int) -> None:
    """Wait until `count` backends of this database wait for a lock, for up to 10 s."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(100):
        async with database.engine.connect() as connection:
            if (await connection.scalar(query)) >= count:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} backends waited for a lock within 10 s")


async def test_row_through_answer_and_end(database, company):
    journal = Journal(database, CallsConfig())
    try:
        call_id, route = await journal.open(_start("full"))
        await journal.answered(
            call_id, at=AT.replace(second=4), endpoint=OFFICE, outbound_channel_id="leg-1",
            attempts=[{"endpoint": OFFICE, "status": "ANSWER"}],
            recording=RecordingStart("calltracking/full", "wav", AT.replace(second=4)),
        )
        await journal.finish(call_id, _end(), RecordingEnd(RecordingState.DONE, duration_seconds=116))
    finally:
        await journal.close()

    async with database.sessions() as session:
        row = await session.get(Call, call_id, options=[selectinload(Call.recording)])
    recording = row.recording
    assert route.company_id == company
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.talk_seconds == 116.0
    assert row.attempts == [{"endpoint": OFFICE, "status": "ANSWER"}]
    assert recording.state == "done"
    assert recording.duration_seconds == 116


async def test_reopened_channel_tagged_taken_over(database, company):
    journal = Journal(database, CallsConfig())
    try:
        first_id, _ = await journal.open(_start("taken"))
        # A second pbx-bridge process, or this one after a restart, opens the same channel's row.
        other = Journal(database, CallsConfig())
        try:
            second_id, route = await other.open(_start("taken"))
        finally:
            await other.close()
    finally:
        await journal.close()

    assert second_id == first_id
    assert route.company_id == company
    assert (await _row(database, "taken")).tags == ["taken-over"]


async def test_failed_write_replaces_connection(database, company):
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("broken"))
        await _drop_kept_connection(journal)
        try:
            await journal.answered(
                call_id, at=AT, endpoint=OFFICE, outbound_channel_id="leg-1", attempts=[], recording=None
            )
        except Exception as error:
            failed_with = error
        else:
            failed_with = None
        await journal.finish(call_id, _end(), None)
    finally:
        await journal.close()

    assert failed_with is not None
    assert journal._connections.connections[0]._connection is None
    assert (await _row(database, "broken")).outcome == "answered"


async def test_recording_written_after_failed_answer(database, company):
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("lost-recording"))
        # The answer's first statement, the call's UPDATE, then fails.
        await _drop_kept_connection(journal)
        with pytest.raises(Exception):
            await journal.answered(
                call_id, at=AT.replace(second=4), endpoint=OFFICE, outbound_channel_id="leg-1",
                attempts=[{"endpoint": OFFICE, "status": "ANSWER"}],
                recording=RecordingStart("calltracking/lost-recording", "wav", AT.replace(second=4)),
            )
        await journal.finish(call_id, _end(), RecordingEnd(RecordingState.DONE, duration_seconds=116))
    finally:
        await journal.close()

    async with database.sessions() as session:
        recording = await session.scalar(select(Recording).where(Recording.call_id == call_id))
    assert recording is not None
    assert recording.name == "calltracking/lost-recording"
    assert recording.state == "done"
    assert recording.duration_seconds == 116


async def test_recording_written_after_failed_answer_read(database, company, monkeypatch):
    async def webhooks_fail(self, company_id):
        # The company's webhooks are read again once their cache expires, here while the database is down.
        raise OperationalError("SELECT webhooks", {}, OSError("database is down"))

    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("answer-read-failed"))
        with monkeypatch.context() as patch:
            patch.setattr(Journal, "_company_webhooks", webhooks_fail)
            with pytest.raises(OperationalError):
                await _answer(journal, call_id, "answer-read-failed")
        await journal.finish(call_id, _end(), RecordingEnd(RecordingState.DONE, duration_seconds=116))
    finally:
        await journal.close()

    recording = await _recording(database, call_id)
    assert recording is not None
    assert recording.name == "calltracking/answer-read-failed"
    assert recording.state == "done"
    assert recording.duration_seconds == 116
    assert (await _row(database, "answer-read-failed")).outcome == "answered"


async def test_repeated_answer_rewrites_recording_row(database, company):
    """A write of the answer retried after its reply was lost finds its recording row written."""
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("answered-twice"))
        await _answer(journal, call_id, "first-try")
        await _answer(journal, call_id, "second-try", error="file exists")
        await journal.finish(call_id, _end(), RecordingEnd(RecordingState.DONE, duration_seconds=116))
    finally:
        await journal.close()

    async with database.sessions() as session:
        recordings = (await session.scalars(select(Recording).where(Recording.call_id == call_id))).all()
    assert [(r.name, r.state, r.error, r.duration_seconds) for r in recordings] == [
        ("calltracking/second-try", "failed", "file exists", None)
    ]
    assert (await _row(database, "answered-twice")).outcome == "answered"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_idle_connection_ended_by_server_replaced(database, company):
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("restarted"))
        raw = await journal._connections.connections[0]._connection.get_raw_connection()
        driver = raw.driver_connection
        old_pid = driver.get_server_pid()
        # The server ends the idle connection, as a PostgreSQL restart does.
        async with database.engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
        for _ in range(100):
            if driver.is_closed():
                break
            await asyncio.sleep(0.05)
        await _answer(journal, call_id, "restarted")
        raw = await journal._connections.connections[0]._connection.get_raw_connection()
        new_pid = raw.driver_connection.get_server_pid()
    finally:
        await journal.close()

    assert driver.is_closed()
    assert new_pid != old_pid
    assert (await _row(database, "restarted")).answered_by == OFFICE


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_terminated_backend_retried_with_webhook(database, company, monkeypatch):
    monkeypatch.setattr(journal_module, "WRITE_LATER_DELAYS", (0.1,))
    async with database.transaction() as session:
        session.add(Webhook(company_id=company, url="http://127.0.0.1:9/hook", secret="s", events=["call.ended"]))
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("terminated"))
        raw = await journal._connections.connections[0]._connection.get_raw_connection()
        pid = raw.driver_connection.get_server_pid()
        async with database.engine.connect() as locker:
            # The row lock keeps the journal's UPDATE waiting, so the backend ends in the middle of it.
            await locker.execute(text("SELECT id FROM calls WHERE id = :id FOR UPDATE"), {"id": call_id})
            finishing = asyncio.create_task(journal.finish(call_id, _end(), None))
            await asyncio.sleep(0.3)
            async with database.engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await finishing
            await locker.rollback()
        await _background_writes_done(journal)
    finally:
        await journal.close()

    assert (await _row(database, "terminated")).outcome == "answered"
    async with database.sessions() as session:
        events = (await session.scalars(select(Delivery.event).where(Delivery.call_id == call_id))).all()
    assert events == ["call.ended"]


# With no webhook a write runs on the driver. With one it runs through SQLAlchemy with its outbox rows.
WEBHOOK_EVENTS = pytest.mark.parametrize("webhook_events", [[], ["call.answered", "call.ended"]], ids=["direct", "outbox"])


async def _add_webhook(database, company: int, events: list[str]) -> None:
    if events:
        async with database.transaction() as session:
            session.add(Webhook(company_id=company, url="http://127.0.0.1:9/hook", secret="s", events=events))


@WEBHOOK_EVENTS
async def test_answer_writes_row_and_recording(database, company, webhook_events):
    await _add_webhook(database, company, webhook_events)
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("answered"))
        answering_at = utcnow()
        await _answer(journal, call_id, "answered")
    finally:
        await journal.close()

    row = await _row(database, "answered")
    recording = await _recording(database, call_id)
    assert row.outcome == "in-progress"
    assert row.answered_at == AT.replace(second=4)
    assert row.answered_by == OFFICE
    assert row.outbound_channel_id == "leg-1"
    assert row.attempts == [{"endpoint": OFFICE, "status": "ANSWER"}]
    assert row.error is None
    assert row.updated_at >= answering_at
    assert recording.name == "calltracking/answered"
    assert recording.format == "wav"
    assert recording.state == "queued"
    assert recording.started_at == AT.replace(second=5)
    assert recording.duration_seconds is None
    assert recording.error is None


@WEBHOOK_EVENTS
async def test_finish_writes_each_error_to_its_row(database, company, webhook_events):
    await _add_webhook(database, company, webhook_events)
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("errors"))
        await _answer(journal, call_id, "errors")
        end = dataclasses.replace(_end(), error="dial plan fallback", tags=("fallback",))
        await journal.finish(call_id, end, RecordingEnd(RecordingState.FAILED, duration_seconds=3, error="disk full"))
    finally:
        await journal.close()

    row = await _row(database, "errors")
    recording = await _recording(database, call_id)
    assert row.outcome == "answered"
    assert row.ended_at == AT.replace(minute=32)
    assert row.wait_seconds == 4.0
    assert row.talk_seconds == 116.0
    assert row.hangup_cause == 16
    assert row.hangup_side == "caller"
    assert row.error == "dial plan fallback"
    assert row.tags == ["fallback"]
    assert recording.state == "failed"
    assert recording.duration_seconds == 3
    assert recording.error == "disk full"
    assert recording.started_at == AT.replace(second=5)


async def test_call_error_leaves_recording_error_empty(database, company):
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("call-error"))
        await _answer(journal, call_id, "call-error")
        end = dataclasses.replace(_end(), error="dial plan fallback")
        await journal.finish(call_id, end, RecordingEnd(RecordingState.DONE, duration_seconds=116))
    finally:
        await journal.close()

    row = await _row(database, "call-error")
    recording = await _recording(database, call_id)
    assert row.error == "dial plan fallback"
    assert recording.state == "done"
    assert recording.duration_seconds == 116
    assert recording.error is None


@WEBHOOK_EVENTS
async def test_long_values_cut_to_columns(database, company, webhook_events):
    await _add_webhook(database, company, webhook_events)
    # Asterisk's channel ids reach 149 characters, and the channel_id column takes 64.
    channel_id = "asterisk-" + "a" * 80 + "-1796461574.1"
    start = dataclasses.replace(_start(channel_id), caller_name="N" * 300)
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(start)
        # The same start apart from the last character: a call of its own.
        twin_id, _ = await journal.open(_start(channel_id[:-1] + "2"))
        await journal.finish(call_id, dataclasses.replace(_end(), hangup_cause_text="T" * 300), None)
        other = Journal(database, CallsConfig())
        try:
            taken_id, _ = await other.open(start)
        finally:
            await other.close()
    finally:
        await journal.close()

    async with database.sessions() as session:
        row = await session.get(Call, call_id)
    assert twin_id != call_id
    assert taken_id == call_id
    assert len(row.channel_id) == 64
    assert row.channel_id.startswith(channel_id[:40])
    assert row.linkedid == channel_id[:64]
    assert row.caller_name == "N" * 200
    assert row.hangup_cause_text == "T" * 100
    assert row.outcome == "answered"
    assert row.tags == ["taken-over"]


async def test_long_recording_name_fits_column(database, company):
    """A recording name longer than its column leaves the call's writes unharmed."""
    name = "calltracking/" + "d" * 250 + "/1796461574.1"
    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("long-recording"))
        await journal.answered(
            call_id, at=AT.replace(second=4), endpoint=OFFICE, outbound_channel_id="leg-1",
            attempts=[{"endpoint": OFFICE, "status": "ANSWER"}],
            recording=RecordingStart(name, "wav", AT.replace(second=5)),
        )
        await journal.finish(call_id, _end(), RecordingEnd(RecordingState.DONE, duration_seconds=116))
    finally:
        await journal.close()

    row = await _row(database, "long-recording")
    recording = await _recording(database, call_id)
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.error is None
    assert recording.name == stored_recording_name(name)
    assert len(recording.name) == 255
    assert recording.name.startswith(name[:200])
    assert recording.state == "done"
    assert recording.duration_seconds == 116
    # Two long names with the same start stay two names.
    assert stored_recording_name(name + "0") != stored_recording_name(name + "1")


async def test_deleted_source_in_cached_route(database, company):
    journal = Journal(database, CallsConfig())
    try:
        await journal.open(_start("cached"))
        # Deleted through the admin API while the router still keeps the number's settings.
        async with database.transaction() as session:
            await session.execute(delete(Source))
        call_id, route = await journal.open(_start("after-delete"))
    finally:
        await journal.close()

    row = await _row(database, "after-delete")
    assert row.id == call_id
    assert route.source_id is None
    assert row.source_id is None
    assert row.company_id == company
    assert row.attribution == "static"
    assert row.tags == []


async def test_unwritable_row_logged(database, company, monkeypatch, caplog):
    async def open_fails(self, start):
        # A failure that a retry meets again, unlike a database that is down.
        raise IntegrityError("INSERT INTO calls", {}, ValueError("constraint violated"))

    monkeypatch.setattr(journal_module, "WRITE_LATER_DELAYS", (0.1,))
    monkeypatch.setattr(Journal, "_open_once", open_fails)
    journal = Journal(database, CallsConfig())
    try:
        journal.write_later(_start("unwritable"), _end())
        await _background_writes_done(journal)
        deferred = len(journal._deferred)
    finally:
        await journal.close()

    lost = [record.getMessage() for record in caplog.records if "journal row not written" in record.getMessage()]
    assert deferred == 0
    assert len(lost) == 1
    assert "write failed: IntegrityError" in lost[0]
    assert '"channel_id": "unwritable"' in lost[0]
    assert '"outcome": "answered"' in lost[0]
    assert await _row(database, "unwritable") is None


async def test_unwritable_end_logged(database, company, monkeypatch, caplog):
    async def finish_fails(self, call_id, end, recording):
        raise IntegrityError("UPDATE calls", {}, ValueError("constraint violated"))

    journal = Journal(database, CallsConfig())
    try:
        call_id, _ = await journal.open(_start("unfinished"))
        monkeypatch.setattr(Journal, "_finish_once", finish_fails)
        await journal.finish(call_id, _end(), None)
        left_over = (dict(journal._rows), len(journal._deferred))
    finally:
        await journal.close()

    lost = [record.getMessage() for record in caplog.records if "not completed" in record.getMessage()]
    assert left_over == ({}, 0)
    assert len(lost) == 1
    assert f"journal row {call_id} not completed (write failed: IntegrityError)" in lost[0]
    assert '"outcome": "answered"' in lost[0]
    assert (await _row(database, "unfinished")).outcome == "in-progress"


async def test_write_later_after_failed_finish(database, company, monkeypatch):
    original = Journal._finish_once
    failures: list[int] = []

    async def finish_fails_once(self, call_id, end, recording):
        if not failures:
            failures.append(call_id)
            raise OperationalError("UPDATE calls", {}, OSError("database is down again"))
        await original(self, call_id, end, recording)

    monkeypatch.setattr(journal_module, "WRITE_LATER_DELAYS", (0.1,))
    monkeypatch.setattr(Journal, "_finish_once", finish_fails_once)
    journal = Journal(database, CallsConfig())
    try:
        journal.write_later(_start("flapping"), _end())
        await _background_writes_done(journal)
    finally:
        await journal.close()

    row = await _row(database, "flapping")
    assert len(failures) == 1
    assert row.id == failures[0]
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.tags == []


async def test_write_later_completes_inserted_row(database, company, monkeypatch):
    monkeypatch.setattr(journal_module, "WRITE_LATER_DELAYS", (0.1,))
    journal = Journal(database, CallsConfig())
    try:
        # An open that timed out after its INSERT committed leaves the row for write_later.
        call_id, _ = await journal.open(_start("inserted"))
        journal.write_later(_start("inserted"), _end())
        await _background_writes_done(journal)
    finally:
        await journal.close()

    row = await _row(database, "inserted")
    assert row.id == call_id
    assert row.outcome == "answered"
    assert row.answered_by == OFFICE
    assert row.tags == []


async def _background_writes_done(journal: Journal) -> None:
    """Wait up to 5 s for the journal's background writes to end."""
    for _ in range(50):
        if not journal._deferred:
            return
        await asyncio.sleep(0.1)
