"""Yandex Metrica offline calls: ended calls of sessions with a ClientID or yclid, uploaded as CSV.

Request: POST {base_url}/management/v1/counter/{counter_id}/offline_conversions/upload_calls
?client_id_type=CLIENT_ID (or YCLID), header `Authorization: OAuth <token>`, and the CSV as the
multipart/form-data field `file`. Each upload contains one identifier type, so calls are grouped by
it. The response's `uploading.id` and `uploading.status` are kept on every row of the upload.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp

from models import Delivery
from pbx_bridge.config import MetricaConfig
from pbx_bridge.delivery.http import ReceiverUnreachable, SendResult, failure, post

CLIENT_ID = "CLIENT_ID"
YCLID = "YCLID"
_ID_COLUMN = {CLIENT_ID: "ClientId", YCLID: "Yclid"}
COLUMNS = (
    "DateTime",
    "PhoneNumber",
    "TalkDuration",
    "HoldDuration",
    "CallMissed",
    "FirstTimeCaller",
    "StaticCall",
    "Tag",
    "URL",
    "CallTrackerURL",
)


def id_type(delivery: Delivery) -> str:
    """Return the identifier type of a row: the ClientID when the session has one, else the yclid."""
    session = delivery.payload.get("session") or {}
    return CLIENT_ID if session.get("ym_client_id") else YCLID


def build_csv(deliveries: Sequence[Delivery], client_id_type: str, config: MetricaConfig) -> str:
    """Write the upload file: a header line, then one line per call."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow((_ID_COLUMN[client_id_type], *COLUMNS))
    for delivery in deliveries:
        writer.writerow(_line(delivery.payload, client_id_type, config))
    return output.getvalue()


async def upload_calls(
    http: aiohttp.ClientSession,
    deliveries: Sequence[Delivery],
    client_id_type: str,
    config: MetricaConfig,
    timeout: float,
) -> SendResult:
    """Upload one batch of calls of one identifier type; the result applies to every row."""
    if not config.counter_id or not config.token:
        return SendResult(False, error="Metrica is not configured: set metrica.counter_id and metrica.token")

    form = aiohttp.FormData()
    form.add_field(
        "file",
        build_csv(deliveries, client_id_type, config).encode("utf-8"),
        filename="calls.csv",
        content_type="text/csv",
    )
    url = (
        f"{config.base_url.rstrip('/')}/management/v1/counter/{config.counter_id}"
        f"/offline_conversions/upload_calls?client_id_type={client_id_type}"
    )
    headers = {"Authorization": f"OAuth {config.token}"}
    try:
        response = await post(http, url, timeout=timeout, data=form, headers=headers)
    except ReceiverUnreachable as error:
        return SendResult(False, error=str(error))
    if not response.ok:
        return failure(response)

    try:
        uploading = json.loads(response.text)["uploading"]
    except (ValueError, KeyError, TypeError):
        # Metrica accepted the file; a malformed response must not cause a second upload.
        return SendResult(True, response.status, upload_status="response without an upload id")
    return SendResult(
        True,
        response.status,
        upload_id=str(uploading.get("id")),
        upload_status=str(uploading.get("status")),
    )


def _line(payload: dict[str, Any], client_id_type: str, config: MetricaConfig) -> list[str]:
    call = payload["call"]
    session = payload["session"] or {}
    source = payload["source"] or {}
    identifier = session["ym_client_id"] if client_id_type == CLIENT_ID else session["yclid"]
    started = datetime.fromisoformat(call["started_at"])
    call_url = ""
    if config.call_url_template:
        call_url = config.call_url_template.replace("{call_id}", str(call["id"]))
    return [
        identifier,
        str(int(started.timestamp())),
        call["caller_number"] or call["caller_raw"] or "",
        str(round(call["talk_seconds"] or 0)),
        str(round(call["wait_seconds"] or 0)),
        "0" if call["outcome"] == "answered" else "1",
        "1" if call["first_time_caller"] else "0",
        "1" if call["attribution"] == "static" else "0",
        source.get("name") or "",
        session.get("landing_page") or "",
        call_url,
    ]
