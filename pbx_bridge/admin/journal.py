"""The call journal: filters, sorting, pagination, and export of the filtered rows as CSV or XLSX."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import aliased

from models import Attribution, Call, Company, Outcome, Recording, RecordingState, Source, TrackingNumber, VisitorSession
from pbx_bridge.admin.auth import current_user
from pbx_bridge.admin.errors import FieldError, not_found, validation_failed
from pbx_bridge.admin.params import DAY_RANGE, DayOutOfRange, check_day, path_id, query_id, query_ids, query_text
from pbx_bridge.admin.principal import Principal
from pbx_bridge.http.app import CONTEXT

MISSED_OUTCOMES = (Outcome.BUSY.value, Outcome.NO_ANSWER.value, Outcome.ABANDONED.value, Outcome.FAILED.value)
# "missed" is accepted in the outcome filter as a shorthand for every unanswered outcome.
OUTCOME_CHOICES = tuple(outcome.value for outcome in Outcome) + ("missed",)
ATTRIBUTION_CHOICES = tuple(kind.value for kind in Attribution)
SORT_COLUMNS = {
    "started_at": Call.started_at,
    "wait_seconds": Call.wait_seconds,
    "talk_seconds": Call.talk_seconds,
    "caller_number": Call.caller_number,
    "outcome": Call.outcome,
}
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Export stops here so one request cannot stream the whole database; narrow the period for more.
MAX_EXPORT_ROWS = 200_000
SESSION_FIELDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "referrer",
    "landing_page",
    "search_phrase",
)


@dataclass
class JournalQuery:
    """The checked filters of one journal request."""

    company_id: int | None
    start: datetime | None
    end: datetime | None
    source_ids: list[int]
    tracking_number_ids: list[int]
    outcomes: list[str]
    attributions: list[str]
    caller: str | None
    answered_by: str | None
    first_time: bool | None
    sort: str
    page: int
    page_size: int


def _choices(request: web.Request, name: str, choices: tuple[str, ...], errors: list[FieldError]) -> list[str]:
    values = []
    for raw in request.query.getall(name, []):
        for part in raw.split(","):
            if not part:
                continue
            if part not in choices:
                errors.append(FieldError(name, "invalid_choice", {"choices": ", ".join(choices)}))
            values.append(part)
    return values


def parse_moment(raw: str, zone: ZoneInfo, *, end_of_day: bool) -> datetime:
    """Read an ISO 8601 time with a zone, or a date taken in `zone`; an end date covers its day.

    Raise DayOutOfRange for a date outside the range of params.check_day, and ValueError for
    any other invalid text.
    """
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            raise ValueError("naive time") from None
        # Checked in its own offset, because moving a time near datetime.max to UTC overflows.
        check_day(moment.date())
        return moment.astimezone(timezone.utc)
    check_day(day)
    if end_of_day:
        day += timedelta(days=1)
    return datetime.combine(day, time(), zone).astimezone(timezone.utc)


async def company_zone(request: web.Request, company_id: int | None) -> ZoneInfo:
    if company_id is None:
        return ZoneInfo("UTC")
    async with request.app[CONTEXT].database.transaction() as session:
        company = await session.get(Company, company_id)
    if company is None:
        raise not_found("company")
    return ZoneInfo(company.timezone)


async def parse_journal_query(request: web.Request, user: Principal) -> JournalQuery:
    errors: list[FieldError] = []
    company_id = user.company_filter(query_id(request, "company_id", errors))
    zone = await company_zone(request, company_id)

    bounds: dict[str, datetime | None] = {"from": None, "to": None}
    for name in bounds:
        raw = request.query.get(name)
        if raw:
            try:
                bounds[name] = parse_moment(raw, zone, end_of_day=name == "to")
            except DayOutOfRange:
                errors.append(FieldError(name, "out_of_range", DAY_RANGE))
            except ValueError:
                errors.append(FieldError(name, "invalid_datetime"))

    sort = request.query.get("sort", "-started_at")
    if sort.lstrip("-") not in SORT_COLUMNS:
        choices = ", ".join(f"{name}, -{name}" for name in SORT_COLUMNS)
        errors.append(FieldError("sort", "invalid_choice", {"choices": choices}))

    page = _bounded_int(request, "page", 1, 1, 1_000_000, errors)
    page_size = _bounded_int(request, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE, errors)

    first_time_raw = request.query.get("first_time")
    first_time = None
    if first_time_raw:
        if first_time_raw not in ("true", "false"):
            errors.append(FieldError("first_time", "invalid_choice", {"choices": "true, false"}))
        first_time = first_time_raw == "true"

    query = JournalQuery(
        company_id=company_id,
        start=bounds["from"],
        end=bounds["to"],
        source_ids=query_ids(request, "source_id", errors),
        tracking_number_ids=query_ids(request, "tracking_number_id", errors),
        outcomes=_choices(request, "outcome", OUTCOME_CHOICES, errors),
        attributions=_choices(request, "attribution", ATTRIBUTION_CHOICES, errors),
        caller=query_text(request, "caller", errors),
        answered_by=query_text(request, "answered_by", errors),
        first_time=first_time,
        sort=sort,
        page=page,
        page_size=page_size,
    )
    if errors:
        raise validation_failed(errors)
    return query


def _bounded_int(request: web.Request, name: str, default: int, minimum: int, maximum: int, errors: list[FieldError]) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        errors.append(FieldError(name, "invalid_type", {"expected": "integer"}))
        return default
    if not minimum <= value <= maximum:
        errors.append(FieldError(name, "out_of_range", {"min": minimum, "max": maximum}))
    return value


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filtered(statement: Select, query: JournalQuery) -> Select:
    """Apply the filters of `query` to a statement over Call; every value is a bound parameter."""
    if query.company_id is not None:
        statement = statement.where(Call.company_id == query.company_id)
    if query.start is not None:
        statement = statement.where(Call.started_at >= query.start)
    if query.end is not None:
        statement = statement.where(Call.started_at < query.end)
    if query.source_ids:
        statement = statement.where(Call.source_id.in_(query.source_ids))
    if query.tracking_number_ids:
        statement = statement.where(Call.tracking_number_id.in_(query.tracking_number_ids))
    if query.outcomes:
        outcomes = set(query.outcomes)
        if "missed" in outcomes:
            outcomes.discard("missed")
            outcomes.update(MISSED_OUTCOMES)
        statement = statement.where(Call.outcome.in_(sorted(outcomes)))
    if query.attributions:
        statement = statement.where(Call.attribution.in_(query.attributions))
    if query.caller:
        pattern = f"%{_escape_like(query.caller)}%"
        statement = statement.where(
            or_(Call.caller_number.like(pattern, escape="\\"), Call.caller_raw.like(pattern, escape="\\"))
        )
    if query.answered_by:
        statement = statement.where(Call.answered_by == query.answered_by)
    if query.first_time is not None:
        statement = statement.where(Call.first_time_caller.is_(query.first_time))
    return statement


def journal_rows(query: JournalQuery) -> Select:
    """Rows of the journal with their source, number, session and recording, sorted."""
    column = SORT_COLUMNS[query.sort.lstrip("-")]
    order = column.desc() if query.sort.startswith("-") else column.asc()
    tiebreak = Call.id.desc() if query.sort.startswith("-") else Call.id.asc()
    statement = (
        select(Call, Source.name, TrackingNumber.number, VisitorSession, Recording)
        .outerjoin(Source, Source.id == Call.source_id)
        .outerjoin(TrackingNumber, TrackingNumber.id == Call.tracking_number_id)
        .outerjoin(VisitorSession, VisitorSession.id == Call.session_id)
        .outerjoin(Recording, Recording.call_id == Call.id)
    )
    return filtered(statement, query).order_by(order.nulls_last() if query.sort.startswith("-") else order, tiebreak)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def serialize_call(call: Call, source_name: str | None, number: str | None, visit: VisitorSession | None, recording: Recording | None) -> dict[str, Any]:
    recording_body = None
    if recording is not None:
        recording_body = {
            "state": recording.state,
            "format": recording.format,
            "duration_seconds": recording.duration_seconds,
            "url": f"/api/v1/calls/{call.id}/recording" if recording.state == RecordingState.DONE.value else None,
        }
    return {
        "id": call.id,
        "company_id": call.company_id,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "caller_number": call.caller_number,
        "caller_raw": call.caller_raw,
        "caller_name": call.caller_name,
        "dialed_number": call.dialed_number,
        "tracking_number_id": call.tracking_number_id,
        "tracking_number": number,
        "source_id": call.source_id,
        "source_name": source_name,
        "attribution": call.attribution,
        "first_time_caller": call.first_time_caller,
        "answered_by": call.answered_by,
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
        "outcome": call.outcome,
        "hangup_cause": call.hangup_cause,
        "hangup_side": call.hangup_side,
        "tags": call.tags or [],
        "session": {name: getattr(visit, name) for name in SESSION_FIELDS} if visit is not None else None,
        "recording": recording_body,
    }


async def fetch_page(request: web.Request, query: JournalQuery) -> dict[str, Any]:
    statement = journal_rows(query).limit(query.page_size).offset((query.page - 1) * query.page_size)
    count = filtered(select(func.count()).select_from(Call), query)
    async with request.app[CONTEXT].database.transaction() as session:
        rows = (await session.execute(statement)).all()
        total = await session.scalar(count)
    return {
        "items": [serialize_call(*row) for row in rows],
        "page": query.page,
        "page_size": query.page_size,
        "total": total,
    }


async def list_calls(request: web.Request) -> web.Response:
    query = await parse_journal_query(request, current_user(request))
    return web.json_response(await fetch_page(request, query))


async def get_call(request: web.Request) -> web.Response:
    user = current_user(request)
    call_id = path_id(request, "call")
    statement = journal_rows(
        JournalQuery(user.company_filter(None), None, None, [], [], [], [], None, None, None, "started_at", 1, 1)
    ).where(Call.id == call_id)
    async with request.app[CONTEXT].database.transaction() as session:
        row = (await session.execute(statement)).first()
    if row is None:
        raise not_found("call")
    return web.json_response(serialize_call(*row))


EXPORT_COLUMNS = (
    ("id", {"en": "Call id", "ru": "ID звонка"}),
    ("started_at", {"en": "Started", "ru": "Начало"}),
    ("caller_number", {"en": "Caller", "ru": "Звонивший"}),
    ("caller_raw", {"en": "Caller id as received", "ru": "Caller ID как получен"}),
    ("tracking_number", {"en": "Tracking number", "ru": "Номер отслеживания"}),
    ("source_name", {"en": "Source", "ru": "Источник"}),
    ("attribution", {"en": "Attribution", "ru": "Атрибуция"}),
    ("first_time_caller", {"en": "First-time caller", "ru": "Первичный звонок"}),
    ("outcome", {"en": "Outcome", "ru": "Результат"}),
    ("answered_by", {"en": "Answered by", "ru": "Ответил"}),
    ("wait_seconds", {"en": "Wait, s", "ru": "Ожидание, с"}),
    ("talk_seconds", {"en": "Talk, s", "ru": "Разговор, с"}),
    ("utm_source", {"en": "utm_source", "ru": "utm_source"}),
    ("utm_medium", {"en": "utm_medium", "ru": "utm_medium"}),
    ("utm_campaign", {"en": "utm_campaign", "ru": "utm_campaign"}),
    ("utm_term", {"en": "utm_term", "ru": "utm_term"}),
    ("referrer", {"en": "Referrer", "ru": "Реферер"}),
    ("search_phrase", {"en": "Search phrase", "ru": "Поисковая фраза"}),
)
# Spreadsheets run a CSV cell starting with these as a formula (CSV injection), so such text
# gets a leading apostrophe, which Excel and LibreOffice hide when they open a CSV file.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_values(row: tuple, zone: ZoneInfo) -> list[Any]:
    """Return the values of one journal row in the order of EXPORT_COLUMNS, booleans as 0 or 1."""
    call, source_name, number, visit, _recording = row
    flat = {
        "id": call.id,
        "started_at": call.started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        "caller_number": call.caller_number,
        "caller_raw": call.caller_raw,
        "tracking_number": number,
        "source_name": source_name,
        "attribution": call.attribution,
        "first_time_caller": call.first_time_caller,
        "outcome": call.outcome,
        "answered_by": call.answered_by,
        "wait_seconds": call.wait_seconds,
        "talk_seconds": call.talk_seconds,
    }
    for name in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "referrer", "search_phrase"):
        flat[name] = getattr(visit, name) if visit is not None else None
    values = [flat[name] for name, _ in EXPORT_COLUMNS]
    return [int(value) if isinstance(value, bool) else value for value in values]


def _csv_value(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _xlsx_value(sheet: Any, value: Any) -> Any:
    """Put text in a cell typed as text, so "+79161234567" or "=1+1" shows as written and never
    runs as a formula. An apostrophe would show literally in XLSX, unlike in CSV."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if not isinstance(value, str):
        return value
    # XML 1.0 cannot carry most control characters, and openpyxl raises on them.
    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))
    cell.data_type = "s"
    cell.number_format = "@"
    return cell


def _export_name(query: JournalQuery, extension: str) -> str:
    start = query.start.date().isoformat() if query.start else "all"
    end = query.end.date().isoformat() if query.end else "now"
    return f"calls_{start}_{end}.{extension}"


async def _export_rows(request: web.Request, query: JournalQuery):
    statement = journal_rows(query).limit(MAX_EXPORT_ROWS).execution_options(yield_per=2000)
    async with request.app[CONTEXT].database.sessions() as session:
        result = await session.stream(statement)
        async for partition in result.partitions():
            for row in partition:
                yield tuple(row)


async def export_csv(request: web.Request) -> web.StreamResponse:
    """Stream the filtered journal as UTF-8 CSV with a byte order mark, so Excel reads Cyrillic
    text; `delimiter=semicolon` suits Excel with Russian regional settings."""
    from pbx_bridge.admin.errors import request_language

    query = await parse_journal_query(request, current_user(request))
    zone = await company_zone(request, query.company_id)
    language = request_language(request)
    delimiter = ";" if request.query.get("delimiter") == "semicolon" else ","
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{_export_name(query, "csv")}"',
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([labels[language] for _, labels in EXPORT_COLUMNS])
    await response.write(("\ufeff" + buffer.getvalue()).encode())
    buffer.seek(0)
    buffer.truncate()
    async for row in _export_rows(request, query):
        writer.writerow([_csv_value(value) for value in export_values(row, zone)])
        if buffer.tell() > 64 * 1024:
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


async def export_xlsx(request: web.Request) -> web.Response:
    """Build the filtered journal as an XLSX workbook with typed cells."""
    from openpyxl import Workbook

    from pbx_bridge.admin.errors import request_language

    query = await parse_journal_query(request, current_user(request))
    zone = await company_zone(request, query.company_id)
    language = request_language(request)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("calls" if language == "en" else "звонки")
    sheet.append([labels[language] for _, labels in EXPORT_COLUMNS])
    async for row in _export_rows(request, query):
        sheet.append([_xlsx_value(sheet, value) for value in export_values(row, zone)])
    output = io.BytesIO()
    workbook.save(output)
    return web.Response(
        body=output.getvalue(),
        headers={
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "Content-Disposition": f'attachment; filename="{_export_name(query, "xlsx")}"',
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls", list_calls)
    app.router.add_get("/api/v1/calls/export.csv", export_csv)
    app.router.add_get("/api/v1/calls/export.xlsx", export_xlsx)
    app.router.add_get("/api/v1/calls/{id:\\d+}", get_call)
