"""Google Analytics 4 Measurement Protocol: one event per ended call of a session with a GA client id.

Request: POST {base_url}/mp/collect?measurement_id=...&api_secret=... with a JSON body
{"client_id", "timestamp_micros", "events": [{"name", "params"}]}. The protocol's limits applied
here: event and parameter names of at most 40 characters (letters, digits, underscores, a letter
first), at most 25 parameters per event, string values of at most 100 characters, and events at
most 72 hours old. The production endpoint responds with 2xx even to invalid events and drops
them silently, so the payload is made valid before it is sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp

from models import Delivery, utcnow
from pbx_bridge.config import Ga4Config
from pbx_bridge.delivery.checks import GA4_NAME
from pbx_bridge.delivery.http import ReceiverUnreachable, SendResult, failure, post

MAX_PARAMS = 25
MAX_VALUE_LENGTH = 100
# Measurement Protocol accepts events whose timestamp is at most 72 hours in the past.
MAX_EVENT_AGE = timedelta(hours=72)


def build_request(payload: dict[str, Any], event_name: str) -> dict[str, Any]:
    """Turn an outbox payload into a Measurement Protocol request body."""
    call = payload["call"]
    session = payload["session"] or {}
    source = payload["source"] or {}
    params: dict[str, Any] = {
        "call_id": call["id"],
        "outcome": call["outcome"],
        "duration_seconds": round(call["talk_seconds"] or 0),
        "wait_seconds": round(call["wait_seconds"] or 0),
        "answered": 1 if call["outcome"] == "answered" else 0,
        "first_time_caller": 1 if call["first_time_caller"] else 0,
        "attribution": call["attribution"],
        "source": source.get("name"),
        # pbx-bridge's own visitor session; GA's session_id parameter means GA's session and
        # would split the visitor's sessions in reports, so this uses a name of its own.
        "tracking_session_id": str(session["id"]) if "id" in session else None,
        "utm_source": session.get("utm_source"),
        "utm_medium": session.get("utm_medium"),
        "utm_campaign": session.get("utm_campaign"),
    }
    params = {name: _limit(value) for name, value in params.items() if value is not None}
    params = {name: value for name, value in params.items() if GA4_NAME.fullmatch(name)}
    params = dict(list(params.items())[:MAX_PARAMS])

    return {
        "client_id": session["ga_client_id"],
        "timestamp_micros": int(_event_time(call).timestamp() * 1_000_000),
        "events": [{"name": event_name, "params": params}],
    }


async def send_ga4(
    http: aiohttp.ClientSession, delivery: Delivery, config: Ga4Config, timeout: float
) -> SendResult:
    """Send one call's event; any 2xx response means delivered."""
    if not config.measurement_id or not config.api_secret:
        return SendResult(False, error="GA4 is not configured: set ga4.measurement_id and ga4.api_secret")
    session = delivery.payload.get("session") or {}
    if not session.get("ga_client_id"):
        return SendResult(False, error="the call's session has no GA client id", permanent=True)
    age = utcnow() - _event_time(delivery.payload["call"])
    if age > MAX_EVENT_AGE:
        return SendResult(
            False,
            error=f"the call is {age} old; GA4 accepts events at most 72 hours old",
            permanent=True,
        )

    query = urlencode({"measurement_id": config.measurement_id, "api_secret": config.api_secret})
    url = f"{config.base_url.rstrip('/')}/mp/collect?{query}"
    try:
        response = await post(
            http, url, timeout=timeout, json=build_request(delivery.payload, config.event_name)
        )
    except ReceiverUnreachable as error:
        return SendResult(False, error=str(error))
    if response.ok:
        return SendResult(True, response.status)
    return failure(response)


def _event_time(call: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(call["ended_at"] or call["started_at"])


def _limit(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE_LENGTH]
    return value
