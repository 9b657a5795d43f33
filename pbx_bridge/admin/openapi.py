"""The OpenAPI 3.1 document of the admin API, built from the same field declarations the
handlers validate with, and served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbx_bridge import __version__
from pbx_bridge.admin import users
from pbx_bridge.admin.journal import ATTRIBUTION_CHOICES, MAX_PAGE_SIZE, OUTCOME_CHOICES, SORT_COLUMNS
from pbx_bridge.admin.resources import RESOURCES, serialize  # noqa: F401 (serialize defines the shape)
from pbx_bridge.admin.schema import field_schema, input_schema

REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _nullable(kind: str | list, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR_RESPONSES = {
    "401": {"$ref": "#/components/responses/Unauthenticated"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "422": {"$ref": "#/components/responses/ValidationFailed"},
}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "code", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "field": {"type": "string"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }


def _object_schema(resource_name: str) -> dict[str, Any]:
    resource = RESOURCES[resource_name]
    properties: dict[str, Any] = {"id": {"type": "integer"}}
    for item in resource.fields:
        schema = field_schema(item)
        if not item.required and item.kind != "origins" and "null" not in schema.get("type", []):
            # Stored defaults may be empty for optional columns such as display_format.
            schema["type"] = [schema["type"], "null"] if isinstance(schema["type"], str) else schema["type"]
        properties[item.name] = schema
    for name, fields in resource.nested.items():
        item_properties = {item.name: field_schema(item) for item in fields}
        properties[name] = {
            "type": "array",
            "items": {"type": "object", "properties": item_properties, "additionalProperties": False},
        }
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


def _input_with_nested(resource_name: str, *, partial: bool) -> dict[str, Any]:
    resource = RESOURCES[resource_name]
    schema = input_schema(resource.fields, partial=partial)
    for name, fields in resource.nested.items():
        schema["properties"][name] = {"type": "array", "items": input_schema(fields, partial=False)}
    return schema


USER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "login", "name", "role", "company_id", "language", "active", "created_at", "last_login_at"],
    "properties": {
        "id": {"type": "integer"},
        "login": {"type": "string"},
        "name": {"type": "string"},
        "role": {"type": "string", "enum": ["admin", "viewer"]},
        "company_id": _nullable("integer"),
        "language": {"type": "string", "enum": ["ru", "en"]},
        "active": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "last_login_at": _nullable("string", format="date-time"),
    },
}
TOKEN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "prefix", "created_at", "last_used_at", "revoked"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "prefix": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": _nullable("string", format="date-time"),
        "revoked": {"type": "boolean"},
        "token": {"type": "string", "description": "the secret; only in the response that creates the token"},
    },
}
SESSION_PROPERTIES = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "referrer", "landing_page", "search_phrase")
CALL_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer"},
        "company_id": _nullable("integer"),
        "started_at": {"type": "string", "format": "date-time"},
        "answered_at": _nullable("string", format="date-time"),
        "ended_at": _nullable("string", format="date-time"),
        "caller_number": _nullable("string", description="E.164; null for anonymous callers"),
        "caller_raw": {"type": "string"},
        "caller_name": _nullable("string"),
        "dialed_number": _nullable("string"),
        "tracking_number_id": _nullable("integer"),
        "tracking_number": _nullable("string"),
        "source_id": _nullable("integer"),
        "source_name": _nullable("string"),
        "attribution": {"type": "string", "enum": list(ATTRIBUTION_CHOICES)},
        "first_time_caller": _nullable("boolean"),
        "answered_by": _nullable("string"),
        "wait_seconds": _nullable("number"),
        "talk_seconds": _nullable("number"),
        "outcome": {"type": "string", "enum": [value for value in OUTCOME_CHOICES if value != "missed"]},
        "hangup_cause": _nullable("integer"),
        "hangup_side": _nullable("string"),
        "tags": {"type": "array", "items": {"type": "string"}},
        "session": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {name: _nullable("string") for name in SESSION_PROPERTIES},
        },
        "recording": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["state", "format", "duration_seconds", "url"],
            "properties": {
                "state": {"type": "string", "enum": ["queued", "recording", "done", "failed"]},
                "format": {"type": "string"},
                "duration_seconds": _nullable("integer"),
                "url": _nullable("string"),
            },
        },
    },
}
CALL_SCHEMA["required"] = list(CALL_SCHEMA["properties"])

_MONEY = _nullable("string", pattern=r"^\d+\.\d{2}$")
REPORT_ROWS = {
    "sources": {
        "source_id": _nullable("integer"),
        "source_name": _nullable("string"),
        "calls": {"type": "integer"},
        "unique_callers": {"type": "integer"},
        "first_time_callers": {"type": "integer"},
        "answered": {"type": "integer"},
        "missed": {"type": "integer"},
        "answered_share": _nullable("number"),
        "missed_share": _nullable("number"),
        "average_wait_seconds": _nullable("number"),
        "average_talk_seconds": _nullable("number"),
        "spend": _MONEY,
        "cost_per_call": _MONEY,
        "cost_per_first_time_caller": _MONEY,
    },
    "days": {"day": {"type": "string", "format": "date"}, "calls": {"type": "integer"}, "answered": {"type": "integer"}, "missed": {"type": "integer"}},
    "hours": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}, "calls": {"type": "integer"}, "answered": {"type": "integer"}, "missed": {"type": "integer"}},
    "destinations": {"destination": {"type": "string"}, "answered": {"type": "integer"}, "missed": {"type": "integer"}, "talk_seconds": {"type": "number"}},
    "pools": {
        "pool_id": {"type": "integer"},
        "pool_name": {"type": "string"},
        "site_id": {"type": "integer"},
        "numbers": {"type": "integer"},
        "leases": {"type": "integer"},
        "utilisation": _nullable("number"),
        "exhaustions": {"type": "integer"},
        "calls": {"type": "integer"},
        "ambiguous_calls": {"type": "integer"},
    },
}


def _report_schema(name: str) -> dict[str, Any]:
    row = {"type": "object", "additionalProperties": False, "required": list(REPORT_ROWS[name]), "properties": REPORT_ROWS[name]}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["company_id", "timezone", "from", "to", "items"],
        "properties": {
            "company_id": {"type": "integer"},
            "timezone": {"type": "string"},
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "items": {"type": "array", "items": row},
        },
    }


def _query(name: str, schema: dict[str, Any], description: str = "", *, explode: bool = False) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


JOURNAL_PARAMETERS = [
    _query("company_id", {"type": "integer"}, "admins: one company; viewers: always their own"),
    _query("from", {"type": "string"}, "date (YYYY-MM-DD, in the company's time zone) or ISO 8601 time with zone"),
    _query("to", {"type": "string"}, "date (the whole day is included) or ISO 8601 time with zone (excluded)"),
    _query("source_id", {"type": "string"}, "one id or a comma-separated list"),
    _query("tracking_number_id", {"type": "string"}, "one id or a comma-separated list"),
    _query("outcome", {"type": "string"}, "comma-separated: " + ", ".join(OUTCOME_CHOICES)),
    _query("attribution", {"type": "string"}, "comma-separated: " + ", ".join(ATTRIBUTION_CHOICES)),
    _query("caller", {"type": "string"}, "part of the caller's number or raw caller id"),
    _query("answered_by", {"type": "string"}, "destination that answered, exactly"),
    _query("first_time", {"type": "string", "enum": ["true", "false"]}),
    _query("sort", {"type": "string", "enum": [f"{prefix}{name}" for name in SORT_COLUMNS for prefix in ("", "-")]}),
    _query("page", {"type": "integer", "minimum": 1}),
    _query("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}),
]
REPORT_PARAMETERS = [
    _query("company_id", {"type": "integer"}, "required for admins"),
    _query("from", {"type": "string", "format": "date"}, "first day, included"),
    _query("to", {"type": "string", "format": "date"}, "last day, included"),
]
ID_PARAMETER = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}


def _crud_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, resource in RESOURCES.items():
        schema_name = name.capitalize()
        paths[f"/api/v1/{name}"] = {
            "get": {
                "summary": f"List {name} visible to the user",
                "parameters": [_query("company_id", {"type": "integer"})],
                "responses": {"200": _json({"type": "object", "required": ["items"], "additionalProperties": False, "properties": {"items": {"type": "array", "items": _ref(schema_name)}}}), **ERROR_RESPONSES},
            },
            "post": {
                "summary": f"Create a {resource.label} (admins)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _input_with_nested(name, partial=False)}}},
                "responses": {"201": _json(_ref(schema_name), "Created"), "409": {"$ref": "#/components/responses/Conflict"}, **ERROR_RESPONSES},
            },
        }
        paths[f"/api/v1/{name}/{{id}}"] = {
            "parameters": [ID_PARAMETER],
            "get": {"summary": f"Get a {resource.label}", "responses": {"200": _json(_ref(schema_name)), "404": {"$ref": "#/components/responses/NotFound"}, **ERROR_RESPONSES}},
            "patch": {
                "summary": f"Change a {resource.label} (admins)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _input_with_nested(name, partial=True)}}},
                "responses": {"200": _json(_ref(schema_name)), "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, **ERROR_RESPONSES},
            },
            "delete": {"summary": f"Delete a {resource.label} (admins)", "responses": {"204": {"description": "Deleted"}, "404": {"$ref": "#/components/responses/NotFound"}, **ERROR_RESPONSES}},
        }
    return paths


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {name.capitalize(): _object_schema(name) for name in RESOURCES}
    schemas.update({"Error": _error_schema(), "User": USER_SCHEMA, "Token": TOKEN_SCHEMA, "Call": CALL_SCHEMA})
    for name in REPORT_ROWS:
        schemas[f"Report{name.capitalize()}"] = _report_schema(name)

    paths = {
        "/api/v1/auth/login": {
            "post": {
                "summary": "Log in with a login and password; returns a session token and sets the dashboard cookie",
                "security": [],
                "requestBody": {"required": True, "content": {"application/json": {"schema": input_schema(users.LOGIN_FIELDS, partial=False)}}},
                "responses": {
                    "200": _json({"type": "object", "required": ["token", "expires_at", "user"], "additionalProperties": False, "properties": {"token": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"}, "user": _ref("User")}}),
                    "401": {"$ref": "#/components/responses/Unauthenticated"},
                    "422": {"$ref": "#/components/responses/ValidationFailed"},
                    "429": {"$ref": "#/components/responses/TooManyLoginAttempts"},
                },
            }
        },
        "/api/v1/auth/logout": {"post": {"summary": "Revoke the token or session of this request", "responses": {"204": {"description": "Logged out"}, "401": ERROR_RESPONSES["401"]}}},
        "/api/v1/me": {"get": {"summary": "The current user", "responses": {"200": _json(_ref("User")), "401": ERROR_RESPONSES["401"]}}},
        "/api/v1/users": {
            "get": {"summary": "List users (admins)", "responses": {"200": _json({"type": "object", "required": ["items"], "additionalProperties": False, "properties": {"items": {"type": "array", "items": _ref("User")}}}), **ERROR_RESPONSES}},
            "post": {
                "summary": "Create a user (admins)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": input_schema(users.USER_FIELDS, partial=False)}}},
                "responses": {"201": _json(_ref("User"), "Created"), **ERROR_RESPONSES},
            },
        },
        "/api/v1/users/{id}": {
            "parameters": [ID_PARAMETER],
            "get": {"summary": "Get a user (admins)", "responses": {"200": _json(_ref("User")), "404": {"$ref": "#/components/responses/NotFound"}, **ERROR_RESPONSES}},
            "patch": {
                "summary": "Change a user (admins)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": input_schema(users.USER_FIELDS, partial=True)}}},
                "responses": {"200": _json(_ref("User")), "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, **ERROR_RESPONSES},
            },
            "delete": {"summary": "Delete a user (admins)", "responses": {"204": {"description": "Deleted"}, "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, **ERROR_RESPONSES}},
        },
        "/api/v1/tokens": {
            "get": {"summary": "List the API tokens of the current user", "responses": {"200": _json({"type": "object", "required": ["items"], "additionalProperties": False, "properties": {"items": {"type": "array", "items": _ref("Token")}}}), **ERROR_RESPONSES}},
            "post": {
                "summary": "Create an API token; the secret is shown once",
                "requestBody": {"required": True, "content": {"application/json": {"schema": input_schema(users.TOKEN_FIELDS, partial=False)}}},
                "responses": {"201": _json(_ref("Token"), "Created"), **ERROR_RESPONSES},
            },
        },
        "/api/v1/tokens/{id}": {"parameters": [ID_PARAMETER], "delete": {"summary": "Revoke an API token", "responses": {"204": {"description": "Revoked"}, "404": {"$ref": "#/components/responses/NotFound"}, **ERROR_RESPONSES}}},
        "/api/v1/calls": {
            "get": {
                "summary": "The call journal, filtered, sorted and paginated",
                "parameters": JOURNAL_PARAMETERS,
                "responses": {
                    "200": _json({"type": "object", "additionalProperties": False, "required": ["items", "page", "page_size", "total"], "properties": {"items": {"type": "array", "items": _ref("Call")}, "page": {"type": "integer"}, "page_size": {"type": "integer"}, "total": {"type": "integer"}}}),
                    **ERROR_RESPONSES,
                },
            }
        },
        "/api/v1/calls/export.csv": {
            "get": {
                "summary": "The filtered journal as UTF-8 CSV with a byte order mark and a header row",
                "parameters": JOURNAL_PARAMETERS[:-3] + [_query("delimiter", {"type": "string", "enum": ["comma", "semicolon"]})],
                "responses": {"200": {"description": "CSV file", "content": {"text/csv": {"schema": {"type": "string"}}}}, **ERROR_RESPONSES},
            }
        },
        "/api/v1/calls/export.xlsx": {
            "get": {
                "summary": "The filtered journal as an XLSX workbook",
                "parameters": JOURNAL_PARAMETERS[:-3],
                "responses": {"200": {"description": "XLSX file", "content": {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {"schema": {"type": "string", "format": "binary"}}}}, **ERROR_RESPONSES},
            }
        },
        "/api/v1/calls/{id}": {"parameters": [ID_PARAMETER], "get": {"summary": "One call of the journal", "responses": {"200": _json(_ref("Call")), "404": {"$ref": "#/components/responses/NotFound"}, **ERROR_RESPONSES}}},
        "/api/v1/calls/{id}/recording": {
            "parameters": [ID_PARAMETER],
            "get": {
                "summary": "The recording of a call; supports Range requests (206) for seeking",
                "parameters": [_query("download", {"type": "string", "enum": ["1"]}, "1 to download as an attachment")],
                "responses": {
                    "200": {"description": "The whole file", "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}},
                    "206": {"description": "The requested byte range", "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}},
                    "404": {"$ref": "#/components/responses/NotFound"},
                    "416": {"description": "The range lies outside the file"},
                    **ERROR_RESPONSES,
                },
            },
        },
        "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1 document"}, "401": ERROR_RESPONSES["401"]}}},
    }
    for name in REPORT_ROWS:
        paths[f"/api/v1/reports/{name}"] = {
            "get": {
                "summary": f"Report by {name} for a period in the company's time zone",
                "parameters": REPORT_PARAMETERS,
                "responses": {"200": _json(_ref(f"Report{name.capitalize()}")), "404": {"$ref": "#/components/responses/NotFound"}, **ERROR_RESPONSES},
            }
        }
    paths.update(_crud_paths())

    def error_response(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pbx-bridge admin API",
            "version": __version__,
            "description": "Errors carry a machine-readable code and a message in the language of Accept-Language (ru or en).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "API token or session token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "pbx_session", "description": "dashboard session; GET and HEAD only"},
            },
            "schemas": schemas,
            "responses": {
                "Unauthenticated": error_response("No valid token or session"),
                "Forbidden": error_response("The role does not allow this"),
                "NotFound": error_response("No such object visible to this user"),
                "ValidationFailed": error_response("Invalid fields, listed one by one"),
                "Conflict": error_response("The change conflicts with stored data"),
                "TooManyLoginAttempts": {
                    **error_response("Too many failed logins from this address or for this login"),
                    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
                },
            },
        },
    }


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(build_document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi_document)
