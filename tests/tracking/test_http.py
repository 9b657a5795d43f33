import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

import models
from pbx_bridge.config import Config, TrackingConfig
from pbx_bridge.http.app import AppContext, build_app

from tests.tracking.conftest import SiteSetup

ORIGIN = "https://okna.example"


async def _client(database, **tracking) -> TestClient:
    config = replace(Config(), tracking=TrackingConfig(**{"site_cache_seconds": 0.0, **tracking}))
    client = TestClient(TestServer(build_app(AppContext(config=config, database=database)), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(database, site) -> AsyncIterator[TestClient]:
    client = await _client(database)
    yield client
    await client.close()


def _body(**fields) -> dict:
    body = {
        "site_key": "okna-key-1",
        "visitor_id": "visitor-0001",
        "page_url": "https://okna.example/?utm_source=google",
        "utm_source": "google",
    }
    body.update(fields)
    return body


async def _post(client: TestClient, path: str, body, origin: str | None = ORIGIN, raw: bytes | None = None):
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if origin is not None:
        headers["Origin"] = origin
    data = raw if raw is not None else json.dumps(body)
    response = await client.post(f"/api/v1/track/{path}", data=data, headers=headers)
    return response, await response.json()


async def _count(database, model) -> int:
    async with database.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_start_returns_pool_number(client, site: SiteSetup):
    response, data = await _post(client, "session", _body())

    assert response.status == 200
    assert data["number"]["e164"] in site.pool_numbers
    assert data["kind"] == "pool"
    assert data["heartbeat_interval"] == 30
    assert data["display"].startswith("+7 (495) 100-")
    assert data["replace"][0]["e164"] == site.default_number
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_start_takes_user_agent_header(client, database, site):
    headers = {"Origin": ORIGIN, "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"}
    response = await client.post("/api/v1/track/session", data=json.dumps(_body()), headers=headers)
    data = await response.json()

    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, data["session_id"])
    assert row.device_type == "mobile"
    assert row.os == "iOS"
    assert row.browser == "Mobile Safari"


async def test_heartbeat_keeps_lease(client, site):
    _, started = await _post(client, "session", _body())

    response, data = await _post(
        client, "heartbeat", {"site_key": "okna-key-1", "visitor_id": "visitor-0001", "session_id": started["session_id"]}
    )

    assert response.status == 200
    assert data == {"held": True}


async def test_heartbeat_of_unknown_session_is_409(client, site):
    response, data = await _post(
        client, "heartbeat", {"site_key": "okna-key-1", "visitor_id": "visitor-0001", "session_id": 999}
    )

    assert response.status == 409
    assert data["error"]["code"] == "lease_lost"


async def test_leave_releases_lease(client, database, site):
    _, started = await _post(client, "session", _body())

    response, data = await _post(
        client, "leave", {"site_key": "okna-key-1", "visitor_id": "visitor-0001", "session_id": started["session_id"]}
    )

    async with database.sessions() as session:
        lease = (await session.execute(select(models.NumberLease))).scalar_one()
    assert response.status == 200
    assert data == {"released": True}
    assert lease.released_at is not None


async def test_reload_gets_same_number(client, site):
    _, first = await _post(client, "session", _body())
    _, second = await _post(client, "session", _body())

    assert second["number"] == first["number"]
    assert second["session_id"] == first["session_id"]


async def test_second_visitor_gets_other_number(client, site):
    _, first = await _post(client, "session", _body())
    _, second = await _post(client, "session", _body(visitor_id="visitor-0002"))

    assert second["number"]["e164"] != first["number"]["e164"]


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"site_key": None}, 400, "invalid_field"),
        ({"site_key": "no-such-site"}, 404, "unknown_site_key"),
        ({"site_key": "bad key!"}, 400, "invalid_field"),
        ({"visitor_id": "short"}, 400, "invalid_field"),
        ({"visitor_id": 12345678}, 400, "invalid_field"),
        ({"utm_source": "x" * 201}, 400, "invalid_field"),
        ({"utm_campaign": "<script>alert(1)</script>"}, 400, "invalid_field"),
        ({"utm_term": "a\x00b"}, 400, "invalid_field"),
        ({"utm_medium": "cpc\r\nSet-Cookie: x=1"}, 400, "invalid_field"),
        ({"utm_source": ["google"]}, 400, "invalid_field"),
        ({"gclid": "abc def"}, 400, "invalid_field"),
        ({"page_url": "javascript:alert(1)"}, 400, "invalid_field"),
        ({"page_url": "http://[::1"}, 400, "invalid_field"),
        ({"referrer": "https://x.example/" + "a" * 3000}, 400, "invalid_field"),
        ({"utm_source": "google\ud800"}, 400, "invalid_field"),
        ({"user_agent": "Mozilla \udfff"}, 400, "invalid_field"),
        ({"page_url": "https://okna.example/\ud83d"}, 400, "invalid_field"),
    ],
)
async def test_bad_start_is_rejected_and_writes_nothing(client, database, site, fields, status, code):
    body = {key: value for key, value in _body(**fields).items() if value is not None}

    response, data = await _post(client, "session", body)

    assert response.status == status
    assert data["error"]["code"] == code
    assert data["error"]["message"]
    assert await _count(database, models.VisitorSession) == 0
    assert await _count(database, models.NumberLease) == 0


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'{"site_key": "okna-key-1", "pad": "' + b"x" * 20000 + b'"}', 413, "payload_too_large"),
        pytest.param(b"[" * 15000, 400, "invalid_json", id="nested-15000-deep"),
        pytest.param(
            b'{"site_key": "okna-key-1", "session_id": ' + b"9" * 5000 + b"}", 400, "invalid_json",
            id="integer-5000-digits",
        ),
    ],
)
async def test_malformed_body_is_rejected(client, database, site, raw, status, code):
    response, data = await _post(client, "session", None, raw=raw)

    assert response.status == status
    assert data["error"]["code"] == code
    assert await _count(database, models.VisitorSession) == 0


async def test_search_phrase_drops_control_characters(client, database, site):
    referrer = "https://yandex.ru/search/?text=okna%00plastik%0A"

    response, data = await _post(client, "session", _body(referrer=referrer))

    assert response.status == 200
    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, data["session_id"])
    assert row.search_phrase == "okna plastik"


async def test_overlong_referrer_host_is_dropped(client, database, site):
    referrer = "https://" + "a" * 300 + ".example/page"

    response, data = await _post(client, "session", _body(referrer=referrer))

    assert response.status == 200
    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, data["session_id"])
    assert row.referrer == referrer
    assert row.referrer_host is None


async def test_user_agent_header_not_utf8_is_stored(client, database, site):
    """A User-Agent header with bytes that are not UTF-8 is stored with "?" in their place."""
    body = json.dumps(_body()).encode()
    request = (
        b"POST /api/v1/track/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Origin: {ORIGIN}\r\n".encode()
        + b"User-Agent: Mozilla \xff\xfe\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(request)
    response = await reader.read()
    writer.close()
    await writer.wait_closed()

    assert response.startswith(b"HTTP/1.1 200 ")
    session_id = json.loads(response.split(b"\r\n\r\n", 1)[1])["session_id"]
    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, session_id)
    assert row.user_agent == "Mozilla ??"


async def test_disallowed_origin_is_403(client, database, site):
    response, data = await _post(client, "session", _body(), origin="https://evil.example")

    assert response.status == 403
    assert data["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert await _count(database, models.VisitorSession) == 0


async def test_missing_origin_is_403(client, site):
    response, data = await _post(client, "session", _body(), origin=None)

    assert response.status == 403
    assert data["error"]["code"] == "origin_missing"


async def test_sql_text_in_utm_is_stored_verbatim(client, database, site):
    hostile = "x'); DROP TABLE visitor_sessions; --"

    response, data = await _post(client, "session", _body(utm_campaign=hostile))

    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, data["session_id"])
    assert response.status == 200
    assert row.utm_campaign == hostile


async def test_rate_limit_answers_429(database, site):
    client = await _client(database, rate_limit_per_minute=60, rate_limit_burst=2)
    try:
        statuses = []
        for index in range(3):
            response, data = await _post(client, "session", _body(visitor_id=f"visitor-000{index}"))
            statuses.append(response.status)
    finally:
        await client.close()

    assert statuses == [200, 200, 429]
    assert data["error"]["code"] == "rate_limited"


async def test_trusted_header_gives_client_ip(database, site):
    client = await _client(database, client_ip_header="X-Forwarded-For")
    try:
        response = await client.post(
            "/api/v1/track/session",
            data=json.dumps(_body()),
            headers={"Origin": ORIGIN, "X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
        )
        data = await response.json()
    finally:
        await client.close()

    async with database.sessions() as session:
        row = await session.get(models.VisitorSession, data["session_id"])
    assert row.ip == "203.0.113.9"


async def test_preflight_allows_post(client, site):
    response = await client.options(
        "/api/v1/track/session",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )

    assert response.status == 204
    assert response.headers["Access-Control-Allow-Methods"] == "POST"


async def test_snippet_is_served(client):
    response = await client.get("/ct.js")
    text = await response.text()

    assert response.status == 200
    assert response.content_type == "application/javascript"
    assert "pbxCallTracking" in text
