"""Dashboard pages (placeholder until the templates land)."""

from __future__ import annotations

from aiohttp import web


async def login_required(request: web.Request) -> web.Response:
    return web.Response(status=401, text="login required")


def setup_dashboard(app: web.Application) -> None:
    return None
