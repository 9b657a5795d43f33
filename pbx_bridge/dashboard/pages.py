"""Server-rendered dashboard pages: login, the journal, the source report and pool utilisation.

Templates autoescape every value, so UTM tags, referrers and search phrases that came from
websites show as text. Pages load only the product's own stylesheet, and the Content Security
Policy forbids scripts altogether.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from sqlalchemy import select

from models import Company, Source, TokenKind
from pbx_bridge.admin.auth import SESSION_COOKIE, SESSION_LIFETIME, issue_token
from pbx_bridge.admin.errors import ApiError
from pbx_bridge.admin.journal import fetch_page, parse_journal_query
from pbx_bridge.admin.params import parse_id
from pbx_bridge.admin.principal import USER, Principal
from pbx_bridge.admin.report_api import report_scope
from pbx_bridge.admin.throttle import LOGIN_THROTTLE, client_ip
from pbx_bridge.admin.users import check_login, revoke_token, set_session_cookie
from pbx_bridge.dashboard.charts import horizontal_chart, vertical_chart
from pbx_bridge.dashboard.texts import translator
from pbx_bridge.http.app import CONTEXT
from pbx_bridge.reports import calls_by_day, pool_report, source_report

log = logging.getLogger("pbx_bridge.dashboard")

HERE = Path(__file__).parent
LANGUAGE_COOKIE = "pbx_lang"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def page_language(request: web.Request) -> str:
    """?lang= first, then the language cookie, then the user's setting, then Russian."""
    for candidate in (request.query.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
        if candidate in ("ru", "en"):
            return candidate
    user = request.get(USER)
    return user.language if user is not None else "ru"


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    language = page_language(request)
    html = _templates.get_template(template).render(
        t=translator(language), lang=language, user=request.get(USER), **values
    )
    response = web.Response(text=html, content_type="text/html", status=status, headers=SECURITY_HEADERS)
    if request.query.get("lang") in ("ru", "en"):
        response.set_cookie(LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600, samesite="Lax", path="/")
    return response


async def login_required(request: web.Request) -> web.Response:
    """Render the login form with status 401 for an unauthenticated dashboard request."""
    return render(request, "login.html", status=401, page_title="login", failed=False, login_value="", retry_after=0)


async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", page_title="login", failed=False, login_value="", retry_after=0)


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    login = str(form.get("login", ""))[:200]
    password = str(form.get("password", ""))[:1024]
    throttle = request.app[LOGIN_THROTTLE]
    ip = client_ip(request)
    wait = throttle.start_attempt(ip, login)
    if wait:
        log.debug("dashboard login from %s rejected for %s s after too many failures", ip, wait)
        response = render(
            request, "login.html", status=429, page_title="login", failed=False, login_value=login, retry_after=wait
        )
        response.headers["Retry-After"] = str(wait)
        return response

    async with request.app[CONTEXT].database.transaction() as session:
        user = await check_login(session, login, password)
        secret = None
        if user is not None:
            _token, secret = await issue_token(session, user, TokenKind.SESSION, lifetime=SESSION_LIFETIME)
    if secret is None:
        return render(
            request, "login.html", status=401, page_title="login", failed=True, login_value=login, retry_after=0
        )
    throttle.succeeded(ip, login)
    redirect = web.HTTPSeeOther("/dashboard")
    set_session_cookie(redirect, secret)
    raise redirect


async def logout(request: web.Request) -> web.Response:
    """Revoke the session; the Origin check keeps other sites from logging the user out."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden()
    await revoke_token(request, request[USER].token_id)
    redirect = web.HTTPSeeOther("/dashboard/login")
    redirect.del_cookie(SESSION_COOKIE, path="/")
    raise redirect


async def _companies(request: web.Request, user: Principal) -> list[Company]:
    statement = select(Company).order_by(Company.name)
    if not user.is_admin:
        statement = statement.where(Company.id == user.company_id)
    async with request.app[CONTEXT].database.transaction() as session:
        return list((await session.scalars(statement)).all())


async def _with_default_company(request: web.Request, user: Principal) -> tuple[web.Request, list[Company], int | None]:
    """Give the request the user's first company when it names none or gives an invalid id,
    since reports need one."""
    companies = await _companies(request, user)
    company_id = parse_id(request.query.get("company_id", ""))
    if company_id is not None or not companies:
        return request, companies, company_id or user.company_id
    query = {**request.query, "company_id": str(companies[0].id)}
    return request.clone(rel_url=request.rel_url.with_query(query)), companies, companies[0].id


def _company_query(company_id: int | None) -> str:
    return f"?company_id={company_id}" if company_id else ""


async def journal_page(request: web.Request) -> web.Response:
    user = request[USER]
    request, companies, company_id = await _with_default_company(request, user)
    filters = {key: value for key, value in request.query.items() if key != "lang" and value}
    language = {"lang": request.query["lang"]} if "lang" in request.query else {}
    request = request.clone(rel_url=request.rel_url.with_query({**filters, **language}))
    invalid = False
    try:
        query = await parse_journal_query(request, user)
    except ApiError as error:
        if error.status == 403:
            raise web.HTTPForbidden() from None
        invalid = True
        request = request.clone(rel_url=request.rel_url.with_query({"company_id": str(company_id or ""), **language}))
        query = await parse_journal_query(request, user)
    page_data = await fetch_page(request, query)
    zone = ZoneInfo(next((c.timezone for c in companies if c.id == company_id), "UTC"))
    for item in page_data["items"]:
        item["local_started"] = _local(item["started_at"], zone)

    async with request.app[CONTEXT].database.transaction() as session:
        sources = (await session.scalars(select(Source).where(Source.company_id == company_id).order_by(Source.name))).all()

    base = {key: value for key, value in filters.items() if key != "page"}
    pages = -(-page_data["total"] // query.page_size)
    return render(
        request,
        "journal.html",
        page="journal",
        page_title="journal",
        companies=companies,
        company_id=company_id,
        company_query=_company_query(company_id),
        filters=filters,
        invalid=invalid,
        sources=sources,
        page_data=page_data,
        export_query=urlencode(base),
        previous_query=urlencode({**base, "page": query.page - 1}) if query.page > 1 else "",
        next_query=urlencode({**base, "page": query.page + 1}) if query.page < pages else "",
    )


def _local(iso: str, zone: ZoneInfo) -> str:
    from datetime import datetime

    return datetime.fromisoformat(iso).astimezone(zone).strftime("%d.%m.%Y %H:%M")


async def _report_context(request: web.Request) -> tuple[web.Request, list[Company], Company, Any]:
    user = request[USER]
    request, companies, _company_id = await _with_default_company(request, user)
    try:
        company, period = await report_scope(request)
    except ApiError as error:
        if error.status in (403, 404):
            raise web.HTTPForbidden() from None
        # An invalid period falls back to the default one rather than an error page.
        query = {key: value for key, value in request.query.items() if key in ("company_id", "lang")}
        request = request.clone(rel_url=request.rel_url.with_query(query))
        company, period = await report_scope(request)
    return request, companies, company, period


async def reports_page(request: web.Request) -> web.Response:
    request, companies, company, period = await _report_context(request)
    t = translator(page_language(request))
    async with request.app[CONTEXT].database.transaction() as session:
        rows = await source_report(session, company.id, period)
        days = await calls_by_day(session, company.id, period)
    names = [row.source_name or t("no_source") for row in rows]
    charts = [
        horizontal_chart("chart-calls", t("chart_calls"), "bar", [(name, row.calls) for name, row in zip(names, rows)]),
        horizontal_chart(
            "chart-cost", t("chart_cost"), "bar-cost",
            [(name, row.cost_per_call) for name, row in zip(names, rows)], "{:.2f}",
        ),
        vertical_chart("chart-days", t("chart_days"), "bar-day", [(_day_label(day.day), day.calls) for day in days]),
    ]
    return render(
        request, "reports.html", page="reports", page_title="reports", companies=companies,
        company_id=company.id, company_query=_company_query(company.id), period=period, rows=rows, charts=charts,
    )


def _day_label(day: date) -> str:
    return day.strftime("%d.%m")


async def pools_page(request: web.Request) -> web.Response:
    request, companies, company, period = await _report_context(request)
    t = translator(page_language(request))
    async with request.app[CONTEXT].database.transaction() as session:
        rows = await pool_report(session, company.id, period)
    chart = horizontal_chart(
        "chart-utilisation", t("utilisation"), "bar",
        [(row.pool_name, round(row.utilisation * 100, 1) if row.utilisation is not None else None) for row in rows],
        "{:.1f}%",
    )
    return render(
        request, "pools.html", page="pools", page_title="pools", companies=companies, company_id=company.id,
        company_query=_company_query(company.id), period=period, rows=rows, charts=[chart] if rows else [],
    )


def setup_dashboard(app: web.Application) -> None:
    app.router.add_get("/dashboard/login", login_form)
    app.router.add_post("/dashboard/login", login_submit)
    app.router.add_post("/dashboard/logout", logout)
    app.router.add_get("/dashboard", journal_page)
    app.router.add_get("/dashboard/reports", reports_page)
    app.router.add_get("/dashboard/pools", pools_page)
    app.router.add_static("/dashboard/static/", HERE / "static", follow_symlinks=False)
