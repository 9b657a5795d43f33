"""Every route of the application, called without credentials, returns 401 unless it is public."""

from __future__ import annotations

import re

from aiohttp import web

from pbx_bridge.config import Config
from pbx_bridge.http.app import AppContext, build_app
from pbx_bridge.storage import Database
from tests.admin.conftest import World

# Routes that websites, load balancers and the login form reach without an account.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/ct.js"),
    ("POST", "/api/v1/track/session"),
    ("OPTIONS", "/api/v1/track/session"),
    ("POST", "/api/v1/track/heartbeat"),
    ("OPTIONS", "/api/v1/track/heartbeat"),
    ("POST", "/api/v1/track/leave"),
    ("OPTIONS", "/api/v1/track/leave"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/dashboard/login"),
    ("POST", "/dashboard/login"),
}


def _routes() -> list[tuple[str, str]]:
    """Return (method, path) of every route, with each {placeholder} filled with 1."""
    # An engine that never connects: building the routes runs no query.
    app = build_app(AppContext(config=Config(), database=Database("sqlite+aiosqlite://")))
    routes = []
    for route in app.router.routes():
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        pattern = route.resource.canonical
        routes.append((route.method, re.sub(r"\{[^}]+\}", "1", pattern)))
    return sorted(set(routes))


def test_route_list_covers_admin_dashboard_and_tracking() -> None:
    paths = {path for _, path in _routes()}

    assert "/api/v1/calls/export.xlsx" in paths
    assert "/dashboard/pools" in paths
    assert "/api/v1/pools/1/advice" in paths
    assert PUBLIC <= set(_routes())


async def test_every_private_route_needs_authentication(world: World) -> None:
    statuses = {}
    for method, path in _routes():
        if (method, path) in PUBLIC:
            continue
        response = await world.client.request(method, path)
        statuses[(method, path)] = response.status

    assert statuses
    assert {route: status for route, status in statuses.items() if status != 401} == {}
