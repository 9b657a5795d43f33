"""API errors as JSON with a machine-readable code and a message in the request's language."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pbx_bridge.admin.i18n import message, negotiate_language
from pbx_bridge.inputs import is_storable_text

log = logging.getLogger("pbx_bridge.admin")

LANGUAGE = web.RequestKey("language", str)


@dataclass
class FieldError:
    field: str
    code: str
    details: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    """An error the API reports to the client; the middleware renders it as JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        *,
        fields: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.fields = fields or []
        self.headers = headers or {}
        self.details = details


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", what=what)


def forbidden() -> ApiError:
    return ApiError(403, "forbidden")


def validation_failed(fields: list[FieldError]) -> ApiError:
    return ApiError(422, "validation_failed", fields=fields)


def request_language(request: web.Request) -> str:
    """Pick the language of messages: the Accept-Language header, else the user's, else Russian."""
    # Imported here because principal.py raises the errors this module defines.
    from pbx_bridge.admin.principal import USER

    user = request.get(USER)
    fallback = user.language if user is not None else "ru"
    return negotiate_language(request.headers.get("Accept-Language"), fallback)


def error_body(error: ApiError, language: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": error.code,
        "message": message(error.code, language, **error.details),
    }
    if error.fields:
        body["fields"] = [
            {"field": item.field, "code": item.code, "message": message(item.code, language, **item.details)}
            for item in error.fields
        ]
    return {"error": body}


def error_response(request: web.Request, error: ApiError) -> web.Response:
    language = request_language(request)
    headers = {"Content-Language": language, **error.headers}
    return web.json_response(
        error_body(error, language), status=error.status, headers=headers, dumps=_dumps
    )


def _dumps(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if not is_storable_text(text):
        # A field name of the request can carry an unpaired surrogate, which UTF-8 cannot
        # encode, so such a body is written as ASCII JSON with \u escapes.
        text = json.dumps(value)
    return text


_HTTP_CODES = {
    404: ("not_found", {"what": "path"}),
    405: ("method_not_allowed", {}),
    413: ("payload_too_large", {}),
    416: ("range_not_satisfiable", {}),
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Render ApiError and aiohttp's own HTTP errors under /api/ as the JSON error shape."""
    if not request.path.startswith("/api/") or request.path.startswith("/api/v1/track/"):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(request, error)
    except web.HTTPException as exception:
        if exception.status in _HTTP_CODES:
            code, details = _HTTP_CODES[exception.status]
            if exception.status == 405:
                details = {"method": request.method}
            headers = {key: value for key, value in exception.headers.items() if key in ("Allow", "Content-Range")}
            return error_response(request, ApiError(exception.status, code, headers=headers, **details))
        raise
    except Exception:
        log.exception("admin API request %s %s failed", request.method, request.path)
        return error_response(request, ApiError(500, "internal_error"))
