"""Writing call events to the outbox inside the call flow's transaction.

`enqueue_call_event` runs once per call event for hundreds of concurrent calls, so it does no
network I/O and at most one INSERT. It runs one SELECT of the company's webhooks, primary-key
look-ups that the session's identity map usually serves, and one multi-row INSERT into
`deliveries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

import models
from models import CallEvent, Delivery, DeliveryState, Receiver, Webhook, utcnow
from pbx_bridge.config import Config

_SESSION_FIELDS = (
    "visitor_id",
    "first_visit",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gclid",
    "yclid",
    "fbclid",
    "msclkid",
    "ga_client_id",
    "ym_client_id",
    "referrer",
    "referrer_host",
    "landing_page",
    "search_phrase",
    "device_type",
    "browser",
    "os",
    "started_at",
)

_CALL_FIELDS = (
    "channel_id",
    "linkedid",
    "caller_number",
    "caller_raw",
    "caller_name",
    "dialed_number",
    "dialed_raw",
    "attribution",
    "first_time_caller",
    "answered_by",
    "started_at",
    "answered_at",
    "ended_at",
    "wait_seconds",
    "talk_seconds",
    "outcome",
    "hangup_cause",
    "hangup_cause_text",
    "hangup_side",
    "tags",
)


@dataclass(frozen=True)
class _Analytics:
    """Analytics receivers that get rows; webhooks come from the database instead."""

    ga4_measurement_id: str = ""
    metrica_counter_id: str = ""


_analytics = _Analytics()


def configure(config: Config) -> None:
    """Set which analytics receivers get rows; `Service.start` calls this before any call arrives.

    Until it is called, only webhooks get rows.
    """
    global _analytics
    _analytics = _Analytics(
        ga4_measurement_id=config.ga4.measurement_id if config.ga4.api_secret else "",
        metrica_counter_id=config.metrica.counter_id if config.metrica.token else "",
    )


async def company_webhooks(session: AsyncSession, company_id: int) -> list[Any]:
    """Return the enabled webhooks of a company as (id, url, events) rows."""
    rows = await session.execute(
        select(Webhook.id, Webhook.url, Webhook.events).where(
            Webhook.company_id == company_id, Webhook.enabled.is_(True)
        )
    )
    return list(rows)


def may_enqueue(event: str, session_id: int | None, webhooks: Sequence[Any]) -> bool:
    """Return whether `enqueue_call_event` may write rows for a call, without reading the database.

    A webhook subscribed to the event gets a row. So may GA4 and Metrica at the end of a call
    attributed to a visitor session, when either is configured.
    """
    if any(event in row.events for row in webhooks):
        return True
    return (
        event == CallEvent.ENDED.value
        and session_id is not None
        and bool(_analytics.ga4_measurement_id or _analytics.metrica_counter_id)
    )


async def enqueue_call_event(
    session: AsyncSession,
    call: models.Call,
    event: str,
    webhooks: Sequence[Any] | None = None,
) -> None:
    """Write the deliveries for `event` ("call.started", "call.answered", "call.ended") of `call`
    to the outbox inside the caller's transaction (the journal change and its deliveries commit together).

    `webhooks`, from `company_webhooks`, spares the look-up to a caller that keeps them at hand.
    """
    event = CallEvent(event).value
    if call.id is None:
        await session.flush()

    if webhooks is None:
        webhooks = [] if call.company_id is None else await company_webhooks(session, call.company_id)
    webhooks = [row for row in webhooks if event in row.events]

    visitor = None
    if call.session_id is not None:
        visitor = await session.get(models.VisitorSession, call.session_id)

    send_to_ga4 = (
        event == CallEvent.ENDED.value
        and _analytics.ga4_measurement_id
        and visitor is not None
        and visitor.ga_client_id
    )
    send_to_metrica = (
        event == CallEvent.ENDED.value
        and _analytics.metrica_counter_id
        and visitor is not None
        and (visitor.ym_client_id or visitor.yclid)
    )
    if not webhooks and not send_to_ga4 and not send_to_metrica:
        return

    payload = await _snapshot(session, call, visitor, event)
    now = utcnow()
    values: list[dict[str, Any]] = [
        _row(Receiver.WEBHOOK, event, call, payload, now, target=url, webhook_id=webhook_id)
        for webhook_id, url, _events in webhooks
    ]
    if send_to_ga4:
        values.append(_row(Receiver.GA4, event, call, payload, now, _analytics.ga4_measurement_id))
    if send_to_metrica:
        values.append(
            _row(Receiver.METRICA, event, call, payload, now, _analytics.metrica_counter_id)
        )
    # A Core insert of the table sends one executemany; the ORM form would split the rows by
    # which columns are None.
    await session.execute(insert(Delivery.__table__), values)


def _row(
    receiver: Receiver,
    event: str,
    call: models.Call,
    payload: dict[str, Any],
    now: datetime,
    target: str,
    webhook_id: int | None = None,
) -> dict[str, Any]:
    return {
        "receiver": receiver.value,
        "event": event,
        "call_id": call.id,
        "webhook_id": webhook_id,
        "target": target,
        "payload": payload,
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "pending_since": now,
        "next_attempt_at": now,
    }


async def _snapshot(
    session: AsyncSession,
    call: models.Call,
    visitor: models.VisitorSession | None,
    event: str,
) -> dict[str, Any]:
    """Build the JSON document of the call as it is now: the journal row, its source and session."""
    company = None
    if call.company_id is not None:
        company = await session.get(models.Company, call.company_id)
    source = None
    if call.source_id is not None:
        source = await session.get(models.Source, call.source_id)

    call_data = {"id": call.id, "company_id": call.company_id}
    call_data.update({name: _json_value(getattr(call, name)) for name in _CALL_FIELDS})
    session_data = None
    if visitor is not None:
        session_data = {"id": visitor.id}
        session_data.update({name: _json_value(getattr(visitor, name)) for name in _SESSION_FIELDS})

    return {
        "event": event,
        "occurred_at": utcnow().isoformat(),
        "company": None if company is None else {"id": company.id, "name": company.name},
        "call": call_data,
        "source": None
        if source is None
        else {"id": source.id, "name": source.name, "kind": source.kind},
        "session": session_data,
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
