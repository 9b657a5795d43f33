"""enqueue_call_event: which rows it writes, in whose transaction, and how cheaply."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

import models
from models import Delivery
from pbx_bridge.delivery import outbox
from tests.delivery.conftest import (
    COUNTER_ID,
    MEASUREMENT_ID,
    add_company,
    add_visitor,
    delivery_config,
    end_calls,
)


async def _rows(database) -> list[Delivery]:
    async with database.sessions() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


async def test_enqueue_writes_one_row_per_webhook(database):
    company_id = await add_company(database, "http://127.0.0.1:9/a", "http://127.0.0.1:9/b")

    await end_calls(database, company_id, 1)

    rows = await _rows(database)
    assert [row.target for row in rows] == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    assert {row.receiver for row in rows} == {"webhook"}
    assert {row.state for row in rows} == {"pending"}


async def test_enqueue_skips_webhook_without_event(database):
    company_id = await add_company(database, "http://127.0.0.1:9/a", events=("call.ended",))

    await end_calls(database, company_id, 1, events=("call.started", "call.answered", "call.ended"))

    rows = await _rows(database)
    assert [row.event for row in rows] == ["call.ended"]


async def test_enqueue_snapshot_has_call_source_and_session(database):
    company_id = await add_company(database, "http://127.0.0.1:9/a")
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222")

    await end_calls(database, company_id, 1, session_id=visitor_id)

    payload = (await _rows(database))[0].payload
    assert payload["event"] == "call.ended"
    assert payload["company"]["name"] == "Ромашка"
    assert payload["call"]["caller_number"] == "+79161234567"
    assert payload["call"]["talk_seconds"] == 60.0
    assert payload["call"]["outcome"] == "answered"
    assert payload["session"]["id"] == visitor_id
    assert payload["session"]["utm_source"] == "yandex"
    assert payload["session"]["ga_client_id"] == "111.222"
    assert "ip" not in payload["session"]


async def test_enqueue_rolls_back_with_journal(database):
    company_id = await add_company(database, "http://127.0.0.1:9/a")

    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            call = models.Call(channel_id="rolled-back", attribution="static", company_id=company_id)
            session.add(call)
            await outbox.enqueue_call_event(session, call, "call.started")
            raise RuntimeError("the call flow failed after enqueueing")

    assert await _rows(database) == []


async def test_enqueue_analytics_only_for_ended_calls(database):
    delivery_config()
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222", yclid="987654321")

    await end_calls(database, company_id, 1, session_id=visitor_id, events=("call.started", "call.ended"))

    rows = await _rows(database)
    assert [(row.receiver, row.event) for row in rows] == [("ga4", "call.ended"), ("metrica", "call.ended")]
    assert [row.target for row in rows] == [MEASUREMENT_ID, COUNTER_ID]


async def test_enqueue_no_analytics_without_client_ids(database):
    delivery_config()
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id)

    await end_calls(database, company_id, 1, session_id=visitor_id)

    assert await _rows(database) == []


async def test_enqueue_no_analytics_when_unconfigured(database):
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222", yclid="1")

    await end_calls(database, company_id, 1, session_id=visitor_id)

    assert await _rows(database) == []


async def test_enqueue_rejects_unknown_event(database):
    company_id = await add_company(database, "http://127.0.0.1:9/a")

    with pytest.raises(ValueError):
        await end_calls(database, company_id, 1, events=("call.transferred",))


async def test_enqueue_uses_one_insert(database):
    delivery_config()
    company_id = await add_company(database, "http://127.0.0.1:9/a", "http://127.0.0.1:9/b")
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222", yclid="1")
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    async with database.transaction() as session:
        call = models.Call(
            channel_id="counted",
            attribution="pool",
            company_id=company_id,
            session_id=visitor_id,
            outcome="answered",
        )
        session.add(call)
        await session.flush()
        statements.clear()
        await outbox.enqueue_call_event(session, call, "call.ended")
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)

    inserts = [text for text in statements if text.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert "deliveries" in inserts[0]
    assert len(await _rows(database)) == 4
