"""The call journal: one row per call, opened at once and completed as the call goes on.

A call costs three short transactions: the row is opened when the call arrives, updated when a
destination answers (with the recording's row) and completed when the call and its recording
have ended. A crash at any point leaves the row as far as the call got. Deliveries to webhooks
and analytics go to the outbox in the same transaction as the change they report.

The writes are Core INSERT and UPDATE statements built once at import, so SQLAlchemy compiles
each of them once and the ORM's unit of work (change tracking, flush ordering) costs nothing per
call. They run on one connection the journal keeps open (`_JournalConnection`). The journal
keeps its own copy of each row in progress for the outbox's snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from models import Call, Outcome, Recording, RecordingState
from pbx_bridge.calls.routing import Route, Router
from pbx_bridge.config import CallsConfig
from pbx_bridge.delivery.outbox import company_webhooks, enqueue_call_event
from pbx_bridge.storage import Database

log = logging.getLogger("pbx_bridge.calls")

# Seconds between attempts to open a journal row while the database is briefly unreachable.
OPEN_RETRY_DELAYS = (0.2, 1.0)
# Seconds between attempts to write the row of a call that ended while the database was down.
# The last delay repeats until WRITE_LATER_FOR seconds have passed.
WRITE_LATER_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
WRITE_LATER_FOR = 3600.0
# Failures that mean the database cannot be used right now, as opposed to a bug.
JOURNAL_ERRORS = (OperationalError, InterfaceError, OSError, asyncio.TimeoutError)

_CALLS = Call.__table__
_RECORDINGS = Recording.__table__
# Parameters that select rows are named apart from the columns, because an UPDATE takes a
# parameter named after a column as that column's new value.
_INSERT_CALL = insert(_CALLS).returning(_CALLS.c.id)
# The first call of a caller to a company is the one that finds no earlier row.
_INSERT_FIRST_CALL = (
    insert(_CALLS)
    .values(
        first_time_caller=~exists()
        .where(_CALLS.c.company_id == bindparam("earlier_company_id"))
        .where(_CALLS.c.caller_number == bindparam("earlier_caller_number"))
    )
    .returning(_CALLS.c.id, _CALLS.c.first_time_caller)
)
_UPDATE_CALL = update(_CALLS).where(_CALLS.c.id == bindparam("row_id"))
_INSERT_RECORDING = insert(_RECORDINGS)
_UPDATE_RECORDING = update(_RECORDINGS).where(_RECORDINGS.c.call_id == bindparam("row_call_id"))


@dataclass(frozen=True)
class CallStart:
    channel_id: str
    linkedid: str | None
    dialed_raw: str
    caller_raw: str
    caller_number: str | None
    caller_name: str | None
    started_at: datetime


@dataclass(frozen=True)
class RecordingStart:
    name: str
    format: str
    started_at: datetime
    # Why Asterisk did not start the recording; None when it did.
    error: str | None = None


@dataclass(frozen=True)
class RecordingEnd:
    state: RecordingState
    duration_seconds: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class CallEnd:
    outcome: str
    ended_at: datetime
    wait_seconds: float
    talk_seconds: float | None
    hangup_cause: int | None
    hangup_cause_text: str | None
    hangup_side: str | None
    attempts: list[dict[str, Any]]
    answered_at: datetime | None = None
    answered_by: str | None = None
    outbound_channel_id: str | None = None
    error: str | None = None
    tags: tuple[str, ...] = ()


class Journal:
    def __init__(self, database: Database, calls: CallsConfig) -> None:
        self.database = database
        self._connection = _JournalConnection(database.engine)
        self.router = Router(calls)
        self.calls = calls
        # Company id -> (expiry, webhooks), kept as long as number settings (route_cache_seconds).
        self._webhooks: dict[int, tuple[float, list[Any]]] = {}
        # Rows of calls in progress as last written. They are never added to a session: they
        # give the outbox its snapshot and the tags to merge without a SELECT.
        self._rows: dict[int, Call] = {}
        self._recordings: dict[int, _RecordingRow] = {}
        # Background retries of writes that failed while the database was unreachable, each with
        # what to log if it never succeeds.
        self._deferred: dict[asyncio.Task[None], Callable[[str], None]] = {}

    async def open(self, start: CallStart) -> tuple[int, Route]:
        """Resolve the call's route and insert its row; return the row id and the route."""
        for delay in (*OPEN_RETRY_DELAYS, None):
            try:
                return await self._open_once(start)
            except IntegrityError:
                # A previous pbx-bridge process opened this call's row before it stopped.
                return await self._reopen(start)
            except JOURNAL_ERRORS as error:
                if delay is None:
                    raise
                log.warning(
                    "call %s: journal write failed (%s), retrying in %.1f s",
                    start.channel_id, type(error).__name__, delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _open_once(self, start: CallStart) -> tuple[int, Route]:
        async with self._connection.transaction() as connection:
            route = await self.router.resolve(connection, start.dialed_raw, start.started_at)
            values = {
                "channel_id": start.channel_id,
                "linkedid": start.linkedid,
                "caller_number": start.caller_number,
                "caller_raw": start.caller_raw[:200],
                "caller_name": start.caller_name[:200] if start.caller_name else None,
                "dialed_number": route.dialed_number,
                "dialed_raw": start.dialed_raw[:200],
                "company_id": route.company_id,
                "tracking_number_id": route.tracking_number_id,
                "source_id": route.source_id,
                "session_id": route.session_id,
                "attribution": route.attribution.value,
                "started_at": start.started_at,
                "outcome": Outcome.IN_PROGRESS.value,
                "tags": list(route.tags),
                "attempts": [],
            }
            if start.caller_number is not None and route.company_id is not None:
                row = (await connection.execute(_INSERT_FIRST_CALL, {
                    **values,
                    "earlier_company_id": route.company_id,
                    "earlier_caller_number": start.caller_number,
                })).one()
                call = Call(id=row.id, first_time_caller=row.first_time_caller, **values)
            else:
                row_id = (await connection.execute(_INSERT_CALL, values)).scalar_one()
                call = Call(id=row_id, first_time_caller=None, **values)
            await self._enqueue(connection, call, "call.started")
        self._rows[call.id] = call
        return call.id, route

    async def _reopen(self, start: CallStart) -> tuple[int, Route]:
        async with self._connection.transaction() as connection:
            route = await self.router.resolve(connection, start.dialed_raw, start.started_at)
            async with AsyncSession(bind=connection) as session:
                call = await session.scalar(select(Call).where(Call.channel_id == start.channel_id))
                if call is None:
                    raise LookupError(f"journal row of channel {start.channel_id} not found after a conflict")
                session.expunge(call)
            await self._update_call(connection, call, {"tags": sorted({*call.tags, "taken-over"})})
        self._rows[call.id] = call
        return call.id, route

    async def answered(
        self,
        call_id: int,
        *,
        at: datetime,
        endpoint: str,
        outbound_channel_id: str,
        attempts: list[dict[str, Any]],
        recording: RecordingStart | None,
    ) -> None:
        async with self._connection.transaction() as connection:
            call = await self._row(connection, call_id)
            await self._update_call(connection, call, {
                "answered_at": at,
                "answered_by": endpoint,
                "outbound_channel_id": outbound_channel_id,
                "attempts": list(attempts),
            })
            if recording is not None:
                row = _RecordingRow({
                    "call_id": call_id,
                    "name": recording.name,
                    "format": recording.format,
                    "state": (RecordingState.FAILED if recording.error else RecordingState.QUEUED).value,
                    "error": recording.error,
                    "started_at": recording.started_at,
                })
                self._recordings[call_id] = row
                await connection.execute(_INSERT_RECORDING, row.values)
            await self._enqueue(connection, call, "call.answered")
        if recording is not None:
            self._recordings[call_id].inserted = True

    async def finish(self, call_id: int, end: CallEnd, recording: RecordingEnd | None) -> None:
        """Complete the row, and the recording's row when the call had one.

        While the database is unreachable the write is retried in the background, so the call's
        task is free and the row is completed once the database is back.
        """
        try:
            await self._finish_once(call_id, end, recording)
        except JOURNAL_ERRORS as error:
            log.warning(
                "journal row %s: write failed (%s), retrying in the background",
                call_id, type(error).__name__,
            )
            self._retry_in_background(
                f"journal-finish-{call_id}",
                lambda: self._finish_once(call_id, end, recording),
                on_give_up=lambda reason: log.error(
                    "journal row %s not completed (%s): %s", call_id, reason,
                    json.dumps(dataclasses.asdict(end), default=str, ensure_ascii=False),
                ),
                cleanup=lambda: self._forget(call_id),
            )
            return
        self._forget(call_id)

    def _forget(self, call_id: int) -> None:
        self._rows.pop(call_id, None)
        self._recordings.pop(call_id, None)

    async def _finish_once(self, call_id: int, end: CallEnd, recording: RecordingEnd | None) -> None:
        async with self._connection.transaction() as connection:
            call = await self._row(connection, call_id)
            values: dict[str, Any] = {
                "outcome": end.outcome,
                "ended_at": end.ended_at,
                "wait_seconds": round(end.wait_seconds, 3),
                "talk_seconds": None if end.talk_seconds is None else round(end.talk_seconds, 3),
                "hangup_cause": end.hangup_cause,
                "hangup_cause_text": end.hangup_cause_text,
                "hangup_side": end.hangup_side,
                "attempts": list(end.attempts),
            }
            if end.answered_at is not None:
                values["answered_at"] = end.answered_at
                values["answered_by"] = end.answered_by
                values["outbound_channel_id"] = end.outbound_channel_id
            if end.error:
                values["error"] = end.error[:2000]
            if end.tags:
                values["tags"] = sorted({*call.tags, *end.tags})
            await self._update_call(connection, call, values)

            row = self._recordings.get(call_id)
            if recording is not None and row is not None and row.values["state"] != RecordingState.FAILED.value:
                await self._finish_recording(connection, row, recording)
            await self._enqueue(connection, call, "call.ended")

    async def _finish_recording(
        self, connection: AsyncConnection, row: _RecordingRow, recording: RecordingEnd
    ) -> None:
        changes: dict[str, Any] = {
            "state": recording.state.value,
            "duration_seconds": recording.duration_seconds,
        }
        if recording.error:
            changes["error"] = recording.error[:2000]
        row.values.update(changes)
        if row.inserted:
            await connection.execute(_UPDATE_RECORDING, {"row_call_id": row.values["call_id"], **changes})
        else:
            # The transaction of `answered` failed and took the INSERT with it: write the whole row now.
            await connection.execute(_INSERT_RECORDING, row.values)

    def write_later(self, start: CallStart, end: CallEnd) -> None:
        """Keep retrying the whole row of a call that ended while the database was unreachable."""

        async def write() -> None:
            call_id, _ = await self._open_once(start)
            await self._finish_once(call_id, end, None)
            self._forget(call_id)
            log.info("call %s: journal row written after the database came back", start.channel_id)

        self._retry_in_background(
            f"journal-{start.channel_id}", write,
            on_give_up=lambda reason: _log_lost_row(start, end, reason),
        )

    def _retry_in_background(
        self,
        name: str,
        write: Callable[[], Awaitable[None]],
        on_give_up: Callable[[str], None],
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        task = asyncio.create_task(self._retry(write, on_give_up), name=name)
        self._deferred[task] = on_give_up

        def done(_: asyncio.Task[None]) -> None:
            self._deferred.pop(task, None)
            if cleanup is not None:
                cleanup()

        task.add_done_callback(done)

    async def _retry(self, write: Callable[[], Awaitable[None]], on_give_up: Callable[[str], None]) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + WRITE_LATER_FOR
        delays = iter(WRITE_LATER_DELAYS)
        delay = next(delays)
        while True:
            await asyncio.sleep(delay)
            try:
                await write()
                return
            except JOURNAL_ERRORS as error:
                if loop.time() + delay > give_up_at:
                    on_give_up(f"database still unreachable: {type(error).__name__}")
                    return
                delay = next(delays, delay)

    async def close(self) -> None:
        """Stop retrying deferred writes; each one still unwritten goes to the log whole."""
        for task, on_give_up in list(self._deferred.items()):
            task.cancel()
            on_give_up("pbx-bridge stopped before the database came back")
        await asyncio.gather(*self._deferred, return_exceptions=True)
        await self._connection.close()

    async def _enqueue(self, connection: AsyncConnection, call: Call, event: str) -> None:
        async with AsyncSession(bind=connection) as session:
            webhooks: list[Any] = []
            if call.company_id is not None:
                now = time.monotonic()
                cached = self._webhooks.get(call.company_id)
                if cached is None or cached[0] <= now:
                    webhooks = await company_webhooks(session, call.company_id)
                    self._webhooks[call.company_id] = (now + self.calls.route_cache_seconds, webhooks)
                else:
                    webhooks = cached[1]
            await enqueue_call_event(session, call, event, webhooks)

    async def _row(self, connection: AsyncConnection, call_id: int) -> Call:
        """Return the journal's copy of a row, read from the database when it is not at hand."""
        call = self._rows.get(call_id)
        if call is None:
            async with AsyncSession(bind=connection) as session:
                call = await session.get(Call, call_id)
                if call is None:
                    raise LookupError(f"journal row {call_id} not found")
                # Detached, so that the ORM never writes it: the journal's UPDATEs do.
                session.expunge(call)
            self._rows[call_id] = call
        return call

    async def _update_call(self, connection: AsyncConnection, call: Call, values: dict[str, Any]) -> None:
        """Write `values` to the row and to the journal's copy of it."""
        await connection.execute(_UPDATE_CALL, {"row_id": call.id, **values})
        for name, value in values.items():
            setattr(call, name, value)


class _JournalConnection:
    """The connection the journal writes on, kept open from one write to the next.

    A checkout from the pool and the rollback on its return cost about as much CPU as a journal
    write. So the journal keeps one connection and runs its transactions on it one at a time.
    A connection that failed is closed, and the next write opens another.
    """

    # NOTE: one connection runs one journal write at a time. At about 1 ms of wall time per
    # write on a local PostgreSQL (an estimate) and three writes per call, that caps the journal
    # near 300 new calls a second. More needs a few such connections or group commit.

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Yield the connection inside a transaction, committed on success, rolled back on error."""
        async with self._lock:
            if self._connection is None:
                self._connection = await self.engine.connect()
            connection = self._connection
            try:
                async with connection.begin():
                    yield connection
            except BaseException:
                # The failure may have broken the connection (a lost server, a cancelled
                # statement): a new one costs milliseconds, a broken one fails every call.
                self._connection = None
                await _discard(connection)
                raise

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await _discard(self._connection)
                self._connection = None


async def _discard(connection: AsyncConnection) -> None:
    try:
        await connection.invalidate()
        await connection.close()
    except Exception as error:
        log.debug("journal connection did not close cleanly: %s", type(error).__name__)


@dataclass
class _RecordingRow:
    """A recording row as the journal last wrote it, and whether its INSERT committed."""

    values: dict[str, Any]
    inserted: bool = False


def _log_lost_row(start: CallStart, end: CallEnd, reason: str) -> None:
    """Put a row that could not be written into the log, as JSON, so an operator can restore it."""
    row = {"start": dataclasses.asdict(start), "end": dataclasses.asdict(end)}
    log.error(
        "call %s: journal row not written (%s): %s",
        start.channel_id, reason, json.dumps(row, default=str, ensure_ascii=False),
    )
