import asyncio
import json
from datetime import datetime, timedelta, timezone

from aiohttp.test_utils import TestClient, TestServer

import models
from pbx_bridge.cli import main
from pbx_bridge.config import Config
from pbx_bridge.http.app import AppContext, build_app
from pbx_bridge.storage import Database
from pbx_bridge.tracking.sessions import TrackingService
from pbx_bridge.tracking.sites import SiteDirectory
from pbx_bridge.tracking.sizing import advise_pool
from pbx_bridge.tracking.visitor import read_start_request

from tests.tracking.conftest import create_site

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
PERIOD = (T0 - timedelta(hours=1), T0 + timedelta(hours=3))


async def _visit(service, site, visitor: str, at: datetime, leave_after: timedelta | None = None):
    data = read_start_request(
        {"site_key": "okna-key-1", "visitor_id": visitor, "utm_source": "google"}, None
    )
    started = await service.start(site, data, None, at)
    if leave_after is not None:
        await service.leave(site, started.session_id, visitor, at + leave_after)
    return started


async def _three_visitors_on_two_numbers(database) -> int:
    """Two visitors overlap and a third finds the pool of two exhausted; returns the pool id."""
    setup = await create_site(database, pool_size=2, hold_time=600)
    service = TrackingService(database, SiteDirectory(database, ttl=0))
    site = await service.sites.get("okna-key-1")
    await _visit(service, site, "visitor-0001", T0, timedelta(minutes=5))
    await _visit(service, site, "visitor-0002", T0 + timedelta(minutes=1), timedelta(minutes=5))
    await _visit(service, site, "visitor-0003", T0 + timedelta(minutes=2), timedelta(minutes=5))
    # Long after every hold ended: one more visitor, alone.
    await _visit(service, site, "visitor-0004", T0 + timedelta(hours=2), timedelta(minutes=1))
    return setup.pool_id


async def test_advice_counts_peak_and_exhaustions(database):
    pool_id = await _three_visitors_on_two_numbers(database)

    async with database.sessions() as session:
        advice = await advise_pool(session, pool_id, *PERIOD)

    assert advice.pool_size == 2
    assert advice.leases == 3
    assert advice.peak_held == 2
    assert advice.exhaustions == 1
    assert advice.peak_demand == 3
    assert advice.recommended_size == 3


async def test_advice_finds_pool_by_name(database):
    pool_id = await _three_visitors_on_two_numbers(database)

    async with database.sessions() as session:
        advice = await advise_pool(session, "main", *PERIOD)

    assert advice.pool_id == pool_id


async def test_advice_outside_period_is_empty(database):
    pool_id = await _three_visitors_on_two_numbers(database)

    async with database.sessions() as session:
        advice = await advise_pool(session, pool_id, T0 - timedelta(days=2), T0 - timedelta(days=1))

    assert advice.leases == 0
    assert advice.peak_held == 0
    assert advice.exhaustions == 0


async def test_admin_endpoint_returns_advice(database):
    from pbx_bridge.admin.auth import hash_password, issue_token

    pool_id = await _three_visitors_on_two_numbers(database)
    async with database.transaction() as session:
        admin = models.User(
            login="admin", password_hash=hash_password("secret-password"), role=models.Role.ADMIN.value
        )
        session.add(admin)
        await session.flush()
        _, token = await issue_token(session, admin, models.TokenKind.API, name="tests")
    client = TestClient(TestServer(build_app(AppContext(Config(), database)), host="127.0.0.1"))
    await client.start_server()
    try:
        url = f"/api/v1/pools/{pool_id}/advice?from={PERIOD[0].isoformat()}&to={PERIOD[1].isoformat()}"
        response = await client.get(url.replace("+", "%2B"), headers={"Authorization": f"Bearer {token}"})
        data = await response.json()
        anonymous = await client.get(f"/api/v1/pools/{pool_id}/advice")
    finally:
        await client.close()

    assert response.status == 200
    assert data["peak_held"] == 2
    assert data["exhaustions"] == 1
    assert data["recommended_size"] == 3
    assert anonymous.status == 401


def test_cli_prints_advice(database_url, monkeypatch, capsys):
    async def prepare() -> int:
        database = Database(database_url)
        try:
            return await _three_visitors_on_two_numbers(database)
        finally:
            await database.close()

    pool_id = asyncio.run(prepare())
    monkeypatch.setenv("PBX_BRIDGE_DATABASE_URL", database_url)

    code = main(
        ["pool", "advise", str(pool_id), "--from", PERIOD[0].isoformat(), "--to", PERIOD[1].isoformat(), "--json"]
    )
    output = json.loads(capsys.readouterr().out)

    assert code == 0
    assert output["recommended_size"] == 3
    assert output["exhaustions"] == 1


def test_cli_unknown_pool_fails(database_url, monkeypatch, capsys):
    monkeypatch.setenv("PBX_BRIDGE_DATABASE_URL", database_url)

    code = main(["pool", "advise", "no-such-pool"])

    assert code == 1
    assert "no number pool is named 'no-such-pool'" in capsys.readouterr().err
