"""Registration of the admin API, its middlewares and the dashboard on the application."""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.admin import journal, openapi, recordings, report_api, resources, users
from pbx_bridge.admin.auth import auth_middleware
from pbx_bridge.admin.errors import error_middleware
from pbx_bridge.admin.throttle import LOGIN_THROTTLE, LoginThrottle


def setup_admin(app: web.Application) -> None:
    """Add the admin API and dashboard routes; the error middleware wraps authentication so a
    401 comes out in the JSON error shape."""
    app.middlewares.append(error_middleware)
    app.middlewares.append(auth_middleware)
    app[LOGIN_THROTTLE] = LoginThrottle()
    users.add_routes(app)
    resources.add_routes(app)
    journal.add_routes(app)
    recordings.add_routes(app)
    report_api.add_routes(app)
    openapi.add_routes(app)

    from pbx_bridge.dashboard import setup_dashboard

    setup_dashboard(app)
