"""The public tracking API under /api/v1/track/ and the page snippet at /ct.js.

Pages call these endpoints from visitors' browsers, so every response is JSON, errors included,
and carries CORS headers only for the site's allowed origins. Requests are sent as simple CORS
requests (a text/plain body holding JSON), so browsers need no preflight.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from models import utcnow
from pbx_bridge.config import TrackingConfig
from pbx_bridge.http.app import CONTEXT
from pbx_bridge.tracking.sessions import TrackingService
from pbx_bridge.tracking.sites import SiteDirectory, SiteSettings, display_number, number_parts
from pbx_bridge.tracking.visitor import (
    InvalidField,
    read_session_id,
    read_site_key,
    read_start_request,
    read_visitor_id,
)

log = logging.getLogger("pbx_bridge.tracking")

# The largest valid start request (two URLs, a user agent and every tag at their limits) is
# under 7 KiB.
MAX_BODY_BYTES = 16 * 1024
SNIPPET_PATH = Path(__file__).parent / "static" / "ct.js"


class TrackingError(Exception):
    """A request the tracking API rejects; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class RateLimiter:
    """A token bucket per client IP: `per_minute` requests a minute with bursts up to `burst`."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str, now: float) -> bool:
        tokens, updated = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:
            self._forget_full_buckets(now)
        return True

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket, so it can go.
        refill_seconds = self.burst / self.rate
        self._buckets = {
            key: value for key, value in self._buckets.items() if now - value[1] < refill_seconds
        }


@dataclass(frozen=True)
class TrackingApi:
    """The service, rate limiter and settings of the tracking handlers, kept under one
    application key so that a request looks them up once (aiohttp's request.app is not free at
    thousands of requests a second)."""

    service: TrackingService
    limiter: RateLimiter
    config: TrackingConfig


API = web.AppKey("tracking_api", TrackingApi)


def add_routes(app: web.Application) -> None:
    """Register the tracking API and /ct.js on the application built by build_app."""
    context = app[CONTEXT]
    config = context.config.tracking
    sites = SiteDirectory(context.database, ttl=config.site_cache_seconds)
    app[API] = TrackingApi(
        service=TrackingService(context.database, sites),
        limiter=RateLimiter(config.rate_limit_per_minute, config.rate_limit_burst),
        config=config,
    )
    app.on_cleanup.append(_close_tracking)

    for path, handler in (
        ("/api/v1/track/session", start_session),
        ("/api/v1/track/heartbeat", heartbeat),
        ("/api/v1/track/leave", leave),
    ):
        app.router.add_post(path, handler)
        app.router.add_route("OPTIONS", path, preflight)
    app.router.add_get("/ct.js", snippet)

    from pbx_bridge.tracking.sizing import pool_advice_handler

    app.router.add_get("/api/v1/pools/{pool_id}/advice", pool_advice_handler)


async def _close_tracking(app: web.Application) -> None:
    # Runs when the server stops, before serve closes the database.
    await app[API].service.close()


async def start_session(request: web.Request) -> web.Response:
    """Start or resume a visitor session and return the number the page shows."""
    api = request.app[API]
    try:
        body, site = await _read_request(request, api)
        data = read_start_request(body, request.headers.get("User-Agent"))
        started = await api.service.start(site, data, _client_ip(request, api), utcnow())
    except TrackingError as error:
        return _error_response(request, error)
    except InvalidField as error:
        return _error_response(request, _invalid(error))

    number = started.number
    payload = {
        "session_id": started.session_id,
        "number": number_parts(number) if number else None,
        "display": display_number(number, site.display_format) if number else None,
        "kind": started.kind.value,
        "first_visit": started.first_visit,
        "heartbeat_interval": started.heartbeat_interval,
        # The site's own number, which the snippet replaces on the page.
        "replace": [number_parts(site.default_number)] if site.default_number else [],
    }
    return _json(request, payload, site)


async def heartbeat(request: web.Request) -> web.Response:
    """Keep the session's pool number held; 409 when the session lost it."""
    api = request.app[API]
    try:
        body, site = await _read_request(request, api)
        session_id = read_session_id(body)
        visitor_id = read_visitor_id(body)
        held = await api.service.heartbeat(site, session_id, visitor_id, utcnow())
    except TrackingError as error:
        return _error_response(request, error)
    except InvalidField as error:
        return _error_response(request, _invalid(error))

    if not held:
        return _error_response(
            request,
            TrackingError(
                409, "lease_lost", "the session holds no number any more; start a new session"
            ),
            site,
        )
    return _json(request, {"held": True}, site)


async def leave(request: web.Request) -> web.Response:
    """Record that the visitor left the page: the hold time of the number starts now."""
    api = request.app[API]
    try:
        body, site = await _read_request(request, api)
        session_id = read_session_id(body)
        visitor_id = read_visitor_id(body)
        released = await api.service.leave(site, session_id, visitor_id, utcnow())
    except TrackingError as error:
        return _error_response(request, error)
    except InvalidField as error:
        return _error_response(request, _invalid(error))
    return _json(request, {"released": released}, site)


async def preflight(request: web.Request) -> web.Response:
    # The preflight carries no site key, so it allows any origin; the request that follows is
    # checked against its site's allowed origins and gets no CORS headers when not allowed.
    origin = request.headers.get("Origin")
    headers = {
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    }
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return web.Response(status=204, headers=headers)


async def snippet(request: web.Request) -> web.Response:
    return web.Response(
        body=_snippet_bytes(),
        content_type="application/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


_snippet_cache: bytes | None = None


def _snippet_bytes() -> bytes:
    global _snippet_cache
    if _snippet_cache is None:
        _snippet_cache = SNIPPET_PATH.read_bytes()
    return _snippet_cache


async def _read_request(
    request: web.Request, api: TrackingApi
) -> tuple[dict[str, Any], SiteSettings]:
    """Apply the rate limit, read the JSON body and find the site whose key it carries, and
    check that the request comes from one of that site's allowed origins."""
    limiter = api.limiter
    ip = _client_ip(request, api) or "unknown"
    if limiter.enabled and not limiter.allow(ip, time.monotonic()):
        raise TrackingError(
            429, "rate_limited", "too many requests from this address; retry later",
            {"Retry-After": "10"},
        )

    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise TrackingError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise TrackingError(413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON, bytes that are not UTF-8 and integers longer than
        # Python's 4300-digit limit; RecursionError covers arrays nested thousands deep.
        raise TrackingError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise TrackingError(400, "invalid_json", "the request body must be a JSON object")

    try:
        site_key = read_site_key(body)
    except InvalidField as error:
        raise _invalid(error) from None
    site = await api.service.sites.get(site_key)
    if site is None:
        raise TrackingError(404, "unknown_site_key", f"no site has the key {site_key!r}")

    origin = request.headers.get("Origin")
    if origin is None:
        raise TrackingError(403, "origin_missing", "the request carries no Origin header")
    if origin.rstrip("/").lower() not in site.allowed_origins:
        log.info("site %s rejected a request from origin %r", site.site_id, origin[:200])
        raise TrackingError(
            403, "origin_not_allowed", "this origin is not in the site's allowed origins"
        )
    return body, site


def _client_ip(request: web.Request, api: TrackingApi) -> str | None:
    header = api.config.client_ip_header
    if header:
        value = request.headers.get(header, "")
        last = value.rsplit(",", 1)[-1].strip()
        if last:
            return last[:45]
    return request.remote


def _invalid(error: InvalidField) -> TrackingError:
    return TrackingError(400, "invalid_field", str(error))


def _json(request: web.Request, payload: dict[str, Any], site: SiteSettings) -> web.Response:
    return web.json_response(payload, headers=_cors_headers(request, site))


def _error_response(
    request: web.Request, error: TrackingError, site: SiteSettings | None = None
) -> web.Response:
    headers = dict(error.headers)
    if site is not None:
        headers.update(_cors_headers(request, site))
    body = {"error": {"code": error.code, "message": error.message}}
    return web.json_response(body, status=error.status, headers=headers)


def _cors_headers(request: web.Request, site: SiteSettings) -> dict[str, str]:
    origin = request.headers.get("Origin", "")
    if origin.rstrip("/").lower() in site.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}
