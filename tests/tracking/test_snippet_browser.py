"""The ct.js snippet in real headless Chromium against sample pages served on loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

import models
from pbx_bridge.config import Config, TrackingConfig
from pbx_bridge.http.app import AppContext, build_app
from pbx_bridge.tracking.http import SNIPPET_PATH

from tests.tracking.conftest import SiteSetup, create_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<script async src="{api}/ct.js" data-site-key="okna-key-1" {extra}></script>
</head><body>
<p id="text">Call us: +7 (495) 000-00-01 or 8 495 000 00 01.</p>
<p id="other">Our office: +7 (495) 222-33-44.</p>
<a id="link" href="tel:+74950000001">call</a>
<a id="national-link" href="tel:84950000001">call</a>
<span id="marked" data-ct-phone>phone</span>
</body></html>
"""


@dataclass
class Stand:
    page_url: str
    api_url: str
    site: SiteSetup


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # Playwright gives each launch a fresh temporary profile (user data folder).
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


async def _serve_pages(extra: str = "") -> tuple[TestServer, dict[str, str]]:
    settings: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        html = PAGE.format(api=settings["api"], extra=settings.get("extra", ""))
        return web.Response(text=html, content_type="text/html")

    async def snippet(request: web.Request) -> web.FileResponse:
        return web.FileResponse(SNIPPET_PATH)

    app = web.Application()
    app.router.add_get("/", page)
    # A copy of the snippet for pages whose pbx-bridge is down.
    app.router.add_get("/static/ct.js", snippet)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    settings["extra"] = extra
    return server, settings


@pytest.fixture
async def stand(database) -> AsyncIterator[Stand]:
    async with _stand(database, pool_size=3) as running:
        yield running


@asynccontextmanager
async def _stand(database, *, pool_size: int) -> AsyncIterator[Stand]:
    pages, settings = await _serve_pages()
    page_origin = f"http://127.0.0.1:{pages.port}"
    site = await create_site(database, pool_size=pool_size, origins=(page_origin,))

    config = replace(Config(), tracking=TrackingConfig(site_cache_seconds=0.0))
    api = TestServer(build_app(AppContext(config=config, database=database)), host="127.0.0.1")
    await api.start_server()
    settings["api"] = f"http://127.0.0.1:{api.port}"
    try:
        yield Stand(page_url=f"{page_origin}/?utm_source=google", api_url=settings["api"], site=site)
    finally:
        await api.close()
        await pages.close()


async def _open(context, url: str):
    page = await context.new_page()
    await page.goto(url)
    number = await page.evaluate("window.pbxCallTracking ? window.pbxCallTracking.number() : null")
    return page, number


async def _texts(page) -> dict[str, str]:
    return await page.evaluate(
        """() => ({
            text: document.getElementById('text').textContent,
            other: document.getElementById('other').textContent,
            link: document.getElementById('link').getAttribute('href'),
            nationalLink: document.getElementById('national-link').getAttribute('href'),
            marked: document.getElementById('marked').textContent,
        })"""
    )


async def test_numbers_swapped_in_text_and_links(browser, stand):
    context = await browser.new_context()
    page, number = await _open(context, stand.page_url)
    texts = await _texts(page)
    await context.close()

    national = number["e164"][2:]
    assert number["e164"] in stand.site.pool_numbers
    assert texts["text"] == (
        f"Call us: +7 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]} "
        f"or 8 {national[:3]} {national[3:6]} {national[6:8]} {national[8:]}."
    )
    assert texts["other"] == "Our office: +7 (495) 222-33-44."
    assert texts["link"] == f"tel:{number['e164']}"
    assert texts["nationalLink"] == f"tel:8{national}"
    assert texts["marked"] == number["display"]


async def test_reload_keeps_number(browser, stand):
    context = await browser.new_context()
    page, first = await _open(context, stand.page_url)
    await page.reload()
    second = await page.evaluate("window.pbxCallTracking.number()")
    texts = await _texts(page)
    await context.close()

    assert second["e164"] == first["e164"]
    assert texts["link"] == f"tel:{first['e164']}"


async def test_second_visitor_gets_other_number(browser, stand):
    first_context = await browser.new_context()
    second_context = await browser.new_context()
    _, first = await _open(first_context, stand.page_url)
    _, second = await _open(second_context, stand.page_url)
    await first_context.close()
    await second_context.close()

    assert first["e164"] != second["e164"]
    assert {first["e164"], second["e164"]} <= set(stand.site.pool_numbers)


async def test_added_content_is_swapped(browser, stand):
    context = await browser.new_context()
    page, number = await _open(context, stand.page_url)
    await page.evaluate(
        """() => {
            const p = document.createElement('p');
            p.id = 'late';
            p.innerHTML = 'Late: <a href="tel:+74950000001">+7 495 000-00-01</a>';
            document.body.appendChild(p);
        }"""
    )
    await page.wait_for_function("document.getElementById('late').textContent !== 'Late: +7 495 000-00-01'")
    late_text = await page.evaluate("document.getElementById('late').textContent")
    late_link = await page.evaluate("document.querySelector('#late a').getAttribute('href')")
    await context.close()

    national = number["e164"][2:]
    assert late_text == f"Late: +7 {national[:3]} {national[3:6]}-{national[6:8]}-{national[8:]}"
    assert late_link == f"tel:{number['e164']}"


async def test_leave_beacon_releases_lease(browser, stand, database):
    context = await browser.new_context()
    page, number = await _open(context, stand.page_url)
    await page.close(run_before_unload=True)

    released = None
    for _ in range(50):
        async with database.sessions() as session:
            released = (
                await session.execute(select(models.NumberLease.released_at))
            ).scalar_one_or_none()
        if released is not None:
            break
        await asyncio.sleep(0.05)
    await context.close()

    assert number is not None
    assert released is not None


async def test_unreachable_api_keeps_original_numbers(browser, database):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    # The snippet itself comes from the page server; the API it calls is a closed port.
    pages, settings = await _serve_pages(extra=f'data-api="http://127.0.0.1:{closed_port}"')
    settings["api"] = f"http://127.0.0.1:{pages.port}/static"
    try:
        context = await browser.new_context()
        page, number = await _open(context, f"http://127.0.0.1:{pages.port}/")
        texts = await _texts(page)
        await context.close()
    finally:
        await pages.close()

    assert number is None
    assert texts["text"] == "Call us: +7 (495) 000-00-01 or 8 495 000 00 01."
    assert texts["link"] == "tel:+74950000001"
    assert texts["marked"] == "phone"


# A session id that no visitor has, so a number held by it is another visitor's to the page.
OTHER_SESSION_ID = 999_999
LINK_CHANGED = "href => document.getElementById('link').getAttribute('href') !== href"
LINK_IS = "href => document.getElementById('link').getAttribute('href') === href"


async def _give_number_to_other_visitor(database, e164: str) -> None:
    async with database.transaction() as session:
        await session.execute(
            update(models.TrackingNumber)
            .where(models.TrackingNumber.number == e164)
            .values(
                held_by_session_id=OTHER_SESSION_ID,
                held_until=datetime(2100, 1, 1, tzinfo=timezone.utc),
            )
        )


async def _wait_for(page, expression: str, arg: object = None) -> None:
    # The snippet reacts within milliseconds, so a failing test need not wait Playwright's 30 s.
    await page.wait_for_function(expression, arg=arg, timeout=5_000)


async def _send_heartbeat(page) -> int:
    """Make the snippet send a heartbeat now, as it does when the tab becomes visible again."""
    async with page.expect_response("**/api/v1/track/heartbeat") as response:
        await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    return (await response.value).status


async def test_lost_lease_shows_new_number(browser, stand, database):
    context = await browser.new_context()
    page, first = await _open(context, stand.page_url)
    await _give_number_to_other_visitor(database, first["e164"])

    status = await _send_heartbeat(page)
    await _wait_for(page, LINK_CHANGED, f"tel:{first['e164']}")
    second = await page.evaluate("window.pbxCallTracking.number()")
    texts = await _texts(page)
    await context.close()

    national = second["e164"][2:]
    assert status == 409
    assert second["e164"] != first["e164"]
    assert second["e164"] in stand.site.pool_numbers
    assert texts["text"] == (
        f"Call us: +7 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]} "
        f"or 8 {national[:3]} {national[3:6]} {national[6:8]} {national[8:]}."
    )
    assert texts["other"] == "Our office: +7 (495) 222-33-44."
    assert texts["link"] == f"tel:{second['e164']}"
    assert texts["nationalLink"] == f"tel:8{national}"
    assert texts["marked"] == second["display"]


async def test_lost_lease_swaps_added_content(browser, stand, database):
    context = await browser.new_context()
    page, first = await _open(context, stand.page_url)
    await _give_number_to_other_visitor(database, first["e164"])
    await _send_heartbeat(page)
    await _wait_for(page, LINK_CHANGED, f"tel:{first['e164']}")
    second = await page.evaluate("window.pbxCallTracking.number()")

    # Content added later may still carry the lost number, copied from the page before.
    await page.evaluate(
        """old => {
            const link = document.createElement('a');
            link.id = 'late';
            link.href = 'tel:' + old;
            document.body.appendChild(link);
        }""",
        first["e164"],
    )
    await _wait_for(
        page, "old => document.getElementById('late').getAttribute('href') !== old", f"tel:{first['e164']}"
    )
    late_link = await page.evaluate("document.getElementById('late').getAttribute('href')")
    await context.close()

    assert late_link == f"tel:{second['e164']}"


async def test_heartbeat_after_restart_holds_new_number(browser, stand, database):
    context = await browser.new_context()
    page, first = await _open(context, stand.page_url)
    await _give_number_to_other_visitor(database, first["e164"])
    await _send_heartbeat(page)
    await _wait_for(page, LINK_CHANGED, f"tel:{first['e164']}")

    status = await _send_heartbeat(page)
    async with database.sessions() as session:
        sessions = (await session.execute(select(models.VisitorSession.id))).scalars().all()
    await context.close()

    assert status == 200
    assert len(sessions) == 2


async def test_lost_lease_fires_number_event(browser, stand, database):
    context = await browser.new_context()
    page, first = await _open(context, stand.page_url)
    await page.evaluate(
        """() => {
            window.numberEvents = [];
            window.addEventListener(
                'pbxcalltracking:number', event => window.numberEvents.push(event.detail)
            );
        }"""
    )
    await _give_number_to_other_visitor(database, first["e164"])

    await _send_heartbeat(page)
    await _wait_for(page, "window.numberEvents.length > 0")
    events = await page.evaluate("window.numberEvents")
    second = await page.evaluate("window.pbxCallTracking.number()")
    await context.close()

    assert events == [second]
    assert second["e164"] != first["e164"]


async def test_lost_lease_in_full_pool_shows_site_number(browser, database):
    async with _stand(database, pool_size=1) as stand:
        context = await browser.new_context()
        page, first = await _open(context, stand.page_url)
        await _give_number_to_other_visitor(database, first["e164"])

        await _send_heartbeat(page)
        await _wait_for(page, LINK_IS, "tel:+74950000001")
        second = await page.evaluate("window.pbxCallTracking.number()")
        texts = await _texts(page)
        await context.close()

    assert first["e164"] == stand.site.pool_numbers[0]
    assert second == {"e164": stand.site.default_number, "display": "+7 (495) 000-00-01"}
    assert texts["text"] == "Call us: +7 (495) 000-00-01 or 8 495 000 00 01."
    assert texts["nationalLink"] == "tel:84950000001"
    assert texts["marked"] == "+7 (495) 000-00-01"


async def test_failed_restart_restores_original_numbers(browser, stand, database):
    context = await browser.new_context()
    page, first = await _open(context, stand.page_url)
    await _give_number_to_other_visitor(database, first["e164"])
    await page.route("**/api/v1/track/session", lambda route: route.abort())

    await _send_heartbeat(page)
    await _wait_for(page, LINK_IS, "tel:+74950000001")
    number = await page.evaluate("window.pbxCallTracking.number()")
    texts = await _texts(page)
    await context.close()

    assert number is None
    assert texts["text"] == "Call us: +7 (495) 000-00-01 or 8 495 000 00 01."
    assert texts["nationalLink"] == "tel:84950000001"
    assert texts["marked"] == "phone"
