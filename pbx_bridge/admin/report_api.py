"""HTTP handlers of the reports: a period of whole days in the company's time zone."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from models import Company
from pbx_bridge.admin.auth import current_user
from pbx_bridge.admin.errors import FieldError, not_found, validation_failed
from pbx_bridge.admin.params import query_day, query_id
from pbx_bridge.http.app import CONTEXT
from pbx_bridge.reports import (
    Period,
    calls_by_day,
    calls_by_hour,
    destination_report,
    pool_report,
    source_report,
)

# A longer period is a request mistake more often than a wish; it also bounds the work per request.
MAX_PERIOD_DAYS = 366
DEFAULT_PERIOD_DAYS = 30


def _plain(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def rows_json(rows: list) -> list[dict[str, Any]]:
    return [{key: _plain(value) for key, value in dataclasses.asdict(row).items()} for row in rows]


async def report_scope(request: web.Request) -> tuple[Company, Period]:
    """Read company_id, from and to (dates, both included) and return the company and period.

    Without dates the period is the last 30 days up to today in the company's time zone.
    """
    user = current_user(request)
    errors: list[FieldError] = []
    company_id = user.company_filter(query_id(request, "company_id", errors))
    if company_id is None and not errors:
        errors.append(FieldError("company_id", "required"))

    days = {name: query_day(request, name, errors) for name in ("from", "to")}
    if errors:
        raise validation_failed(errors)

    async with request.app[CONTEXT].database.transaction() as session:
        company = await session.get(Company, company_id)
    if company is None:
        raise not_found("company")
    zone = ZoneInfo(company.timezone)
    last = days["to"] or datetime.now(zone).date()
    first = days["from"] or last - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    if last < first:
        raise validation_failed([FieldError("to", "period_reversed")])
    if (last - first).days + 1 > MAX_PERIOD_DAYS:
        raise validation_failed([FieldError("from", "out_of_range", {"min": 1, "max": MAX_PERIOD_DAYS})])
    return company, Period(first, last, zone)


def _envelope(company: Company, period: Period, rows: list) -> dict[str, Any]:
    return {
        "company_id": company.id,
        "timezone": company.timezone,
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "items": rows_json(rows),
    }


def _handler(query):
    async def handle(request: web.Request) -> web.Response:
        company, period = await report_scope(request)
        async with request.app[CONTEXT].database.transaction() as session:
            rows = await query(session, company.id, period)
        return web.json_response(_envelope(company, period, rows))

    handle.__name__ = f"report_{query.__name__}"
    return handle


REPORTS = {
    "sources": source_report,
    "days": calls_by_day,
    "hours": calls_by_hour,
    "destinations": destination_report,
    "pools": pool_report,
}


def add_routes(app: web.Application) -> None:
    for name, query in REPORTS.items():
        app.router.add_get(f"/api/v1/reports/{name}", _handler(query))
