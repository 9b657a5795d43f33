"""The site settings cache of the public tracking endpoints."""

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from pbx_bridge.tracking import sites
from pbx_bridge.tracking.sites import SiteDirectory

from tests.tracking.conftest import create_site


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Site keys loaded from the database, in order; each load takes 10 ms."""
    calls: list[str] = []
    original = sites.load_site_settings

    async def counted(session, site_key):
        calls.append(site_key)
        await asyncio.sleep(0.01)
        return await original(session, site_key)

    monkeypatch.setattr(sites, "load_site_settings", counted)
    return calls


async def test_concurrent_misses_share_one_load(database, loads):
    setup = await create_site(database)
    directory = SiteDirectory(database, ttl=60)

    results = await asyncio.gather(*(directory.get(setup.site_key) for _ in range(50)))

    assert loads == [setup.site_key]
    assert {result.site_id for result in results} == {setup.site_id}


async def test_cached_site_needs_no_load(database, loads):
    setup = await create_site(database)
    directory = SiteDirectory(database, ttl=60)

    await directory.get(setup.site_key)
    await directory.get(setup.site_key)

    assert loads == [setup.site_key]


async def test_failed_load_is_retried_by_next_request(database, monkeypatch):
    setup = await create_site(database)
    original = sites.load_site_settings
    failures: list[str] = []

    async def fails_once(session, site_key):
        if not failures:
            failures.append(site_key)
            raise OperationalError("SELECT sites", {}, OSError("connection refused"))
        return await original(session, site_key)

    monkeypatch.setattr(sites, "load_site_settings", fails_once)
    directory = SiteDirectory(database, ttl=60)

    with pytest.raises(OperationalError):
        await directory.get(setup.site_key)
    settings = await directory.get(setup.site_key)

    assert settings.site_id == setup.site_id


async def test_unknown_site_key_is_cached_too(database, loads):
    await create_site(database)
    directory = SiteDirectory(database, ttl=60)

    assert await directory.get("no-such-key") is None
    assert await directory.get("no-such-key") is None
    assert loads == ["no-such-key"]
