"""`pbx-bridge test-call`: place a QA call through a real Asterisk and print its journal row.

The call is a Local channel into the tracked-number context: its `;2` half runs the dialplan
like a call from the trunk (and enters Stasis), its `;1` half plays the caller in the QA context.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from models import Call
from pbx_bridge.ari import AriClient
from pbx_bridge.config import Config
from pbx_bridge.storage import Database

# Context names of the sample dialplan in dialplan/extensions_calltracking.conf.
INBOUND_CONTEXT = "calltracking-inbound"
QA_CONTEXT = "calltracking-qa"
QA_EXTENSION = "caller"


class TestCallError(Exception):
    """The QA call could not be placed or did not end in time."""


async def place_test_call(config: Config, number: str, caller: str | None, timeout: float) -> dict[str, Any]:
    """Originate the QA call, wait for the service to finish its journal row and return the row."""
    qa_channel_id = f"qa-{uuid.uuid4().hex[:12]}"
    inbound_channel_id = f"{qa_channel_id}-in"
    ari = AriClient.from_config(config.ari)
    try:
        await ari.originate(
            endpoint=f"Local/{number}@{INBOUND_CONTEXT}",
            context=QA_CONTEXT,
            extension=QA_EXTENSION,
            priority=1,
            caller_id=caller,
            channel_id=qa_channel_id,
            other_channel_id=inbound_channel_id,
            # Asterisk hangs up an originated channel that is not answered within this time, 30 s
            # by default, which a hunt list of two destinations outrings. The QA caller waits as
            # long as this command does.
            timeout=max(1, math.ceil(timeout)),
        )
    finally:
        await ari.close()

    database = Database(config.database.url)
    try:
        return await _wait_for_row(database, inbound_channel_id, timeout)
    finally:
        await database.close()


async def _wait_for_row(database: Database, channel_id: str, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    call = None
    while loop.time() < deadline:
        async with database.sessions() as session:
            call = await session.scalar(
                select(Call).where(Call.channel_id == channel_id).options(selectinload(Call.recording))
            )
        if call is not None and call.ended_at is not None:
            return row_as_dict(call)
        await asyncio.sleep(0.5)
    if call is None:
        raise TestCallError(
            f"no journal row for channel {channel_id} after {timeout:.0f} s: is `pbx-bridge serve` "
            "running against the same database, and does the dialplan send the call to Stasis?"
        )
    raise TestCallError(f"call {channel_id} still in progress after {timeout:.0f} s")


def row_as_dict(call: Call) -> dict[str, Any]:
    row = {column.name: getattr(call, column.key) for column in Call.__table__.columns}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            row[key] = value.isoformat()
    if call.recording is not None:
        row["recording"] = {
            "file": call.recording.file_name,
            "state": call.recording.state,
            "duration_seconds": call.recording.duration_seconds,
            "error": call.recording.error,
        }
    return row
