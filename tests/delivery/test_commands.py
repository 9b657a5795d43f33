"""`pbx-bridge outbox list` and `pbx-bridge outbox retry` through the real entry point."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from models import Delivery
from pbx_bridge.cli import main
from pbx_bridge.delivery.worker import DeliveryWorker
from tests.delivery.conftest import add_company, delivery_config, end_calls


async def _dead_rows(database, webhook_receiver, count: int) -> None:
    webhook_receiver.failure_status = 410
    webhook_receiver.failure_body = "gone"
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, count)
    worker = DeliveryWorker(database, delivery_config(give_up_after=0.001))
    await asyncio.sleep(0.01)
    await worker.run_once()
    await worker.stop()


async def _states(database) -> list[str]:
    async with database.sessions() as session:
        return list(await session.scalars(select(Delivery.state).order_by(Delivery.id)))


def _cli(monkeypatch, database_url: str, *argv: str) -> int:
    monkeypatch.setenv("PBX_BRIDGE_DATABASE_URL", database_url)
    monkeypatch.delenv("PBX_BRIDGE_CONFIG", raising=False)
    return main(list(argv))


async def test_outbox_list_shows_dead_rows(database, webhook_receiver, monkeypatch, capsys):
    await _dead_rows(database, webhook_receiver, 2)

    status = await asyncio.to_thread(_cli, monkeypatch, database.url, "outbox", "list", "--state", "dead")

    output = capsys.readouterr().out
    assert status == 0
    assert output.count("HTTP 410: gone") == 2
    assert "pending: 0, delivered: 0, dead: 2" in output


async def test_outbox_retry_requeues_listed_ids(database, webhook_receiver, monkeypatch, capsys):
    await _dead_rows(database, webhook_receiver, 2)
    async with database.sessions() as session:
        first_id = (await session.scalars(select(Delivery.id).order_by(Delivery.id))).first()

    status = await asyncio.to_thread(_cli, monkeypatch, database.url, "outbox", "retry", str(first_id))

    assert status == 0
    assert "1 dead row(s) queued" in capsys.readouterr().out
    assert await _states(database) == ["pending", "dead"]


async def test_outbox_retry_all_then_delivers(database, webhook_receiver, monkeypatch):
    await _dead_rows(database, webhook_receiver, 2)
    webhook_receiver.failure_status = None

    status = await asyncio.to_thread(_cli, monkeypatch, database.url, "outbox", "retry", "--all-dead")
    worker = DeliveryWorker(database, delivery_config())
    await worker.run_once()
    await worker.stop()

    assert status == 0
    assert await _states(database) == ["delivered", "delivered"]
    assert len(webhook_receiver.accepted) == 2


def test_outbox_retry_without_ids_is_usage_error(monkeypatch, capsys, tmp_path):
    status = _cli(monkeypatch, f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", "outbox", "retry")

    assert status == 2
    assert "needs row ids or --all-dead" in capsys.readouterr().err
