"""Fixtures: a recording ARI server on 127.0.0.1 and a client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pbx_bridge.ari import AriClient

from .server import APP, PASSWORD, USERNAME, AriServer


@pytest.fixture
async def ari_server() -> AsyncIterator[AriServer]:
    server = AriServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def ari_client(ari_server: AriServer) -> AsyncIterator[AriClient]:
    client = AriClient(
        ari_server.url,
        USERNAME,
        PASSWORD,
        APP,
        reconnect_min_delay=0.01,
        reconnect_max_delay=0.04,
        request_timeout=2.0,
    )
    yield client
    await client.close()
