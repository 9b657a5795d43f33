"""Dashboard pages over HTTP: login, languages, escaping and the absence of outside assets."""

from __future__ import annotations

import re

from tests.admin.conftest import PASSWORD, World


async def _login(world: World, login: str = "viewer") -> None:
    response = await world.client.post("/dashboard/login", data={"login": login, "password": PASSWORD}, allow_redirects=False)
    assert response.status == 303


async def test_unauthenticated_dashboard_shows_login_with_401(world: World) -> None:
    response = await world.client.get("/dashboard/reports")
    assert response.status == 401
    assert 'action="/dashboard/login"' in await response.text()


async def test_login_wrong_password_shows_error(world: World) -> None:
    response = await world.client.post("/dashboard/login", data={"login": "viewer", "password": "bad"})
    assert response.status == 401
    assert "Неверный логин или пароль" in await response.text()


async def test_journal_in_russian_by_default(world: World) -> None:
    await _login(world)
    text = await (await world.client.get("/dashboard")).text()
    assert "Журнал звонков" in text
    assert '<html lang="ru">' in text


async def test_page_title_translated(world: World) -> None:
    await _login(world)
    russian = await (await world.client.get("/dashboard")).text()
    english = await (await world.client.get("/dashboard?lang=en")).text()
    assert "— Журнал звонков</title>" in russian
    assert "— Call journal</title>" in english


async def test_journal_in_english_on_request(world: World) -> None:
    await _login(world)
    text = await (await world.client.get("/dashboard?lang=en")).text()
    assert "Call journal" in text


async def test_utm_script_tag_is_escaped(world: World) -> None:
    await _login(world)
    text = await (await world.client.get("/dashboard")).text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


async def test_script_in_filter_is_escaped(world: World) -> None:
    await _login(world)
    text = await (await world.client.get("/dashboard?caller=%22%3E%3Cscript%3Ex()%3C/script%3E")).text()
    assert "<script>x()</script>" not in text


async def test_pages_load_no_outside_asset(world: World) -> None:
    await _login(world)
    for path in ("/dashboard", "/dashboard/reports", "/dashboard/pools"):
        response = await world.client.get(path)
        assert response.status == 200, path
        text = await response.text()
        assert re.findall(r'(?:src|href)="(?:https?:)?//', text) == [], path
        assert "<script" not in text, path
        assert "script-src" not in response.headers["Content-Security-Policy"]


async def test_answered_call_has_audio_player(world: World) -> None:
    await _login(world)
    text = await (await world.client.get("/dashboard")).text()
    assert f'<audio controls preload="none" src="/api/v1/calls/{world.call_ids[0]}/recording">' in text


async def test_reports_page_draws_three_charts(world: World) -> None:
    await _login(world)
    text = await (await world.client.get("/dashboard/reports?from=2026-03-01&to=2026-03-31")).text()
    assert text.count("<svg") == 3
    assert "Яндекс Директ" in text


async def test_viewer_cannot_open_other_company_report(world: World) -> None:
    await _login(world)
    response = await world.client.get(f"/dashboard/reports?company_id={world.other_company_id}")
    assert response.status == 403
    assert "Billboard" not in await response.text()


async def test_logout_ends_session(world: World) -> None:
    await _login(world)
    response = await world.client.post("/dashboard/logout", allow_redirects=False)
    assert response.status == 303
    assert (await world.client.get("/dashboard")).status == 401
