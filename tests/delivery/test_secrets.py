"""Receiver secrets stay out of outbox rows and logs when a delivery fails."""

from __future__ import annotations

import logging
import socket

import pytest
from sqlalchemy import select

from models import Delivery
from pbx_bridge.delivery.worker import DeliveryWorker
from tests.delivery.conftest import (
    GA4_SECRET,
    METRICA_TOKEN,
    WEBHOOK_SECRET,
    add_company,
    add_visitor,
    delivery_config,
    end_calls,
)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("failure_status", [None, 500])
async def test_failed_deliveries_keep_secrets_out(
    database, webhook_receiver, ga4_receiver, metrica_receiver, caplog, failure_status
):
    # None: nothing listens on the receivers' ports. 500: every receiver fails on command.
    if failure_status is None:
        webhook_url, ga4_url, metrica_url = closed_port_url() + "/hook", closed_port_url(), closed_port_url()
    else:
        for receiver in (webhook_receiver, ga4_receiver, metrica_receiver):
            receiver.failure_status = failure_status
        webhook_url, ga4_url, metrica_url = (
            webhook_receiver.url, ga4_receiver.base_url, metrica_receiver.base_url
        )
    config = delivery_config(ga4_url=ga4_url, metrica_url=metrica_url)
    company_id = await add_company(database, webhook_url)
    visitor_id = await add_visitor(
        database, company_id, ga_client_id="111.222", ym_client_id="1700000000123456789"
    )
    await end_calls(database, company_id, 1, session_id=visitor_id)
    worker = DeliveryWorker(database, config)
    caplog.set_level(logging.DEBUG, logger="pbx_bridge")

    await worker.run_once()
    await worker.stop()

    async with database.sessions() as session:
        rows = list(await session.scalars(select(Delivery).order_by(Delivery.id)))
    assert sorted(row.receiver for row in rows) == ["ga4", "metrica", "webhook"]
    assert all(row.state == "pending" and row.last_error for row in rows)
    kept = " ".join(row.last_error for row in rows) + " " + caplog.text
    for secret in (GA4_SECRET, METRICA_TOKEN, WEBHOOK_SECRET):
        assert secret not in kept
