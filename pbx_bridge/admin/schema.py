"""Declared fields of API objects: request validation field by field, and their OpenAPI schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from pbx_bridge.admin.errors import ApiError, FieldError, validation_failed
from pbx_bridge.inputs import MAX_DIAL_STRING_LENGTH, InvalidOrigin, is_dial_string, is_storable_text, normalize_origin
from pbx_bridge.phones import InvalidNumber, NumberHasExtension, tracking_number_e164


@dataclass(frozen=True)
class Field:
    """One field of an API object.

    `kind` is one of: string, integer, boolean, phone (a tracking number), choice, date, decimal,
    timezone, origins, dial_string (an Asterisk dial string, checked as `pbx-bridge load` checks
    it), ref (the id of another object of the same company, named by `ref`).
    """

    name: str
    kind: str
    required: bool = False
    nullable: bool = False
    max_length: int | None = None
    min_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    ref: str | None = None
    # Set on create only; PATCH rejects it as an unknown field.
    create_only: bool = False
    description: str = ""


async def read_json(request: web.Request) -> dict[str, Any]:
    """Read the request body as a JSON object or raise the invalid_json error."""
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON, bytes that are not UTF-8 and integers longer than
        # Python's 4300-digit limit; RecursionError covers arrays nested thousands deep.
        raise ApiError(400, "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json")
    return body


def parse_fields(
    body: dict[str, Any], fields: tuple[Field, ...], *, partial: bool, region: str = "RU"
) -> tuple[dict[str, Any], list[FieldError]]:
    """Check `body` against `fields` and return the converted values and every field error.

    With `partial` (PATCH) missing fields are left out and create-only fields are rejected.
    """
    by_name = {item.name: item for item in fields}
    values: dict[str, Any] = {}
    errors: list[FieldError] = []

    for name in body:
        known = by_name.get(name)
        if known is None or (partial and known.create_only):
            errors.append(FieldError(name, "unknown_field"))

    for item in fields:
        if partial and item.create_only:
            continue
        if item.name not in body:
            if item.required and not partial:
                errors.append(FieldError(item.name, "required"))
            continue
        raw = body[item.name]
        if raw is None:
            if item.nullable:
                values[item.name] = None
            else:
                errors.append(FieldError(item.name, "required"))
            continue
        try:
            values[item.name] = convert(item, raw, region)
        except _Invalid as invalid:
            errors.append(FieldError(item.name, invalid.code, invalid.details))
    return values, errors


def parse_or_raise(
    body: dict[str, Any], fields: tuple[Field, ...], *, partial: bool, region: str = "RU"
) -> dict[str, Any]:
    values, errors = parse_fields(body, fields, partial=partial, region=region)
    if errors:
        raise validation_failed(errors)
    return values


class _Invalid(Exception):
    def __init__(self, code: str, **details: Any) -> None:
        super().__init__(code)
        self.code = code
        self.details = details


def convert(item: Field, raw: Any, region: str = "RU") -> Any:
    """Convert one JSON value to the Python value of `item`, or raise _Invalid."""
    kind = item.kind
    text_kinds = ("string", "timezone", "phone", "choice", "date", "decimal", "dial_string")
    if kind in text_kinds and not isinstance(raw, str):
        if not (kind == "decimal" and isinstance(raw, (int, float)) and not isinstance(raw, bool)):
            raise _Invalid("invalid_type", expected="string")
    if isinstance(raw, str) and not is_storable_text(raw):
        raise _Invalid("invalid_characters")

    if kind == "string":
        return _check_length(item, raw.strip())
    if kind == "dial_string":
        endpoint = raw.strip()
        if not is_dial_string(endpoint):
            raise _Invalid("invalid_dial_string", max=MAX_DIAL_STRING_LENGTH)
        return endpoint

    if kind in ("integer", "ref"):
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise _Invalid("invalid_type", expected="integer")
        return _check_range(item, raw)
    if kind == "boolean":
        if not isinstance(raw, bool):
            raise _Invalid("invalid_type", expected="boolean")
        return raw
    if kind == "choice":
        if raw not in item.choices:
            raise _Invalid("invalid_choice", choices=", ".join(item.choices))
        return raw
    if kind == "phone":
        try:
            return tracking_number_e164(raw, region)
        except NumberHasExtension:
            raise _Invalid("phone_extension") from None
        except InvalidNumber:
            raise _Invalid("invalid_phone") from None

    if kind == "timezone":
        return _check_timezone(raw)
    if kind == "date":
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise _Invalid("invalid_date") from None
    if kind == "decimal":
        try:
            amount = Decimal(str(raw))
        except InvalidOperation:
            raise _Invalid("invalid_type", expected="number") from None
        if not amount.is_finite() or amount < 0 or amount >= Decimal("1e12"):
            raise _Invalid("out_of_range", min=0, max="999999999999.99")
        return amount.quantize(Decimal("0.01"))
    if kind == "origins":
        if not isinstance(raw, list):
            raise _Invalid("invalid_type", expected="array")
        origins: list[str] = []
        for value in raw:
            origin = _check_origin(value)
            if origin not in origins:
                origins.append(origin)
        return origins
    raise AssertionError(f"unknown field kind {kind}")


def _check_length(item: Field, value: str) -> str:
    if item.max_length is not None and len(value) > item.max_length:
        raise _Invalid("too_long", max=item.max_length)
    if item.min_length is not None and len(value) < item.min_length:
        raise _Invalid("too_short", min=item.min_length)
    return value


def _check_range(item: Field, value: int) -> int:
    minimum = item.minimum if item.minimum is not None else -(2**31)
    maximum = item.maximum if item.maximum is not None else 2**31 - 1
    if not minimum <= value <= maximum:
        raise _Invalid("out_of_range", min=minimum, max=maximum)
    return value


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Invalid("invalid_timezone") from None
    return value


def _check_origin(value: Any) -> str:
    if not isinstance(value, str) or not is_storable_text(value):
        raise _Invalid("invalid_origin")
    try:
        return normalize_origin(value)
    except InvalidOrigin:
        raise _Invalid("invalid_origin") from None


_OPENAPI_TYPES = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "ref": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "phone": {"type": "string", "description": "phone number; stored and returned in E.164"},
    "date": {"type": "string", "format": "date"},
    "decimal": {"type": "string", "pattern": r"^\d+(\.\d{1,2})?$"},
    "timezone": {"type": "string", "description": "IANA time zone"},
    "dial_string": {"type": "string", "maxLength": MAX_DIAL_STRING_LENGTH, "pattern": r"^[A-Za-z][A-Za-z0-9_-]*/\S+$"},
    "origins": {"type": "array", "items": {"type": "string", "format": "uri"}},
}


def field_schema(item: Field) -> dict[str, Any]:
    """The OpenAPI 3.1 schema of one field."""
    if item.kind == "choice":
        schema: dict[str, Any] = {"type": "string", "enum": list(item.choices)}
    else:
        schema = dict(_OPENAPI_TYPES[item.kind])
    if item.max_length is not None:
        schema["maxLength"] = item.max_length
    if item.minimum is not None:
        schema["minimum"] = item.minimum
    if item.maximum is not None:
        schema["maximum"] = item.maximum
    if item.description:
        schema["description"] = item.description
    if item.nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def input_schema(fields: tuple[Field, ...], *, partial: bool) -> dict[str, Any]:
    properties = {
        item.name: field_schema(item) for item in fields if not (partial and item.create_only)
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [item.name for item in fields if item.required]
    if required and not partial:
        schema["required"] = required
    return schema
