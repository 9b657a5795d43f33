"""The outbox worker: retries, backoff, dead rows and exactly-once delivery."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from models import Delivery, utcnow
from pbx_bridge.delivery.worker import DeliveryWorker, retry_delay
from pbx_bridge.storage import Database
from tests.delivery.conftest import add_company, delivery_config, end_calls


async def _rows(database) -> list[Delivery]:
    async with database.sessions() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


async def _drain(worker: DeliveryWorker, database: Database, rounds: int = 200) -> None:
    """Run the worker until no row is pending, pausing for the short test backoff."""
    for _ in range(rounds):
        await worker.run_once()
        if all(row.state != "pending" for row in await _rows(database)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("rows still pending after the worker drained the outbox")


def test_retry_delay_doubles_then_caps():
    delays = [retry_delay(attempt, 5.0, 60.0) for attempt in range(1, 7)]

    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_retry_delay_survives_huge_attempt_count():
    assert retry_delay(10_000, 5.0, 600.0) == 600.0


async def test_worker_delivers_pending_rows(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 3)
    worker = DeliveryWorker(database, delivery_config())

    handled = await worker.run_once()
    await worker.stop()

    rows = await _rows(database)
    assert handled == 3
    assert [row.state for row in rows] == ["delivered"] * 3
    assert [row.attempts for row in rows] == [1, 1, 1]
    assert sorted(webhook_receiver.delivery_ids()) == [row.id for row in rows]


async def test_failed_attempt_schedules_retry(database, webhook_receiver):
    webhook_receiver.failure_status = 503
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    worker = DeliveryWorker(database, delivery_config(retry_min_delay=30.0, retry_max_delay=60.0))

    before = utcnow()
    await worker.run_once()
    await worker.stop()

    row = (await _rows(database))[0]
    assert row.state == "pending"
    assert row.attempts == 1
    assert row.last_status == 503
    assert row.last_error == "HTTP 503: receiver failing on command"
    assert row.next_attempt_at >= before + timedelta(seconds=30)


async def test_unreachable_receiver_is_retried(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    await webhook_receiver.stop()
    worker = DeliveryWorker(database, delivery_config())

    await worker.run_once()
    await worker.stop()

    row = (await _rows(database))[0]
    assert row.state == "pending"
    assert row.last_status is None
    assert row.last_error.startswith("request to 127.0.0.1:")


async def test_outage_then_recovery_delivers_once(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 20)
    worker = DeliveryWorker(database, delivery_config())
    await webhook_receiver.stop()
    for _ in range(3):
        await worker.run_once()
        await asyncio.sleep(0.05)

    await webhook_receiver.start()
    await _drain(worker, database)
    await worker.stop()

    rows = await _rows(database)
    assert [row.state for row in rows] == ["delivered"] * 20
    assert all(row.attempts >= 2 for row in rows)
    assert sorted(webhook_receiver.delivery_ids()) == [row.id for row in rows]


async def test_restart_during_outage_delivers_once(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    config = delivery_config()
    await end_calls(database, company_id, 10, channel_prefix="before")
    webhook_receiver.failure_status = 503

    first = DeliveryWorker(database, config)
    first.start()
    await asyncio.sleep(0.2)
    await end_calls(database, company_id, 10, channel_prefix="during")
    await asyncio.sleep(0.1)
    await first.stop()
    await database.close()

    webhook_receiver.failure_status = None
    restarted_database = Database(database.url)
    second = DeliveryWorker(restarted_database, config)
    second.start()
    try:
        for _ in range(300):
            if len(webhook_receiver.accepted) >= 20:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        await second.stop()

    rows = await _rows(restarted_database)
    await restarted_database.close()
    assert [row.state for row in rows] == ["delivered"] * 20
    assert sorted(webhook_receiver.delivery_ids()) == [row.id for row in rows]
    assert webhook_receiver.requests > 20


async def test_permanent_4xx_goes_dead_after_give_up(database, webhook_receiver):
    webhook_receiver.failure_status = 422
    webhook_receiver.failure_body = '{"error": "unknown call schema"}'
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 2)
    worker = DeliveryWorker(database, delivery_config(give_up_after=3600.0))
    await worker.run_once()
    # Move the rows' give-up window into the past instead of waiting an hour.
    async with database.transaction() as session:
        await session.execute(
            update(Delivery).values(
                pending_since=utcnow() - timedelta(hours=2), next_attempt_at=utcnow()
            )
        )

    await worker.run_once()
    await worker.stop()

    rows = await _rows(database)
    assert [row.state for row in rows] == ["dead", "dead"]
    assert [row.attempts for row in rows] == [2, 2]
    assert [row.last_status for row in rows] == [422, 422]
    assert {row.last_error for row in rows} == {'HTTP 422: {"error": "unknown call schema"}'}
    assert webhook_receiver.accepted == []


async def test_last_retry_is_at_give_up_time(database, webhook_receiver):
    webhook_receiver.failure_status = 500
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    config = delivery_config(give_up_after=60.0, retry_min_delay=600.0, retry_max_delay=600.0)
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    row = (await _rows(database))[0]
    assert row.state == "pending"
    assert row.next_attempt_at == row.pending_since + timedelta(seconds=60)


async def test_4xx_stays_pending_before_give_up(database, webhook_receiver):
    webhook_receiver.failure_status = 400
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    worker = DeliveryWorker(database, delivery_config(give_up_after=3600.0))

    await worker.run_once()
    await worker.stop()

    assert [row.state for row in await _rows(database)] == ["pending"]


async def test_future_rows_are_not_claimed(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    async with database.transaction() as session:
        await session.execute(update(Delivery).values(next_attempt_at=utcnow() + timedelta(hours=1)))
    worker = DeliveryWorker(database, delivery_config())

    handled = await worker.run_once()
    await worker.stop()

    assert handled == 0
    assert webhook_receiver.requests == 0


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_concurrent_workers_never_share_rows(database_url, webhook_receiver):
    webhook_receiver.delay = 0.05
    config = delivery_config(batch_size=5)
    databases = [Database(database_url) for _ in range(3)]
    company_id = await add_company(databases[0], webhook_receiver.url)
    await end_calls(databases[0], company_id, 30)
    workers = [DeliveryWorker(db, config) for db in databases]

    for _ in range(10):
        await asyncio.gather(*(worker.run_once() for worker in workers))

    rows = await _rows(databases[0])
    for worker, db in zip(workers, databases):
        await worker.stop()
        await db.close()
    assert [row.state for row in rows] == ["delivered"] * 30
    assert sorted(webhook_receiver.delivery_ids()) == [row.id for row in rows]


async def test_service_runs_worker_until_stopped(database, webhook_receiver):
    from pbx_bridge.config import DatabaseConfig
    from pbx_bridge.service import Service

    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 2)
    config = dataclasses.replace(delivery_config(), database=DatabaseConfig(url=database.url))
    service = Service(config, with_ari=False, with_http=False)

    await service.start()
    for _ in range(200):
        if len(webhook_receiver.accepted) == 2:
            break
        await asyncio.sleep(0.01)
    await service.stop()

    assert sorted(webhook_receiver.delivery_ids()) == [row.id for row in await _rows(database)]


async def test_retry_runs_before_poll_interval(database, webhook_receiver):
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    webhook_receiver.failure_status = 503
    worker = DeliveryWorker(
        database, delivery_config(poll_interval=60.0, retry_min_delay=0.2, retry_max_delay=0.2)
    )

    worker.start()
    for _ in range(100):
        rows = await _rows(database)
        if rows[0].attempts >= 1:
            break
        await asyncio.sleep(0.02)
    webhook_receiver.failure_status = None
    for _ in range(150):
        rows = await _rows(database)
        if rows[0].state == "delivered":
            break
        await asyncio.sleep(0.02)
    await worker.stop()

    assert rows[0].state == "delivered"
    assert rows[0].attempts == 2


async def test_wake_polls_before_poll_interval(database, webhook_receiver):
    worker = DeliveryWorker(database, delivery_config(poll_interval=60.0))
    worker.start()
    await asyncio.sleep(0.1)
    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)

    worker.wake()
    for _ in range(150):
        if webhook_receiver.accepted:
            break
        await asyncio.sleep(0.02)
    await worker.stop()

    assert [row.state for row in await _rows(database)] == ["delivered"]


async def test_service_without_delivery_sends_nothing(database, webhook_receiver):
    from pbx_bridge.config import DatabaseConfig
    from pbx_bridge.service import Service

    company_id = await add_company(database, webhook_receiver.url)
    await end_calls(database, company_id, 1)
    config = dataclasses.replace(delivery_config(), database=DatabaseConfig(url=database.url))
    service = Service(config, with_ari=False, with_http=False, with_delivery=False)

    await service.start()
    await asyncio.sleep(0.1)
    await service.stop()

    assert service.delivery is None
    assert webhook_receiver.requests == 0
