"""Company webhooks: signed JSON POST requests, and saving their definitions from setup files.

Each request carries these headers:

- `X-PBX-Bridge-Timestamp`: Unix time in seconds when the request was signed.
- `X-PBX-Bridge-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the webhook's secret,
  of the timestamp, a dot and the raw body. Signing the timestamp with the body stops a replayed
  request from passing with a fresh timestamp; receivers reject old timestamps.
- `X-PBX-Bridge-Event`: the event name, such as `call.ended`.
- `X-PBX-Bridge-Delivery`: the outbox row id, the same on every retry, for de-duplication.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Delivery, Webhook
from pbx_bridge.delivery.checks import WebhookSpec
from pbx_bridge.delivery.http import ReceiverUnreachable, SendResult, failure, post

TIMESTAMP_HEADER = "X-PBX-Bridge-Timestamp"
SIGNATURE_HEADER = "X-PBX-Bridge-Signature"
EVENT_HEADER = "X-PBX-Bridge-Event"
DELIVERY_HEADER = "X-PBX-Bridge-Delivery"
# Seconds a receiver should accept between the signed timestamp and its own clock.
DEFAULT_TOLERANCE = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the signature header value for `body` sent at `timestamp`."""
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """Check a request as a receiver should: a fresh timestamp and a matching signature."""
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature_header)


def request_body(delivery: Delivery) -> bytes:
    document = {"delivery_id": delivery.id, **delivery.payload}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def send_webhook(
    http: aiohttp.ClientSession, delivery: Delivery, webhook: Webhook | None, timeout: float
) -> SendResult:
    """POST one outbox row to its webhook; any 2xx response means delivered."""
    if webhook is None:
        return SendResult(False, error="the webhook was removed from the company", permanent=True)
    if not webhook.enabled:
        return SendResult(False, error="the webhook is disabled", permanent=True)

    body = request_body(delivery)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(webhook.secret, timestamp, body),
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.id),
    }
    try:
        response = await post(http, webhook.url, timeout=timeout, data=body, headers=headers)
    except ReceiverUnreachable as error:
        return SendResult(False, error=str(error))
    if response.ok:
        return SendResult(True, response.status)
    return failure(response)


async def replace_company_webhooks(
    session: AsyncSession, company_id: int, specs: Sequence[WebhookSpec]
) -> None:
    """Make the company's webhooks match `specs` (from `checks.parse_webhooks`), keyed by URL.

    Webhooks missing from `specs` are deleted. Their pending outbox rows then go dead with a
    clear error, so nothing is sent to a URL the company no longer lists.
    """
    existing = {
        webhook.url: webhook
        for webhook in await session.scalars(select(Webhook).where(Webhook.company_id == company_id))
    }
    for spec in specs:
        webhook = existing.pop(spec.url, None)
        if webhook is None:
            webhook = Webhook(company_id=company_id, url=spec.url)
            session.add(webhook)
        webhook.secret = spec.secret
        webhook.events = list(spec.events)
        webhook.enabled = spec.enabled
    for webhook in existing.values():
        await session.delete(webhook)
    await session.flush()
