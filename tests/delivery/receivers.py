"""Local stand-ins for webhook endpoints, GA4 and Yandex Metrica on 127.0.0.1.

Each one checks what the real receiver checks (signature and timestamp, field names, types and
limits), records what it accepted, and can fail on command: `failure_status` makes it respond
with that status, and `stop()` / `start()` close and reopen its port to simulate an outage.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from typing import Any

from aiohttp import web

from pbx_bridge.delivery.checks import GA4_NAME, GA4_RESERVED_EVENTS, GA4_RESERVED_PREFIXES
from pbx_bridge.delivery.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)


class LocalReceiver:
    def __init__(self) -> None:
        self.failure_status: int | None = None
        self.failure_body = "receiver failing on command"
        # Seconds each request waits before the response.
        self.delay = 0.0
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _failure(self) -> web.Response | None:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failure_status is not None:
            return web.Response(status=self.failure_status, text=self.failure_body)
        return None


class WebhookReceiver(LocalReceiver):
    """A company endpoint that verifies the signature and records each delivery id it accepts."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.accepted: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hook", self.handle)

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def delivery_ids(self) -> list[int]:
        return [document["delivery_id"] for document in self.accepted]

    async def handle(self, request: web.Request) -> web.Response:
        failure = await self._failure()
        if failure is not None:
            return failure
        body = await request.read()
        if not request.content_type == "application/json":
            return web.Response(status=415, text="expected application/json")
        if not verify(
            self.secret,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
        ):
            return web.Response(status=401, text="invalid signature or stale timestamp")
        document = json.loads(body)
        if str(document["delivery_id"]) != request.headers.get(DELIVERY_HEADER):
            return web.Response(status=400, text="delivery id header and body differ")
        if document["event"] != request.headers.get(EVENT_HEADER):
            return web.Response(status=400, text="event header and body differ")
        self.accepted.append(document)
        self.headers.append(dict(request.headers))
        return web.Response(status=204)


class Ga4Receiver(LocalReceiver):
    """Measurement Protocol endpoint that rejects what GA4 would drop, like /debug/mp/collect.

    The production endpoint responds with 2xx to invalid events and drops them. This one
    responds with 400 and validation messages, so tests notice.
    """

    def __init__(self, measurement_id: str, api_secret: str) -> None:
        super().__init__()
        self.measurement_id = measurement_id
        self.api_secret = api_secret
        self.accepted: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/mp/collect", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        failure = await self._failure()
        if failure is not None:
            return failure
        if request.query.get("measurement_id") != self.measurement_id:
            return web.Response(status=400, text="unknown measurement_id")
        if request.query.get("api_secret") != self.api_secret:
            return web.Response(status=403, text="invalid api_secret")
        try:
            document = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        problems = ga4_problems(document)
        if problems:
            return web.json_response({"validationMessages": problems}, status=400)
        self.accepted.append(document)
        return web.Response(status=204)


def ga4_problems(document: Any) -> list[str]:
    """List the Measurement Protocol rules that `document` breaks."""
    problems: list[str] = []
    if not isinstance(document, dict):
        return ["body must be a JSON object"]
    if not isinstance(document.get("client_id"), str) or not document["client_id"]:
        problems.append("client_id must be a non-empty string")
    timestamp = document.get("timestamp_micros")
    if timestamp is not None:
        if not isinstance(timestamp, int):
            problems.append("timestamp_micros must be an integer")
        elif not time.time() - 72 * 3600 <= timestamp / 1e6 <= time.time() + 60:
            problems.append("timestamp_micros is more than 72 hours old or in the future")
    events = document.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= 25:
        return problems + ["events must be an array of 1 to 25 events"]
    for event in events:
        name = event.get("name", "")
        if not isinstance(name, str) or not GA4_NAME.fullmatch(name):
            problems.append(f"event name {name!r} is invalid")
        elif name in GA4_RESERVED_EVENTS or name.startswith(GA4_RESERVED_PREFIXES):
            problems.append(f"event name {name!r} is reserved")
        params = event.get("params", {})
        if not isinstance(params, dict) or len(params) > 25:
            problems.append("params must be an object of at most 25 parameters")
            continue
        for key, value in params.items():
            if not GA4_NAME.fullmatch(key) or key.startswith(GA4_RESERVED_PREFIXES):
                problems.append(f"parameter name {key!r} is invalid")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                problems.append(f"parameter {key!r} must be a string or a number")
            elif isinstance(value, str) and len(value) > 100:
                problems.append(f"parameter {key!r} is longer than 100 characters")
    return problems


METRICA_COLUMNS = {
    "ClientId", "Yclid", "UserId", "DateTime", "PhoneNumber", "TalkDuration", "HoldDuration",
    "CallMissed", "Tag", "FirstTimeCaller", "URL", "CallTrackerURL", "StaticCall",
}  # fmt: skip
_ID_COLUMN = {"CLIENT_ID": "ClientId", "YCLID": "Yclid", "USER_ID": "UserId"}


class MetricaReceiver(LocalReceiver):
    """Metrica's upload_calls method: OAuth header, multipart CSV, column names and value types."""

    def __init__(self, counter_id: str, token: str) -> None:
        super().__init__()
        self.counter_id = counter_id
        self.token = token
        self.uploads: list[tuple[str, list[dict[str, str]]]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post(
            "/management/v1/counter/{counter}/offline_conversions/upload_calls", self.handle
        )

    def rows(self) -> list[dict[str, str]]:
        return [row for _, rows in self.uploads for row in rows]

    async def handle(self, request: web.Request) -> web.Response:
        failure = await self._failure()
        if failure is not None:
            return failure
        if request.headers.get("Authorization") != f"OAuth {self.token}":
            return _metrica_error(403, "access_denied", "invalid OAuth token")

        if request.match_info["counter"] != self.counter_id:
            return _metrica_error(404, "not_found", "counter not found")
        client_id_type = request.query.get("client_id_type", "USER_ID")
        if client_id_type not in _ID_COLUMN:
            return _metrica_error(400, "invalid_parameter", "invalid client_id_type")

        if not request.content_type.startswith("multipart/form-data"):
            return _metrica_error(400, "invalid_parameter", "expected multipart/form-data")
        form = await request.post()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "file"):
            return _metrica_error(400, "invalid_parameter", "the file field is missing")

        text = upload.file.read().decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        problems = metrica_problems(text, rows, _ID_COLUMN[client_id_type])
        if problems:
            return _metrica_error(400, "invalid_uploading", "; ".join(problems))

        self.uploads.append((client_id_type, rows))
        return web.json_response(
            {
                "uploading": {
                    "id": len(self.uploads),
                    "client_id_type": client_id_type,
                    "line_quantity": len(rows),
                    "status": "UPLOADED",
                }
            }
        )


def metrica_problems(text: str, rows: list[dict[str, str]], id_column: str) -> list[str]:
    header = next(csv.reader(io.StringIO(text)), [])
    problems = [f"unknown column {name!r}" for name in header if name not in METRICA_COLUMNS]
    for required in (id_column, "DateTime"):
        if required not in header:
            problems.append(f"column {required} is missing")
    if not rows:
        problems.append("the file has no calls")
    for number, row in enumerate(rows, start=2):
        if not row.get(id_column):
            problems.append(f"line {number}: {id_column} is empty")
        for column in ("DateTime", "TalkDuration", "HoldDuration"):
            if column in row and not row[column].isdigit():
                problems.append(f"line {number}: {column} must be a non-negative integer")
        for column in ("CallMissed", "FirstTimeCaller", "StaticCall"):
            if column in row and row[column] not in ("0", "1"):
                problems.append(f"line {number}: {column} must be 0 or 1")
    return problems


def _metrica_error(status: int, error_type: str, message: str) -> web.Response:
    body = {"errors": [{"error_type": error_type, "message": message}], "code": status, "message": message}
    return web.json_response(body, status=status)
