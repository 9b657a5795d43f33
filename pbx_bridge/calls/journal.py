"""The call journal: one row per call, opened at once and completed as the call goes on.

A call costs three short transactions: the row is opened when the call arrives, updated when a
destination answers (with the recording's row) and completed when the call and its recording
have ended. A crash at any point leaves the row as far as the call got. On PostgreSQL a write
that adds no outbox rows is one statement: the call's UPDATE runs in a WITH clause of the
recording's INSERT. Deliveries to webhooks
and analytics go to the outbox in the same transaction as the change they report.

The writes are Core INSERT and UPDATE statements built once at import, so SQLAlchemy compiles
each of them once and the ORM's unit of work (change tracking, flush ordering) costs nothing per
call. They run on connections the journal keeps open (`_JournalConnection`): on the driver
underneath (storage/direct.py) when a write has no outbox rows, which is the common case, and
through SQLAlchemy in one transaction when it has. The journal keeps its own copy of each row in
progress for the outbox's snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from functools import lru_cache

from sqlalchemy import String, bindparam, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.dml import UpdateBase

from models import Call, Outcome, Recording, RecordingState, utcnow
from pbx_bridge.calls.routing import Route, Router
from pbx_bridge.config import CallsConfig
from pbx_bridge.delivery.outbox import company_webhooks, enqueue_call_event, may_enqueue
from pbx_bridge.storage import Database
from pbx_bridge.storage.direct import DirectConnection

log = logging.getLogger("pbx_bridge.calls")

# Seconds between attempts to open a journal row while the database is briefly unreachable.
OPEN_RETRY_DELAYS = (0.2, 1.0)
# Seconds between attempts to write the row of a call that ended while the database was down.
# The last delay repeats until WRITE_LATER_FOR seconds have passed.
WRITE_LATER_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
WRITE_LATER_FOR = 3600.0
# Failures that mean the database cannot be used right now, as opposed to a bug.
JOURNAL_ERRORS = (OperationalError, InterfaceError, OSError, asyncio.TimeoutError)
# Connections the journal keeps on PostgreSQL. A write that waits, such as an UPDATE of a row
# that another transaction has locked, holds one of them, and other calls write on the rest.
# SQLite lets one writer in at a time, so there the journal keeps one.
POSTGRES_CONNECTIONS = 4

_CALLS = Call.__table__
_CALL_COLUMNS = tuple(column.key for column in _CALLS.columns if column.key != "id")
# Maximum length of each string column of calls. Longer values are cut to fit, because PostgreSQL
# would reject the whole write and leave the row in progress.
_CALL_LENGTHS = {
    column.key: column.type.length
    for column in _CALLS.columns
    if isinstance(column.type, String) and column.type.length is not None
}
_RECORDINGS = Recording.__table__
# Parameters that select rows are named apart from the columns, because an UPDATE takes a
# parameter named after a column as that column's new value.
_INSERT_CALL = insert(_CALLS).returning(_CALLS.c.id, _CALLS.c.first_time_caller)
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
_RECORDING_COLUMNS = tuple(column.key for column in _RECORDINGS.columns if column.key != "id")


def _upsert_recording(dialect_insert: Any) -> UpdateBase:
    """Return the statement that writes a whole recording row, over the call's earlier one if any.

    Its parameters are named "recording_<column>", so that none shares a name with a column of
    calls in the statement that also updates the call. Writing the whole row keeps it correct
    when a write is retried after a lost reply, or when the answer's write failed after its commit.
    """
    statement = dialect_insert(_RECORDINGS).values({
        name: bindparam(f"recording_{name}", type_=_RECORDINGS.c[name].type) for name in _RECORDING_COLUMNS
    })
    return statement.on_conflict_do_update(
        index_elements=[_RECORDINGS.c.call_id],
        set_={name: statement.excluded[name] for name in _RECORDING_COLUMNS if name != "call_id"},
    )


_UPSERT_RECORDING = {"postgresql": _upsert_recording(postgresql.insert), "sqlite": _upsert_recording(sqlite.insert)}


@lru_cache(maxsize=64)
def _update_call_and_recording(columns: frozenset[str]) -> UpdateBase:
    """Return PostgreSQL's one statement for a call's UPDATE of `columns` and its recording's write.

    The UPDATE runs in a WITH clause of the recording's INSERT, so the two commit together in one
    round trip. Its parameters are the columns prefixed with "call_", and "row_id".
    """
    # SQLAlchemy also adds to the UPDATE's SET every parameter named like a column of calls, so
    # no parameter of this statement may be: an assertion below checks the prefixes at import.
    call_update = (
        update(_CALLS)
        .where(_CALLS.c.id == bindparam("row_id"))
        .values({name: bindparam(f"call_{name}", type_=_CALLS.c[name].type) for name in sorted(columns)})
        .cte("call_update")
    )
    return _UPSERT_RECORDING["postgresql"].add_cte(call_update)


assert not any(
    name == "row_id" or name.startswith(("call_", "recording_")) for name in _CALL_COLUMNS
), "a column of calls is named like a parameter of _update_call_and_recording"


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
        size = 1 if database.engine.dialect.name == "sqlite" else POSTGRES_CONNECTIONS
        self._connections = _JournalConnections(database.engine, size)
        self.router = Router(calls)
        self.calls = calls
        # Company id -> (expiry, webhooks), kept as long as number settings (route_cache_seconds).
        self._webhooks: dict[int, tuple[float, list[Any]]] = {}
        # Rows of calls in progress as last written: they give the outbox its snapshot and the
        # tags to merge without a SELECT. Recording rows by call id, as their columns' values.
        self._rows: dict[int, _Row] = {}
        self._recordings: dict[int, dict[str, Any]] = {}
        # (company id, caller number) -> the lock that row INSERTs of those calls take in turn.
        self._first_call_locks: dict[tuple[int, str], _KeyLock] = {}
        # Background retries of writes that failed while the database was unreachable, each with
        # what to log if it never succeeds.
        self._deferred: dict[asyncio.Task[None], Callable[[str], None]] = {}
        # Called after a write that added outbox rows has committed (the delivery worker's wake).
        self.on_enqueued: Callable[[], None] = lambda: None

    async def open(self, start: CallStart) -> tuple[int, Route]:
        """Resolve the call's route and insert its row; return the row id and the route."""
        for delay in (*OPEN_RETRY_DELAYS, None):
            try:
                return await self._open_once(start)
            except IntegrityError:
                # A previous pbx-bridge process opened this call's row before it stopped, or the
                # route names a company, number or source deleted since the router read it.
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
        route = await self.router.resolve(self._connections.transaction, start.dialed_raw, start.started_at)
        webhooks = await self._company_webhooks(route.company_id)
        values = {
            "channel_id": stored_channel_id(start.channel_id),
            "linkedid": start.linkedid,
            "caller_number": start.caller_number,
            "caller_raw": start.caller_raw,
            "caller_name": start.caller_name or None,
            "dialed_number": route.dialed_number,
            "dialed_raw": start.dialed_raw,
            "company_id": route.company_id,
            "tracking_number_id": route.tracking_number_id,
            "source_id": route.source_id,
            "session_id": route.session_id,
            "attribution": route.attribution.value,
            "started_at": start.started_at,
            "outcome": Outcome.IN_PROGRESS.value,
            "tags": list(route.tags),
            "attempts": [],
            "updated_at": utcnow(),
        }
        _cut_to_columns(values)
        statement, params = _INSERT_CALL, values
        caller_key: tuple[int, str] | None = None
        if start.caller_number is not None and route.company_id is not None:
            statement = _INSERT_FIRST_CALL
            params = {
                **values,
                "earlier_company_id": route.company_id,
                "earlier_caller_number": start.caller_number,
            }
            caller_key = (route.company_id, start.caller_number)
        writing = self._writing(route.session_id, "call.started", webhooks)
        async with self._first_call_lock(caller_key), writing as write:
            row_id, first_time = (await write.run([(statement, params)]))[0]
            # SQLite returns the flag as 0 or 1.
            values["first_time_caller"] = None if first_time is None else bool(first_time)
            row = _Row(row_id, values)
            await write.enqueue(row, "call.started", webhooks)
        self._rows[row.id] = row
        return row.id, route

    @asynccontextmanager
    async def _first_call_lock(self, caller_key: tuple[int, str] | None) -> AsyncIterator[None]:
        """Hold the lock of one caller's calls to one company while a row of them is inserted.

        Two INSERTs that run at once on separate connections would both find no earlier row and
        both mark their call as the caller's first.
        """
        if caller_key is None:
            yield
            return
        entry = self._first_call_locks.setdefault(caller_key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._first_call_locks[caller_key]

    async def _reopen(self, start: CallStart, tag: str | None = "taken-over") -> tuple[int, Route]:
        route = await self.router.resolve(self._connections.transaction, start.dialed_raw, start.started_at)
        row = await self._take_over(start, tag)
        if row is None:
            log.warning(
                "call %s: journal INSERT violated a constraint but no row of the channel exists; "
                "the cached route may name a deleted company, number or source, so it is read again",
                start.channel_id,
            )
            self.router.clear_cache()
            return await self._open_once(start)
        self._rows[row.id] = row
        return row.id, route

    async def _take_over(self, start: CallStart, tag: str | None) -> _Row | None:
        """Return the row an earlier attempt opened for this call with `tag` added, or None if none exists."""
        async with self._connections.transaction() as connection:
            async with AsyncSession(bind=connection) as session:
                channel_id = stored_channel_id(start.channel_id)
                call = await session.scalar(select(Call).where(Call.channel_id == channel_id))
                if call is None:
                    return None
                row = _Row.of(call)
            if tag is not None:
                await self._update_call(_SessionWrite(connection), row, {"tags": sorted({*row.tags, tag})})
        return row

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
        recording_row = None
        if recording is not None:
            # Kept before the reads and the write, so that `finish` writes the row if any of them fails.
            recording_row = self._recordings[call_id] = {
                "call_id": call_id,
                "name": stored_recording_name(recording.name),
                "format": recording.format,
                "state": (RecordingState.FAILED if recording.error else RecordingState.QUEUED).value,
                "duration_seconds": None,
                "error": recording.error,
                "started_at": recording.started_at,
            }
        row = await self._row(call_id)
        webhooks = await self._company_webhooks(row.company_id)
        async with self._writing(row.session_id, "call.answered", webhooks) as write:
            await self._update_call(write, row, {
                "answered_at": at,
                "answered_by": endpoint,
                "outbound_channel_id": outbound_channel_id,
                "attempts": list(attempts),
            }, recording_row)
            await write.enqueue(row, "call.answered", webhooks)

    async def finish(self, call_id: int, end: CallEnd, recording: RecordingEnd | None) -> None:
        """Complete the row, and the recording's row when the call had one.

        While the database is unreachable the write is retried in the background, so the call's
        task is free and the row is completed once the database is back. A write that fails
        otherwise is not retried, and the call's end goes to the log as JSON.
        """

        def give_up(reason: str) -> None:
            log.error(
                "journal row %s not completed (%s): %s", call_id, reason,
                json.dumps(dataclasses.asdict(end), default=str, ensure_ascii=False),
            )

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
                on_give_up=give_up,
                cleanup=lambda: self._forget(call_id),
            )
            return
        except Exception as error:
            log.exception("journal row %s: write failed and is not retried", call_id)
            give_up(f"write failed: {type(error).__name__}")
        self._forget(call_id)

    def _forget(self, call_id: int) -> None:
        self._rows.pop(call_id, None)
        self._recordings.pop(call_id, None)

    async def _finish_once(self, call_id: int, end: CallEnd, recording: RecordingEnd | None) -> None:
        row = await self._row(call_id)
        webhooks = await self._company_webhooks(row.company_id)
        async with self._writing(row.session_id, "call.ended", webhooks) as write:
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
                values["tags"] = sorted({*row.tags, *end.tags})
            # The whole recording row is written again, also when the answer's write of it failed.
            recording_row = self._recordings.get(call_id)
            if (
                recording is not None
                and recording_row is not None
                and recording_row["state"] != RecordingState.FAILED.value
            ):
                recording_row["state"] = recording.state.value
                recording_row["duration_seconds"] = recording.duration_seconds
                if recording.error:
                    recording_row["error"] = recording.error[:2000]
            await self._update_call(write, row, values, recording_row)
            await write.enqueue(row, "call.ended", webhooks)

    def write_later(self, start: CallStart, end: CallEnd) -> None:
        """Keep retrying the whole row of a call that ended while the database was unreachable."""

        call_id: int | None = None

        async def write() -> None:
            nonlocal call_id
            # A retry after the row was opened only completes it: a second INSERT would conflict.
            if call_id is None:
                try:
                    call_id, _ = await self._open_once(start)
                except IntegrityError:
                    # An open that timed out or lost its connection may have inserted the row.
                    call_id, _ = await self._reopen(start, tag=None)
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
            except Exception as error:
                # A retry would meet the same failure, such as a violated constraint.
                log.exception("journal write %s failed and is not retried", asyncio.current_task().get_name())
                on_give_up(f"write failed: {type(error).__name__}")
                return

    async def close(self) -> None:
        """Stop retrying deferred writes; each one still unwritten goes to the log whole."""
        for task, on_give_up in list(self._deferred.items()):
            task.cancel()
            on_give_up("pbx-bridge stopped before the database came back")
        await asyncio.gather(*self._deferred, return_exceptions=True)
        await self._connections.close()

    def _writing(self, session_id: int | None, event: str, webhooks: list[Any]) -> AbstractAsyncContextManager[_Write]:
        """Open a write that runs on the driver, or in a transaction when it has outbox rows."""
        if may_enqueue(event, session_id, webhooks):
            return self._enqueuing_write()
        return self._connections.direct_write()

    @asynccontextmanager
    async def _enqueuing_write(self) -> AsyncIterator[_Write]:
        async with self._connections.session_write() as write:
            yield write
        self.on_enqueued()

    async def _company_webhooks(self, company_id: int | None) -> list[Any]:
        if company_id is None:
            return []
        now = time.monotonic()
        cached = self._webhooks.get(company_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._connections.transaction() as connection, AsyncSession(bind=connection) as session:
            webhooks = await company_webhooks(session, company_id)
        self._webhooks[company_id] = (now + self.calls.route_cache_seconds, webhooks)
        return webhooks

    async def _row(self, call_id: int) -> _Row:
        """Return the journal's copy of a row, read from the database when it is not at hand."""
        row = self._rows.get(call_id)
        if row is None:
            async with self._connections.transaction() as connection, AsyncSession(bind=connection) as session:
                call = await session.get(Call, call_id)
                if call is None:
                    raise LookupError(f"journal row {call_id} not found")
            row = self._rows[call_id] = _Row.of(call)
        return row

    async def _update_call(
        self, write: _Write, row: _Row, values: dict[str, Any], recording: dict[str, Any] | None = None
    ) -> None:
        """Write `values` to the row and to the journal's copy of it, and the whole recording row
        `recording` if given."""
        values["updated_at"] = utcnow()
        _cut_to_columns(values)
        await write.run(_call_writes(write.dialect, row.id, values, recording))
        row.values.update(values)


class _Row:
    """The journal's copy of a call's row: its id and its column values as last written.

    Values are kept in a dict rather than a detached `Call`, because building the ORM object and
    setting its instrumented attributes cost about 100 us of CPU a call. Only the outbox needs one.
    """

    __slots__ = ("id", "values")

    def __init__(self, row_id: int, values: dict[str, Any]) -> None:
        self.id = row_id
        self.values = values

    @classmethod
    def of(cls, call: Call) -> _Row:
        return cls(call.id, {name: getattr(call, name) for name in _CALL_COLUMNS})

    @property
    def company_id(self) -> int | None:
        return self.values.get("company_id")

    @property
    def session_id(self) -> int | None:
        return self.values.get("session_id")

    @property
    def tags(self) -> list[str]:
        return self.values.get("tags") or []

    def model(self) -> Call:
        """Return a transient `Call` with these values, for the outbox's snapshot."""
        return Call(id=self.id, **self.values)


class _JournalConnections:
    """The journal's kept connections, each used by one write or read at a time.

    The most recently freed connection is taken first, so at a low call rate one does the work.
    """

    # NOTE: on SQLite the one connection runs one write at a time. A write that waits for another
    # process's lock holds up every call's writes until SQLite's busy timeout. A call awaits its
    # writes when it opens its row and after the company line answers, so new calls dial late.

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.connections = tuple(_JournalConnection(engine) for _ in range(size))
        self._free: asyncio.LifoQueue[_JournalConnection] = asyncio.LifoQueue()
        for journal_connection in reversed(self.connections):
            self._free.put_nowait(journal_connection)

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._on_free(_JournalConnection.transaction)

    def session_write(self) -> AbstractAsyncContextManager[_Write]:
        return self._on_free(_JournalConnection.session_write)

    def direct_write(self) -> AbstractAsyncContextManager[_Write]:
        return self._on_free(_JournalConnection.direct_write)

    @asynccontextmanager
    async def _on_free(
        self, use: Callable[[_JournalConnection], AbstractAsyncContextManager[Any]]
    ) -> AsyncIterator[Any]:
        """Enter `use` on a free connection, waiting for one while all are in use."""
        journal_connection = await self._free.get()
        try:
            async with use(journal_connection) as value:
                yield value
        finally:
            self._free.put_nowait(journal_connection)

    async def close(self) -> None:
        for journal_connection in self.connections:
            await journal_connection.close()


class _JournalConnection:
    """A connection the journal writes on, kept open from one write to the next.

    A checkout from the pool and the rollback on its return cost about as much CPU as a journal
    write. So the journal keeps its connections and runs one write at a time on each.
    A connection that failed is closed, and the next write on it opens another.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None
        self._direct: DirectConnection | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Yield the SQLAlchemy connection inside a transaction, committed on success."""
        async with self._use() as (connection, _), connection.begin():
            yield connection

    @asynccontextmanager
    async def session_write(self) -> AsyncIterator[_Write]:
        async with self.transaction() as connection:
            yield _SessionWrite(connection)

    @asynccontextmanager
    async def direct_write(self) -> AsyncIterator[_Write]:
        """Yield a write on the driver, whose `run` commits its statements."""
        async with self._use() as (_, direct):
            yield _DirectWrite(direct)

    @asynccontextmanager
    async def _use(self) -> AsyncIterator[tuple[AsyncConnection, DirectConnection]]:
        async with self._lock:
            if self._connection is not None and self._direct is not None and self._direct.is_closed():
                # The server closed it while it was idle, as a PostgreSQL restart does to every
                # kept connection. So this write opens another instead of failing.
                await _discard(self._connection)
                self._connection = self._direct = None
            if self._connection is None or self._direct is None:
                connection = await self.engine.connect()
                try:
                    self._direct = await DirectConnection.under(connection)
                except BaseException:
                    await _discard(connection)
                    raise
                self._connection = connection
            connection = self._connection
            try:
                yield connection, self._direct
            except BaseException as error:
                # The failure may have broken the connection (a lost server, a cancelled
                # statement). A new one costs milliseconds, and a broken one fails every call.
                self._connection = self._direct = None
                if isinstance(error, asyncio.CancelledError):
                    # On SQLite a cancelled statement goes on waiting for another writer's lock in
                    # the driver's thread, and closing the connection waits for it. So a cancelled
                    # write, such as an open that timed out, closes the connection in the background.
                    _discard_in_background(connection)
                    raise
                await _discard(connection)
                lost = isinstance(error, DBAPIError) and error.connection_invalidated
                if lost and not isinstance(error, JOURNAL_ERRORS):
                    # SQLAlchemy 2.1's asyncpg dialect raises a plain DBAPIError for a backend that
                    # ended during a statement. storage/direct.py raises OperationalError for the
                    # same failure, so both kinds of write are retried alike.
                    raise OperationalError(
                        error.statement, None, error.orig, hide_parameters=True, connection_invalidated=True
                    ) from error
                raise

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await _discard(self._connection)
                self._connection = self._direct = None


class _Write:
    """One journal write: its statements, then the outbox rows of the event it reports."""

    # The database's dialect name, "postgresql" or "sqlite", which chooses the statements.
    dialect: str

    async def run(self, statements: Sequence[tuple[UpdateBase, dict[str, Any]]]) -> Sequence[Sequence[Any]]:
        """Run INSERTs and UPDATEs in order and return the rows of the last one's RETURNING clause."""
        raise NotImplementedError

    async def enqueue(self, row: _Row, event: str, webhooks: list[Any]) -> None:
        raise NotImplementedError


class _DirectWrite(_Write):
    """A write with no outbox rows, run on the driver."""

    def __init__(self, direct: DirectConnection) -> None:
        self.direct = direct
        self.dialect = direct.dialect_name

    async def run(self, statements: Sequence[tuple[UpdateBase, dict[str, Any]]]) -> Sequence[Sequence[Any]]:
        return await self.direct.write(statements)

    async def enqueue(self, row: _Row, event: str, webhooks: list[Any]) -> None:
        # `Journal._writing` chose this kind of write because there is nothing to enqueue.
        return None


class _SessionWrite(_Write):
    """A write with outbox rows, run through SQLAlchemy in one transaction with them."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    async def run(self, statements: Sequence[tuple[UpdateBase, dict[str, Any]]]) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = []
        for statement, params in statements:
            result = await self.connection.execute(statement, params)
            rows = result.all() if result.returns_rows else []
        return rows

    async def enqueue(self, row: _Row, event: str, webhooks: list[Any]) -> None:
        async with AsyncSession(bind=self.connection) as session:
            await enqueue_call_event(session, row.model(), event, webhooks)


def _call_writes(
    dialect: str, row_id: int, values: dict[str, Any], recording: dict[str, Any] | None
) -> list[tuple[UpdateBase, dict[str, Any]]]:
    """Return the statements, with their parameters, that write a call's `values` and its whole
    `recording` row if given: one statement on PostgreSQL, one per table on SQLite, whose
    statements of one write commit together anyway."""
    if recording is None:
        return [(_UPDATE_CALL, {"row_id": row_id, **values})]
    recording_params = {f"recording_{name}": value for name, value in recording.items()}
    if dialect == "postgresql":
        call_params = {f"call_{name}": value for name, value in values.items()}
        statement = _update_call_and_recording(frozenset(values))
        return [(statement, {"row_id": row_id, **call_params, **recording_params})]
    return [(_UPDATE_CALL, {"row_id": row_id, **values}), (_UPSERT_RECORDING[dialect], recording_params)]


async def _discard(connection: AsyncConnection) -> None:
    try:
        await connection.invalidate()
        await connection.close()
    except Exception as error:
        log.debug("journal connection did not close cleanly: %s", type(error).__name__)


# Tasks of `_discard_in_background`, kept here so that they are not garbage collected while they run.
_discarding: set[asyncio.Task[None]] = set()


def _discard_in_background(connection: AsyncConnection) -> None:
    task = asyncio.get_running_loop().create_task(_discard(connection))
    _discarding.add(task)
    task.add_done_callback(_discarding.discard)


@dataclass
class _KeyLock:
    """A lock kept in a dict while `users` tasks hold it or wait for it."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


def stored_channel_id(channel_id: str) -> str:
    """Return a channel id as the calls table stores it.

    An id longer than the column keeps its start, and a hash of the whole id takes the place
    of the rest, so that two long ids with the same start stay two rows.
    """
    return _fit_with_hash(channel_id, _CALL_LENGTHS["channel_id"])


def stored_recording_name(name: str) -> str:
    """Return a recording name as the recordings table stores it, shortened as a channel id is.

    The call flow gives Asterisk this name, so that the row names the file Asterisk writes. On
    PostgreSQL a longer name would fail the write, and the call's UPDATE in the same statement.
    """
    return _fit_with_hash(name, _RECORDINGS.c.name.type.length)


def _fit_with_hash(value: str, length: int) -> str:
    if len(value) <= length:
        return value
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    return f"{value[:length - len(digest) - 1]}~{digest}"


def _cut_to_columns(values: dict[str, Any]) -> None:
    """Cut each string in `values` that is longer than its column of calls."""
    for name, value in values.items():
        length = _CALL_LENGTHS.get(name)
        if length is not None and isinstance(value, str) and len(value) > length:
            values[name] = value[:length]


def _log_lost_row(start: CallStart, end: CallEnd, reason: str) -> None:
    """Put a row that could not be written into the log, as JSON, so an operator can restore it."""
    row = {"start": dataclasses.asdict(start), "end": dataclasses.asdict(end)}
    log.error(
        "call %s: journal row not written (%s): %s",
        start.channel_id, reason, json.dumps(row, default=str, ensure_ascii=False),
    )
