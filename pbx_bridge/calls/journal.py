"""The call journal: one row per call, opened at once and completed as the call goes on.

A call costs three short transactions: the row is opened when the call arrives, updated when a
destination answers (with the recording's row) and completed when the call and its recording
have ended. A crash at any point leaves the row as far as the call got. Deliveries to webhooks
and analytics go to the outbox in the same transaction as the change they report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from models import Call, Recording, RecordingState
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
        self.router = Router(calls)
        self.calls = calls
        # Company id -> (expiry, webhooks), kept as long as number settings (route_cache_seconds).
        self._webhooks: dict[int, tuple[float, list[Any]]] = {}
        # Rows of calls in progress, kept detached between transactions so that an update
        # needs no SELECT first.
        self._rows: dict[int, Call] = {}
        self._recordings: dict[int, Recording] = {}
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
        async with self.database.transaction() as session:
            route = await self.router.resolve(session, start.dialed_raw, start.started_at)
            first_time = None
            if start.caller_number is not None and route.company_id is not None:
                earlier = await session.scalar(
                    select(Call.id)
                    .where(Call.company_id == route.company_id)
                    .where(Call.caller_number == start.caller_number)
                    .limit(1)
                )
                first_time = earlier is None
            call = Call(
                channel_id=start.channel_id,
                linkedid=start.linkedid,
                caller_number=start.caller_number,
                caller_raw=start.caller_raw[:200],
                caller_name=start.caller_name[:200] if start.caller_name else None,
                dialed_number=route.dialed_number,
                dialed_raw=start.dialed_raw[:200],
                company_id=route.company_id,
                tracking_number_id=route.tracking_number_id,
                source_id=route.source_id,
                session_id=route.session_id,
                attribution=route.attribution.value,
                first_time_caller=first_time,
                started_at=start.started_at,
                tags=list(route.tags),
                attempts=[],
            )
            session.add(call)
            await session.flush()
            await self._enqueue(session, call, "call.started")
        self._rows[call.id] = call
        return call.id, route

    async def _reopen(self, start: CallStart) -> tuple[int, Route]:
        async with self.database.transaction() as session:
            route = await self.router.resolve(session, start.dialed_raw, start.started_at)
            call = await session.scalar(select(Call).where(Call.channel_id == start.channel_id))
            if call is None:
                raise LookupError(f"journal row of channel {start.channel_id} not found after a conflict")
            call.tags = sorted({*call.tags, "taken-over"})
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
        async with self.database.transaction() as session:
            call = await self._attach(session, call_id)
            call.answered_at = at
            call.answered_by = endpoint
            call.outbound_channel_id = outbound_channel_id
            call.attempts = list(attempts)
            if recording is not None:
                row = Recording(
                    call_id=call_id,
                    name=recording.name,
                    format=recording.format,
                    state=(RecordingState.FAILED if recording.error else RecordingState.QUEUED).value,
                    error=recording.error,
                    started_at=recording.started_at,
                )
                session.add(row)
                self._recordings[call_id] = row
            await self._enqueue(session, call, "call.answered")

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
        async with self.database.transaction() as session:
            call = await self._attach(session, call_id)
            call.outcome = end.outcome
            call.ended_at = end.ended_at
            call.wait_seconds = round(end.wait_seconds, 3)
            call.talk_seconds = None if end.talk_seconds is None else round(end.talk_seconds, 3)
            call.hangup_cause = end.hangup_cause
            call.hangup_cause_text = end.hangup_cause_text
            call.hangup_side = end.hangup_side
            call.attempts = list(end.attempts)
            if end.answered_at is not None:
                call.answered_at = end.answered_at
                call.answered_by = end.answered_by
                call.outbound_channel_id = end.outbound_channel_id
            if end.error:
                call.error = end.error[:2000]
            if end.tags:
                call.tags = sorted({*call.tags, *end.tags})
            row = self._recordings.get(call_id)
            if recording is not None and row is not None and row.state != RecordingState.FAILED.value:
                session.add(row)
                row.state = recording.state.value
                row.duration_seconds = recording.duration_seconds
                if recording.error:
                    row.error = recording.error[:2000]
            await self._enqueue(session, call, "call.ended")

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

    async def _enqueue(self, session: AsyncSession, call: Call, event: str) -> None:
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

    async def _attach(self, session: AsyncSession, call_id: int) -> Call:
        """Return the call's row in `session`, re-attached without a SELECT when it is at hand."""
        call = self._rows.get(call_id)
        if call is None:
            call = await session.get(Call, call_id)
            if call is None:
                raise LookupError(f"journal row {call_id} not found")
            self._rows[call_id] = call
            return call
        session.add(call)
        return call


def _log_lost_row(start: CallStart, end: CallEnd, reason: str) -> None:
    """Put a row that could not be written into the log, as JSON, so an operator can restore it."""
    row = {"start": dataclasses.asdict(start), "end": dataclasses.asdict(end)}
    log.error(
        "call %s: journal row not written (%s): %s",
        start.channel_id, reason, json.dumps(row, default=str, ensure_ascii=False),
    )
