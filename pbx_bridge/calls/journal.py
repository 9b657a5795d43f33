"""The call journal: one row per call, opened at once and completed as the call goes on.

A call costs three short transactions: the row is opened when the call arrives, updated when a
destination answers (with the recording's row) and completed when the call and its recording
have ended. A crash at any point leaves the row as far as the call got. Deliveries to webhooks
and analytics go to the outbox in the same transaction as the change they report.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from models import Call, Recording, RecordingState
from pbx_bridge.calls.routing import Route, Router
from pbx_bridge.config import CallsConfig
from pbx_bridge.delivery.outbox import enqueue_call_event
from pbx_bridge.storage import Database

log = logging.getLogger("pbx_bridge.calls")

# Seconds between attempts to open a journal row while the database is briefly unreachable.
OPEN_RETRY_DELAYS = (0.2, 1.0)


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
        # Rows of calls in progress, kept detached between transactions so that an update
        # needs no SELECT first.
        self._rows: dict[int, Call] = {}
        self._recordings: dict[int, Recording] = {}

    async def open(self, start: CallStart) -> tuple[int, Route]:
        """Resolve the call's route and insert its row; return the row id and the route."""
        for delay in (*OPEN_RETRY_DELAYS, None):
            try:
                return await self._open_once(start)
            except (OperationalError, DBAPIError, OSError) as error:
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
            await enqueue_call_event(session, call, "call.started")
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
            await enqueue_call_event(session, call, "call.answered")

    async def finish(self, call_id: int, end: CallEnd, recording: RecordingEnd | None) -> None:
        """Complete the row, and the recording's row when the call had one."""
        try:
            await self._finish_once(call_id, end, recording)
        finally:
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
            await enqueue_call_event(session, call, "call.ended")

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
