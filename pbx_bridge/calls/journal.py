"""The call journal: one row per call, opened at once and completed as the call goes on.

Each method is one short transaction, so a crash at any point still leaves the row as far as the
call got. Deliveries to webhooks and analytics are written to the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from models import Call, Recording, RecordingState
from pbx_bridge.calls.routing import Route, resolve_route
from pbx_bridge.config import CallsConfig
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
        self.calls = calls

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
            route = await resolve_route(session, start.dialed_raw, start.started_at, self.calls)
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
                caller_name=(start.caller_name or None) and start.caller_name[:200],
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
            await _enqueue(session, call, "call.started")
            return call.id, route

    async def answered(
        self, call_id: int, *, at: datetime, endpoint: str, outbound_channel_id: str,
        attempts: list[dict[str, Any]],
    ) -> None:
        async with self.database.transaction() as session:
            call = await session.get(Call, call_id)
            if call is None:
                return
            call.answered_at = at
            call.answered_by = endpoint
            call.outbound_channel_id = outbound_channel_id
            call.attempts = attempts
            await _enqueue(session, call, "call.answered")

    async def recording_started(
        self, call_id: int, *, name: str, format: str, at: datetime, error: str | None
    ) -> None:
        state = RecordingState.FAILED if error else RecordingState.QUEUED
        async with self.database.transaction() as session:
            session.add(
                Recording(
                    call_id=call_id, name=name, format=format, state=state.value,
                    error=error, started_at=at,
                )
            )

    async def recording_changed(
        self, call_id: int, *, state: RecordingState, duration: int | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state.value}
        if duration is not None:
            values["duration_seconds"] = duration
        if error is not None:
            values["error"] = error
        async with self.database.transaction() as session:
            await session.execute(
                update(Recording).where(Recording.call_id == call_id).values(**values)
            )

    async def finish(self, call_id: int, end: CallEnd) -> None:
        async with self.database.transaction() as session:
            call = await session.get(Call, call_id)
            if call is None:
                return
            call.outcome = end.outcome
            call.ended_at = end.ended_at
            call.wait_seconds = round(end.wait_seconds, 3)
            call.talk_seconds = None if end.talk_seconds is None else round(end.talk_seconds, 3)
            call.hangup_cause = end.hangup_cause
            call.hangup_cause_text = end.hangup_cause_text
            call.hangup_side = end.hangup_side
            call.attempts = end.attempts
            if end.answered_at is not None:
                call.answered_at = end.answered_at
                call.answered_by = end.answered_by
                call.outbound_channel_id = end.outbound_channel_id
            if end.error:
                call.error = end.error[:2000]
            if end.tags:
                call.tags = sorted({*call.tags, *end.tags})
            await _enqueue(session, call, "call.ended")


async def _enqueue(session: Any, call: Call, event: str) -> None:
    from pbx_bridge.delivery.outbox import enqueue_call_event

    await enqueue_call_event(session, call, event)
