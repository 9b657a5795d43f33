"""Fixtures for delivery tests: local receivers, a fast-retry configuration and sample calls."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import models
from models import utcnow
from pbx_bridge.config import Config, DeliveryConfig, Ga4Config, MetricaConfig
from pbx_bridge.delivery import outbox
from pbx_bridge.delivery.checks import WebhookSpec
from pbx_bridge.delivery.webhooks import replace_company_webhooks
from pbx_bridge.storage import Database
from tests.delivery.receivers import Ga4Receiver, MetricaReceiver, WebhookReceiver

WEBHOOK_SECRET = "webhook-secret-0123456789"
MEASUREMENT_ID = "G-TEST12345"
GA4_SECRET = "ga4-api-secret"
COUNTER_ID = "12345678"
METRICA_TOKEN = "metrica-oauth-token"


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def ga4_receiver() -> AsyncIterator[Ga4Receiver]:
    receiver = Ga4Receiver(MEASUREMENT_ID, GA4_SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def metrica_receiver() -> AsyncIterator[MetricaReceiver]:
    receiver = MetricaReceiver(COUNTER_ID, METRICA_TOKEN)
    await receiver.start()
    yield receiver
    await receiver.stop()


def delivery_config(
    ga4_url: str = "http://127.0.0.1:9", metrica_url: str = "http://127.0.0.1:9", **delivery: float
) -> Config:
    """A configuration with retries in tens of milliseconds and receivers on loopback."""
    settings = {
        "poll_interval": 0.01,
        "retry_min_delay": 0.01,
        "retry_max_delay": 0.04,
        "give_up_after": 3600.0,
        "request_timeout": 2.0,
        **delivery,
    }
    config = Config(
        delivery=DeliveryConfig(**settings),
        ga4=Ga4Config(measurement_id=MEASUREMENT_ID, api_secret=GA4_SECRET, base_url=ga4_url),
        metrica=MetricaConfig(
            counter_id=COUNTER_ID,
            token=METRICA_TOKEN,
            base_url=metrica_url,
            call_url_template="https://pbx.example/calls/{call_id}",
        ),
    )
    outbox.configure(config)
    return config


@pytest.fixture(autouse=True)
def _reset_outbox_configuration() -> None:
    outbox.configure(Config(ga4=Ga4Config(), metrica=MetricaConfig()))


async def add_company(database: Database, *webhook_urls: str, events: tuple[str, ...] | None = None) -> int:
    async with database.transaction() as session:
        company = models.Company(name="Ромашка")
        session.add(company)
        await session.flush()
        specs = [
            WebhookSpec(url, WEBHOOK_SECRET, **({"events": events} if events else {}))
            for url in webhook_urls
        ]
        await replace_company_webhooks(session, company.id, specs)
        return company.id


async def add_visitor(database: Database, company_id: int, **fields: str) -> int:
    async with database.transaction() as session:
        site = models.Site(company_id=company_id, name="romashka.ru", site_key=f"key-{company_id}")
        session.add(site)
        await session.flush()
        visitor = models.VisitorSession(
            site_id=site.id,
            visitor_id="visitor-1",
            utm_source="yandex",
            utm_medium="cpc",
            landing_page="https://romashka.ru/?utm_source=yandex",
            **fields,
        )
        session.add(visitor)
        await session.flush()
        return visitor.id


async def end_calls(
    database: Database,
    company_id: int,
    count: int,
    *,
    session_id: int | None = None,
    events: tuple[str, ...] = ("call.ended",),
    channel_prefix: str = "call",
) -> list[int]:
    """Journal `count` answered calls and enqueue `events` for each, as the call flow does."""
    ids = []
    started = utcnow() - timedelta(minutes=5)
    for number in range(count):
        async with database.transaction() as session:
            call = models.Call(
                channel_id=f"{channel_prefix}-{number}",
                caller_number="+79161234567",
                caller_raw="89161234567",
                dialed_number="+74951110001",
                company_id=company_id,
                session_id=session_id,
                attribution="pool" if session_id else "static",
                first_time_caller=True,
                started_at=started,
                answered_at=started + timedelta(seconds=7),
                ended_at=started + timedelta(seconds=67),
                wait_seconds=7.0,
                talk_seconds=60.0,
                outcome="answered",
            )
            session.add(call)
            await session.flush()
            for event in events:
                await outbox.enqueue_call_event(session, call, event)
            ids.append(call.id)
    return ids


def with_delivery(config: Config, **changes: float) -> Config:
    return dataclasses.replace(config, delivery=dataclasses.replace(config.delivery, **changes))
