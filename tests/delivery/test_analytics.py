"""GA4 Measurement Protocol events and Yandex Metrica call uploads against local receivers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from models import Delivery, VisitorSession, utcnow
from pbx_bridge.config import ConfigError, load_config
from pbx_bridge.delivery.ga4 import build_request
from pbx_bridge.delivery.worker import DeliveryWorker
from tests.delivery.conftest import add_company, add_visitor, delivery_config, end_calls
from tests.delivery.receivers import ga4_problems


async def _rows(database) -> list[Delivery]:
    async with database.sessions() as session:
        return list(await session.scalars(select(Delivery).order_by(Delivery.id)))


def _payload(**session: str) -> dict:
    now = utcnow()
    return {
        "call": {
            "id": 7,
            "outcome": "no-answer",
            "talk_seconds": None,
            "wait_seconds": 20.4,
            "first_time_caller": False,
            "attribution": "pool",
            "started_at": (now - timedelta(minutes=1)).isoformat(),
            "ended_at": now.isoformat(),
        },
        "source": {"name": "Яндекс Директ " * 20},
        "session": {"id": 3, "ga_client_id": "111.222", **session},
    }


def test_ga4_request_meets_protocol_limits():
    request = build_request(_payload(utm_campaign="x" * 300), "phone_call")

    assert ga4_problems(request) == []
    assert len(request["events"][0]["params"]["source"]) == 100
    assert len(request["events"][0]["params"]["utm_campaign"]) == 100


def test_ga4_request_carries_call_outcome():
    params = build_request(_payload(), "phone_call")["events"][0]["params"]

    assert params["outcome"] == "no-answer"
    assert params["answered"] == 0
    assert params["duration_seconds"] == 0
    assert params["wait_seconds"] == 20
    assert params["tracking_session_id"] == "3"


async def test_ga4_event_reaches_receiver(database, ga4_receiver):
    config = delivery_config(ga4_url=ga4_receiver.base_url)
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222")
    await end_calls(database, company_id, 1, session_id=visitor_id)
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    assert [row.state for row in await _rows(database)] == ["delivered"]
    document = ga4_receiver.accepted[0]
    assert document["client_id"] == "111.222"
    assert document["events"][0]["name"] == "phone_call"
    assert document["events"][0]["params"]["outcome"] == "answered"
    assert document["events"][0]["params"]["duration_seconds"] == 60
    assert document["events"][0]["params"]["utm_source"] == "yandex"


async def test_ga4_wrong_secret_keeps_answer(database, ga4_receiver):
    ga4_receiver.api_secret = "rotated-secret"
    config = delivery_config(ga4_url=ga4_receiver.base_url)
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222")
    await end_calls(database, company_id, 1, session_id=visitor_id)
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    row = (await _rows(database))[0]
    assert row.state == "pending"
    assert row.last_error == "HTTP 403: invalid api_secret"
    assert "ga4-api-secret" not in row.last_error


async def test_ga4_event_older_than_72_hours_is_dead(database, ga4_receiver):
    config = delivery_config(ga4_url=ga4_receiver.base_url)
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ga_client_id="111.222")
    await end_calls(database, company_id, 1, session_id=visitor_id)
    async with database.transaction() as session:
        row = (await session.scalars(select(Delivery))).one()
        old = (utcnow() - timedelta(hours=73)).isoformat()
        row.payload = {**row.payload, "call": {**row.payload["call"], "ended_at": old}}
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    row = (await _rows(database))[0]
    assert row.state == "dead"
    assert "72 hours" in row.last_error
    assert ga4_receiver.requests == 0


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"PBX_BRIDGE_GA4_MEASUREMENT_ID": "UA-12345-1"}, "ga4.measurement_id is 'UA-12345-1'"),
        ({"PBX_BRIDGE_GA4_MEASUREMENT_ID": "g-abc123"}, "ga4.measurement_id is 'g-abc123'"),
        ({"PBX_BRIDGE_GA4_MEASUREMENT_ID": "G-ABC12345"}, "ga4.api_secret is missing"),
        ({"PBX_BRIDGE_GA4_EVENT_NAME": "phone call"}, "ga4.event_name is 'phone call'"),
        ({"PBX_BRIDGE_GA4_EVENT_NAME": "session_start"}, "reserved"),
        ({"PBX_BRIDGE_GA4_EVENT_NAME": "google_call"}, "reserved"),
        ({"PBX_BRIDGE_GA4_BASE_URL": "www.google-analytics.com"}, "ga4.base_url"),
        ({"PBX_BRIDGE_METRICA_COUNTER_ID": "abc"}, "metrica.counter_id is 'abc'"),
        ({"PBX_BRIDGE_METRICA_COUNTER_ID": "123"}, "metrica.token is missing"),
        ({"PBX_BRIDGE_DELIVERY_RETRY_MIN_DELAY": "100", "PBX_BRIDGE_DELIVERY_RETRY_MAX_DELAY": "10"}, "greater than"),
        ({"PBX_BRIDGE_DELIVERY_GIVE_UP_AFTER": "0"}, "delivery.give_up_after must be a positive"),
    ],
)
def test_config_rejects_bad_receiver_settings(variables, message):
    with pytest.raises(ConfigError) as error:
        load_config(environ=variables)

    assert message in str(error.value)


def test_config_hides_base_url_credentials():
    with pytest.raises(ConfigError) as error:
        load_config(environ={"PBX_BRIDGE_GA4_BASE_URL": "https://ga:base-pass@ga.example"})

    assert "'https://***@ga.example'" in str(error.value)
    assert "base-pass" not in str(error.value)


def test_config_accepts_measurement_id_with_secret():
    config = load_config(
        environ={"PBX_BRIDGE_GA4_MEASUREMENT_ID": "G-ABC12345", "PBX_BRIDGE_GA4_API_SECRET": "s"}
    )

    assert config.ga4.measurement_id == "G-ABC12345"


async def test_metrica_uploads_calls_in_one_batch(database, metrica_receiver):
    config = delivery_config(metrica_url=metrica_receiver.base_url)
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ym_client_id="1700000000123456789")
    call_ids = await end_calls(database, company_id, 3, session_id=visitor_id)
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    rows = await _rows(database)
    assert [row.state for row in rows] == ["delivered"] * 3
    assert {row.upload_id for row in rows} == {"1"}
    assert {row.upload_status for row in rows} == {"UPLOADED"}
    assert len(metrica_receiver.uploads) == 1
    client_id_type, lines = metrica_receiver.uploads[0]
    assert client_id_type == "CLIENT_ID"
    assert [line["CallTrackerURL"] for line in lines] == [
        f"https://pbx.example/calls/{call_id}" for call_id in call_ids
    ]


async def test_metrica_csv_fields(database, metrica_receiver):
    config = delivery_config(metrica_url=metrica_receiver.base_url)
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, ym_client_id="1700000000123456789")
    await end_calls(database, company_id, 1, session_id=visitor_id)
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    line = metrica_receiver.rows()[0]
    assert line["ClientId"] == "1700000000123456789"
    assert line["PhoneNumber"] == "+79161234567"
    assert line["TalkDuration"] == "60"
    assert line["HoldDuration"] == "7"
    assert line["CallMissed"] == "0"
    assert line["FirstTimeCaller"] == "1"
    assert line["StaticCall"] == "0"
    assert line["URL"] == "https://romashka.ru/?utm_source=yandex"
    assert int(line["DateTime"]) > 1_700_000_000


async def test_metrica_splits_client_id_and_yclid(database, metrica_receiver):
    config = delivery_config(metrica_url=metrica_receiver.base_url)
    company_id = await add_company(database)
    with_client_id = await add_visitor(database, company_id, ym_client_id="1700000000123456789")
    with_yclid = await _second_visitor(database, with_client_id, yclid="9876543210")
    await end_calls(database, company_id, 1, session_id=with_client_id, channel_prefix="a")
    await end_calls(database, company_id, 1, session_id=with_yclid, channel_prefix="b")
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    uploads = sorted(metrica_receiver.uploads, key=lambda upload: upload[0])
    assert [client_id_type for client_id_type, _ in uploads] == ["CLIENT_ID", "YCLID"]
    assert uploads[1][1][0]["Yclid"] == "9876543210"


async def test_metrica_bad_token_keeps_answer(database, metrica_receiver):
    metrica_receiver.token = "another-token"
    config = delivery_config(metrica_url=metrica_receiver.base_url)
    company_id = await add_company(database)
    visitor_id = await add_visitor(database, company_id, yclid="9876543210")
    await end_calls(database, company_id, 1, session_id=visitor_id)
    worker = DeliveryWorker(database, config)

    await worker.run_once()
    await worker.stop()

    row = (await _rows(database))[0]
    assert row.state == "pending"
    assert row.last_status == 403
    assert "invalid OAuth token" in row.last_error


async def _second_visitor(database, first_visitor_id: int, **fields: str) -> int:
    async with database.transaction() as session:
        first = await session.get(VisitorSession, first_visitor_id)
        visitor = VisitorSession(site_id=first.site_id, visitor_id="visitor-2", **fields)
        session.add(visitor)
        await session.flush()
        return visitor.id
