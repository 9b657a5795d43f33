"""Companies, sites, sources, tracking numbers and pools: the settings `pbx-bridge load` fills.

Everyone reads the objects of the companies they can see; only admins create, change or delete.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import (
    Company,
    Destination,
    ExhaustedPolicy,
    NumberMode,
    NumberPool,
    NumberState,
    Site,
    Source,
    SourceKind,
    SourceSpend,
    TrackingNumber,
)
from pbx_bridge.admin.auth import current_user, require_admin
from pbx_bridge.admin.errors import ApiError, FieldError, not_found, validation_failed
from pbx_bridge.admin.params import path_id, query_id
from pbx_bridge.admin.schema import Field, parse_fields, read_json
from pbx_bridge.http.app import CONTEXT

REFERENCES: dict[str, type] = {
    "company": Company,
    "site": Site,
    "source": Source,
    "pool": NumberPool,
    "number": TrackingNumber,
}

COMPANY_FIELDS = (
    Field("name", "string", required=True, min_length=1, max_length=200),
    Field("timezone", "timezone", description="IANA time zone of reports, e.g. Europe/Moscow"),
    Field("ring_timeout", "integer", minimum=1, maximum=600, description="seconds"),
    Field("recording", "boolean"),
)
SITE_FIELDS = (
    Field("company_id", "ref", ref="company", required=True, create_only=True),
    Field("name", "string", required=True, min_length=1, max_length=200),
    Field("site_key", "string", min_length=8, max_length=64, description="generated when absent"),
    Field("allowed_origins", "origins"),
    Field("default_number_id", "ref", ref="number", nullable=True),
    Field("direct_source_id", "ref", ref="source", nullable=True),
    Field("default_source_id", "ref", ref="source", nullable=True),
    Field("display_format", "string", max_length=64, nullable=True, description='e.g. "+7 (XXX) XXX-XX-XX"'),
)
SOURCE_FIELDS = (
    Field("company_id", "ref", ref="company", required=True, create_only=True),
    Field("name", "string", required=True, min_length=1, max_length=200),
    Field("kind", "choice", choices=tuple(kind.value for kind in SourceKind)),
    Field("dynamic", "boolean"),
    Field("match_utm_source", "string", max_length=200, nullable=True),
    Field("match_utm_medium", "string", max_length=200, nullable=True),
    Field("match_utm_campaign", "string", max_length=200, nullable=True),
    Field("match_referrer_host", "string", max_length=255, nullable=True),
    Field("priority", "integer", minimum=0, maximum=1_000_000),
)
SPEND_FIELDS = (
    Field("period_start", "date", required=True),
    Field("period_end", "date", required=True),
    Field("amount", "decimal", required=True),
    Field("currency", "string", min_length=3, max_length=3),
)
NUMBER_FIELDS = (
    Field("company_id", "ref", ref="company", required=True, create_only=True),
    Field("number", "phone", required=True),
    Field("mode", "choice", choices=tuple(mode.value for mode in NumberMode)),
    Field("source_id", "ref", ref="source", nullable=True),
    Field("pool_id", "ref", ref="pool", nullable=True),
    Field("state", "choice", choices=tuple(state.value for state in NumberState)),
)
POOL_FIELDS = (
    Field("site_id", "ref", ref="site", required=True, create_only=True),
    Field("name", "string", required=True, min_length=1, max_length=200),
    Field("hold_time", "integer", minimum=0, maximum=86_400, description="seconds"),
    Field("heartbeat_interval", "integer", minimum=1, maximum=3_600, description="seconds"),
    Field("exhausted_policy", "choice", choices=tuple(policy.value for policy in ExhaustedPolicy)),
)
DESTINATION_FIELDS = (
    Field("endpoint", "dial_string", required=True, description="Asterisk dial string such as PJSIP/office"),
    Field("ring_timeout", "integer", minimum=1, maximum=600, nullable=True),
)


@dataclass(frozen=True)
class Resource:
    name: str
    label: str
    model: type
    fields: tuple[Field, ...]
    # Extra keys of the JSON object beyond the declared fields.
    extra_fields: tuple[str, ...] = ()
    nested: dict[str, tuple[Field, ...]] = field(default_factory=dict)

    def scoped(self, statement: Select, company_id: int | None) -> Select:
        """Limit `statement` to the objects of `company_id` (None: every company)."""
        if company_id is None:
            return statement
        if self.model is Company:
            return statement.where(Company.id == company_id)
        if self.model is NumberPool:
            return statement.join(Site, Site.id == NumberPool.site_id).where(Site.company_id == company_id)
        return statement.where(self.model.company_id == company_id)


RESOURCES = {
    "companies": Resource("companies", "company", Company, COMPANY_FIELDS, nested={"destinations": DESTINATION_FIELDS}),
    "sites": Resource("sites", "site", Site, SITE_FIELDS),
    "sources": Resource("sources", "source", Source, SOURCE_FIELDS, nested={"spend": SPEND_FIELDS}),
    "numbers": Resource("numbers", "tracking number", TrackingNumber, NUMBER_FIELDS),
    "pools": Resource("pools", "pool", NumberPool, POOL_FIELDS),
}


def _json_value(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def serialize(resource: Resource, obj: Any) -> dict[str, Any]:
    body = {"id": obj.id}
    for item in resource.fields:
        body[item.name] = _json_value(getattr(obj, item.name))
    if resource.model is Company:
        body["destinations"] = [
            {"endpoint": dest.endpoint, "ring_timeout": dest.ring_timeout} for dest in obj.destinations
        ]
    if resource.model is Source:
        body["spend"] = [
            {name: _json_value(getattr(spend, name)) for name in ("period_start", "period_end", "amount", "currency")}
            for spend in sorted(obj.spend, key=lambda spend: spend.period_start)
        ]
    return body


async def company_of(session: AsyncSession, obj: Any) -> int:
    if isinstance(obj, Company):
        return obj.id
    if isinstance(obj, NumberPool):
        site = await session.get(Site, obj.site_id)
        return site.company_id
    return obj.company_id


def _load_options(resource: Resource) -> list:
    from sqlalchemy.orm import selectinload

    if resource.model is Company:
        return [selectinload(Company.destinations)]
    if resource.model is Source:
        return [selectinload(Source.spend)]
    return []


def _resource(request: web.Request) -> Resource:
    return RESOURCES[request.match_info["resource"]]


async def list_objects(request: web.Request) -> web.Response:
    resource = _resource(request)
    user = current_user(request)
    errors: list[FieldError] = []
    requested = query_id(request, "company_id", errors)
    if errors:
        raise validation_failed(errors)
    company_id = user.company_filter(requested)
    statement = resource.scoped(select(resource.model), company_id)
    statement = statement.options(*_load_options(resource)).order_by(resource.model.id)
    async with request.app[CONTEXT].database.transaction() as session:
        objects = (await session.scalars(statement)).all()
        items = [serialize(resource, obj) for obj in objects]
    return web.json_response({"items": items})


async def get_object(request: web.Request) -> web.Response:
    resource = _resource(request)
    async with request.app[CONTEXT].database.transaction() as session:
        obj = await _load_visible(request, session, resource)
        return web.json_response(serialize(resource, obj))


async def _load_visible(request: web.Request, session: AsyncSession, resource: Resource) -> Any:
    """Load the object of the URL, or 404 when it is missing or belongs to a company the user
    cannot see (so its existence does not leak)."""
    statement = select(resource.model).where(resource.model.id == path_id(request, resource.label))
    statement = resource.scoped(statement, current_user(request).company_filter(None))
    obj = (await session.scalars(statement.options(*_load_options(resource)))).first()
    if obj is None:
        raise not_found(resource.label)
    return obj


async def create_object(request: web.Request) -> web.Response:
    require_admin(request)
    resource = _resource(request)
    body = await read_json(request)
    region = request.app[CONTEXT].config.calls.default_region
    values, errors = parse_fields(_without_nested(resource, body), resource.fields, partial=False, region=region)
    nested, nested_errors = _parse_nested(resource, body)
    if errors or nested_errors:
        raise validation_failed(errors + nested_errors)

    async with request.app[CONTEXT].database.transaction() as session:
        obj = resource.model()
        if resource.model is Source:
            obj.spend = []
        if resource.model is Company:
            obj.destinations = []
        await _apply(session, resource, obj, values, nested)
        session.add(obj)
        await _flush(session, resource)
        obj = await _reload(session, resource, obj.id)
        body = serialize(resource, obj)
    return web.json_response(body, status=201)


async def update_object(request: web.Request) -> web.Response:
    require_admin(request)
    resource = _resource(request)
    body = await read_json(request)
    region = request.app[CONTEXT].config.calls.default_region
    values, errors = parse_fields(_without_nested(resource, body), resource.fields, partial=True, region=region)
    nested, nested_errors = _parse_nested(resource, body)
    if errors or nested_errors:
        raise validation_failed(errors + nested_errors)

    async with request.app[CONTEXT].database.transaction() as session:
        obj = await _load_visible(request, session, resource)
        await _apply(session, resource, obj, values, nested)
        await _flush(session, resource)
        obj = await _reload(session, resource, obj.id)
        body = serialize(resource, obj)
    return web.json_response(body)


async def delete_object(request: web.Request) -> web.Response:
    require_admin(request)
    resource = _resource(request)
    async with request.app[CONTEXT].database.transaction() as session:
        obj = await _load_visible(request, session, resource)
        await session.delete(obj)
        await _flush(session, resource)
    return web.Response(status=204)


def _without_nested(resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in resource.nested}


def _parse_nested(resource: Resource, body: dict[str, Any]) -> tuple[dict[str, list[dict]], list[FieldError]]:
    """Check nested lists (a company's destinations, a source's spend) item by item; field
    names of errors read like `spend[1].amount`."""
    parsed: dict[str, list[dict]] = {}
    errors: list[FieldError] = []
    for name, fields in resource.nested.items():
        if name not in body:
            continue
        items = body[name]
        if not isinstance(items, list):
            errors.append(FieldError(name, "invalid_type", {"expected": "array"}))
            continue
        parsed[name] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append(FieldError(f"{name}[{index}]", "invalid_type", {"expected": "object"}))
                continue
            values, item_errors = parse_fields(item, fields, partial=False)
            for error in item_errors:
                errors.append(FieldError(f"{name}[{index}].{error.field}", error.code, error.details))
            if "period_start" in values and "period_end" in values and values["period_end"] < values["period_start"]:
                errors.append(FieldError(f"{name}[{index}].period_end", "period_reversed"))
            parsed[name].append(values)
    return parsed, errors


async def _apply(
    session: AsyncSession, resource: Resource, obj: Any, values: dict[str, Any], nested: dict[str, list[dict]]
) -> None:
    """Set checked values on `obj` after checking that every referenced object exists in the
    same company."""
    company_id = values.get("company_id")
    if company_id is None and obj.id is not None:
        company_id = await company_of(session, obj)
    if resource.model is NumberPool and "site_id" in values:
        site = await session.get(Site, values["site_id"])
        if site is None:
            raise validation_failed([FieldError("site_id", "reference_not_found", {"what": "site"})])
        company_id = site.company_id

    errors: list[FieldError] = []
    for item in resource.fields:
        if item.kind != "ref" or values.get(item.name) is None or item.name == "site_id":
            continue
        target = await session.get(REFERENCES[item.ref], values[item.name])
        if target is None or (item.ref != "company" and await company_of(session, target) != company_id):
            errors.append(FieldError(item.name, "reference_not_found", {"what": item.ref}))
    if errors:
        raise validation_failed(errors)

    for name, value in values.items():
        setattr(obj, name, value)
    if resource.model is Site and not obj.site_key:
        obj.site_key = secrets.token_urlsafe(18)
    if resource.model is TrackingNumber:
        _check_number_binding(obj)
    if "destinations" in nested:
        obj.destinations.clear()
        await session.flush()
        for position, item in enumerate(nested["destinations"], start=1):
            obj.destinations.append(Destination(position=position, **item))
    if "spend" in nested:
        obj.spend.clear()
        await session.flush()
        for item in nested["spend"]:
            obj.spend.append(SourceSpend(**item))


def _check_number_binding(number: TrackingNumber) -> None:
    mode = number.mode or NumberMode.STATIC.value
    static_ok = mode == NumberMode.STATIC.value and number.pool_id is None
    pool_ok = mode == NumberMode.POOL.value and number.source_id is None and number.pool_id is not None
    if not (static_ok or pool_ok):
        raise validation_failed([FieldError("mode", "mode_binding")])


async def _flush(session: AsyncSession, resource: Resource) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise ApiError(409, "conflict") from None


async def _reload(session: AsyncSession, resource: Resource, object_id: int) -> Any:
    session.expire_all()
    statement = select(resource.model).where(resource.model.id == object_id).options(*_load_options(resource))
    return (await session.scalars(statement)).one()


def add_routes(app: web.Application) -> None:
    pattern = "{resource:" + "|".join(RESOURCES) + "}"
    app.router.add_get(f"/api/v1/{pattern}", list_objects)
    app.router.add_post(f"/api/v1/{pattern}", create_object)
    app.router.add_get(f"/api/v1/{pattern}/{{id}}", get_object)
    app.router.add_patch(f"/api/v1/{pattern}/{{id}}", update_object)
    app.router.add_delete(f"/api/v1/{pattern}/{{id}}", delete_object)
