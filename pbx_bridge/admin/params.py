"""Checked reading of ids, dates and text from the URL of an admin API or dashboard request.

A value that no row can match (an id beyond the integer column, a NUL character) gets a 4xx
error here, because the database driver would otherwise fail the request with a 500.
"""

from __future__ import annotations

import re
from datetime import date

from aiohttp import web

from pbx_bridge.admin.errors import FieldError, not_found
from pbx_bridge.inputs import is_storable_text

# Every id is a PostgreSQL integer column.
MAX_ID = 2**31 - 1
# Dates of filters and reports. The end of 9999-12-31 is beyond datetime.max, and a time near
# year 1 leaves datetime's range when moved to UTC, so the range stops well short of both.
MIN_DAY = date(1900, 1, 1)
MAX_DAY = date(9998, 12, 31)
DAY_RANGE = {"min": MIN_DAY.isoformat(), "max": MAX_DAY.isoformat()}

_DIGITS = re.compile(r"[0-9]+")


class DayOutOfRange(ValueError):
    """A date or time outside MIN_DAY..MAX_DAY."""


def parse_id(raw: str) -> int | None:
    """Return the id written in `raw`, or None unless it is ASCII digits for 1 to MAX_ID."""
    if _DIGITS.fullmatch(raw) is None or len(raw) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def path_id(request: web.Request, what: str, name: str = "id") -> int:
    """Return the id in the URL path, or raise 404 for a value that no row can have."""
    value = parse_id(request.match_info[name])
    if value is None:
        raise not_found(what)
    return value


def query_ids(request: web.Request, name: str, errors: list[FieldError]) -> list[int]:
    """Read ids given as `name=1,2` or `name=1&name=2`; add a field error for each invalid one."""
    values = []
    for raw in request.query.getall(name, []):
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            value = parse_id(part)
            if value is not None:
                values.append(value)
            elif _DIGITS.fullmatch(part.lstrip("-")):
                errors.append(FieldError(name, "out_of_range", {"min": 1, "max": MAX_ID}))
            else:
                errors.append(FieldError(name, "invalid_type", {"expected": "integer"}))
    return values


def query_id(request: web.Request, name: str, errors: list[FieldError]) -> int | None:
    """Read one optional id; the first one when the query repeats `name`."""
    values = query_ids(request, name, errors)
    return values[0] if values else None


def query_text(request: web.Request, name: str, errors: list[FieldError]) -> str | None:
    """Read an optional text filter; an empty value counts as absent."""
    value = request.query.get(name)
    if not value:
        return None
    if not is_storable_text(value):
        errors.append(FieldError(name, "invalid_characters"))
        return None
    return value


def check_day(day: date) -> date:
    """Return `day`, or raise DayOutOfRange when it is outside MIN_DAY..MAX_DAY."""
    if not MIN_DAY <= day <= MAX_DAY:
        raise DayOutOfRange(f"{day} is outside {MIN_DAY}..{MAX_DAY}")
    return day


def query_day(request: web.Request, name: str, errors: list[FieldError]) -> date | None:
    """Read an optional date as YYYY-MM-DD within MIN_DAY..MAX_DAY."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return check_day(date.fromisoformat(raw))
    except DayOutOfRange:
        errors.append(FieldError(name, "out_of_range", DAY_RANGE))
    except ValueError:
        errors.append(FieldError(name, "invalid_date"))
    return None
