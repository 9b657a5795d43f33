"""Webhooks: signatures, the request a receiver gets, and definitions from setup files."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from models import Delivery, Webhook
from pbx_bridge.delivery.checks import WebhookDefinitionError, WebhookSpec, parse_webhooks
from pbx_bridge.delivery.webhooks import replace_company_webhooks, sign, verify
from pbx_bridge.delivery.worker import DeliveryWorker
from tests.delivery.conftest import WEBHOOK_SECRET, add_company, add_visitor, delivery_config, end_calls

BODY = b'{"event":"call.ended"}'


def test_signature_verifies():
    now = int(time.time())

    assert verify("secret-key", str(now), sign("secret-key", now, BODY), BODY)


def test_signature_rejects_changed_body():
    now = int(time.time())

    assert not verify("secret-key", str(now), sign("secret-key", now, BODY), BODY + b" ")


def test_signature_rejects_other_secret():
    now = int(time.time())

    assert not verify("secret-key", str(now), sign("other-key", now, BODY), BODY)


def test_signature_rejects_stale_timestamp():
    then = int(time.time()) - 600

    assert not verify("secret-key", str(then), sign("secret-key", then, BODY), BODY)


def test_signature_covers_timestamp():
    then = int(time.time()) - 600
    now = int(time.time())

    assert not verify("secret-key", str(now), sign("secret-key", then, BODY), BODY)


def test_signature_format_is_hex_sha256():
    signature = sign("key", 1700000000, b"{}")

    assert signature.startswith("sha256=")
    assert len(signature) == len("sha256=") + 64


async def test_webhook_request_carries_call_data(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    visitor_id = await add_visitor(database, company_id, yclid="555")
    await end_calls(database, company_id, 1, session_id=visitor_id)
    worker = DeliveryWorker(database, delivery_config())

    await worker.run_once()
    await worker.stop()

    document = webhook_receiver.accepted[0]
    headers = webhook_receiver.headers[0]
    assert document["event"] == "call.ended"
    assert document["call"]["caller_number"] == "+79161234567"
    assert document["call"]["wait_seconds"] == 7.0
    assert document["session"]["yclid"] == "555"
    assert document["company"] == {"id": company_id, "name": "Ромашка"}
    assert headers["X-PBX-Bridge-Event"] == "call.ended"
    assert headers["X-PBX-Bridge-Delivery"] == str(document["delivery_id"])


async def test_webhook_with_wrong_secret_is_rejected(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    async with database.transaction() as session:
        webhook = (await session.scalars(select(Webhook))).one()
        webhook.secret = "a-different-secret-value"
    await end_calls(database, company_id, 1)
    worker = DeliveryWorker(database, delivery_config())

    await worker.run_once()
    await worker.stop()

    async with database.sessions() as session:
        row = (await session.scalars(select(Delivery))).one()
    assert row.state == "pending"
    assert row.last_status == 401
    assert webhook_receiver.accepted == []


async def test_removed_webhook_rows_go_dead(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    async with database.transaction() as session:
        await replace_company_webhooks(session, company_id, [])
    worker = DeliveryWorker(database, delivery_config())

    await worker.run_once()
    await worker.stop()

    async with database.sessions() as session:
        row = (await session.scalars(select(Delivery))).one()
    assert row.state == "dead"
    assert row.webhook_id is None
    assert row.last_error == "the webhook was removed from the company"


async def test_replace_webhooks_updates_by_url(database):
    company_id = await add_company(database, "http://127.0.0.1:9/a", "http://127.0.0.1:9/b")
    specs = [
        WebhookSpec("http://127.0.0.1:9/b", "new-secret-0123456789", ("call.ended",)),
        WebhookSpec("http://127.0.0.1:9/c", WEBHOOK_SECRET),
    ]

    async with database.transaction() as session:
        await replace_company_webhooks(session, company_id, specs)

    async with database.sessions() as session:
        webhooks = list(await session.scalars(select(Webhook).order_by(Webhook.url)))
    assert [webhook.url for webhook in webhooks] == ["http://127.0.0.1:9/b", "http://127.0.0.1:9/c"]
    assert webhooks[0].secret == "new-secret-0123456789"
    assert webhooks[0].events == ["call.ended"]
    assert webhooks[1].events == ["call.started", "call.answered", "call.ended"]


def test_parse_webhooks_accepts_valid_table():
    raw = [{"url": "https://crm.example/hook", "secret": WEBHOOK_SECRET, "events": ["call.ended"]}]

    specs = parse_webhooks(raw, "tracking.toml: company 'Ромашка'")

    assert specs == [WebhookSpec("https://crm.example/hook", WEBHOOK_SECRET, ("call.ended",))]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "ftp://crm.example/hook"}, "expected an http:// or https:// URL"),
        ({"url": "https:///hook"}, "the host is missing"),
        ({"url": "https://crm.example:99999/hook"}, "Port out of range"),
        ({"url": "https://user:pw@crm.example/hook"}, "credentials in the URL"),
        ({"url": "crm.example/hook"}, "expected an http:// or https:// URL"),
        ({"url": 42}, "url is missing or not a string"),
        ({"secret": "short"}, "shorter than 16 characters"),
        ({"events": ["call.transferred"]}, "event 'call.transferred' is unknown"),
        ({"events": []}, "events must be a non-empty array"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"timeout": 5}, "unknown key 'timeout'"),
    ],
)
def test_parse_webhooks_rejects_bad_table(table, message):
    raw = [{"url": "https://crm.example/hook", "secret": WEBHOOK_SECRET, **table}]

    with pytest.raises(WebhookDefinitionError) as error:
        parse_webhooks(raw, "tracking.toml: company 'Ромашка'")

    assert message in str(error.value)
    assert str(error.value).startswith("tracking.toml: company 'Ромашка': webhook #1")


def test_parse_webhooks_rejects_duplicate_url():
    table = {"url": "https://crm.example/hook", "secret": WEBHOOK_SECRET}

    with pytest.raises(WebhookDefinitionError) as error:
        parse_webhooks([table, table], "tracking.toml")

    assert "listed twice" in str(error.value)
