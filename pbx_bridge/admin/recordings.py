"""Streaming and download of call recordings, with HTTP range requests so players can seek."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from models import Call, Recording, RecordingState
from pbx_bridge.admin.auth import current_user
from pbx_bridge.admin.errors import ApiError, not_found
from pbx_bridge.admin.params import path_id
from pbx_bridge.http.app import CONTEXT

log = logging.getLogger("pbx_bridge.admin.recordings")

CONTENT_TYPES = {
    "wav": "audio/wav",
    "wav16": "audio/wav",
    "gsm": "audio/x-gsm",
    "ulaw": "audio/basic",
    "alaw": "audio/x-alaw-basic",
    "sln": "audio/L16",
    "g722": "audio/G722",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
}
_FORMAT = re.compile(r"^[a-z0-9]{1,16}$")


def recording_path(folder: str, name: str, file_format: str) -> Path | None:
    """Resolve the file of a recording, or None when it would lie outside `folder`.

    Symbolic links are resolved first, so a link inside the folder that points outside it is
    rejected too.
    """
    if not _FORMAT.match(file_format) or "\x00" in name:
        return None
    root = Path(folder).resolve()
    candidate = (root / f"{name}.{file_format}").resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        return None
    return candidate


async def recording_file(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    call_id = path_id(request, "recording")
    statement = (
        select(Recording, Call.company_id)
        .join(Call, Call.id == Recording.call_id)
        .where(Call.id == call_id)
    )
    async with request.app[CONTEXT].database.transaction() as session:
        row = (await session.execute(statement)).first()
    if row is None or not user.can_see(row[1]):
        raise not_found("recording")
    recording = row[0]
    if recording.state != RecordingState.DONE.value:
        raise ApiError(404, "recording_unavailable")

    path = recording_path(request.app[CONTEXT].config.recording.folder, recording.name, recording.format)
    if path is None:
        log.warning("recording %s of call %s points outside the recording folder", recording.id, call_id)
        raise ApiError(404, "recording_unavailable")
    if not path.is_file():
        log.warning("recording file of call %s is missing: %s", call_id, path)
        raise ApiError(404, "recording_unavailable")

    disposition = "attachment" if request.query.get("download") == "1" else "inline"
    headers = {
        "Content-Type": CONTENT_TYPES.get(recording.format, "application/octet-stream"),
        "Content-Disposition": f'{disposition}; filename="call-{call_id}.{recording.format}"',
        "Cache-Control": "private, no-store",
    }
    # FileResponse answers Range, If-Range and unsatisfiable ranges (416) itself.
    return web.FileResponse(path, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls/{id:\\d+}/recording", recording_file)
