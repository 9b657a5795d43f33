"""The aiohttp application: health endpoints here, capability routes added by their modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from pbx_bridge.config import Config
from pbx_bridge.storage import Database


class AriStatus(Protocol):
    @property
    def connected(self) -> bool: ...


@dataclass
class AppContext:
    config: Config
    database: Database
    # None when this process runs without the ARI worker (`serve --no-ari`).
    ari: AriStatus | None = None


CONTEXT = web.AppKey("context", AppContext)


def build_app(context: AppContext) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[CONTEXT] = context
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    # Imported here because the admin package imports CONTEXT from this module.
    from pbx_bridge.admin import setup_admin

    setup_admin(app)

    from pbx_bridge.tracking.http import add_routes as add_tracking_routes

    add_tracking_routes(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process runs its event loop."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers; ARI state is reported but does not fail readiness,
    because the HTTP side (tracking API, dashboard) keeps working without Asterisk."""
    context = request.app[CONTEXT]
    database_ok = await context.database.ping()
    ari = {"enabled": context.ari is not None, "connected": bool(context.ari and context.ari.connected)}
    body = {"status": "ok" if database_ok else "unavailable", "database": database_ok, "ari": ari}
    return web.json_response(body, status=200 if database_ok else 503)
