"""Hostile or mistaken input gets a 4xx JSON error in the request's language, never a 500."""

from __future__ import annotations

import asyncio
import io

import pytest
from openpyxl import load_workbook

from tests.admin.conftest import World

HUGE = "99999999999999999999999"
BEYOND_INTEGER = str(2**31)

# (method, path, status, error code)
HUGE_IDS = [
    ("GET", f"/api/v1/calls/{HUGE}/recording", 404, "not_found"),
    ("GET", f"/api/v1/calls/{BEYOND_INTEGER}/recording", 404, "not_found"),
    ("GET", f"/api/v1/calls/{HUGE}", 404, "not_found"),
    ("GET", f"/api/v1/companies/{HUGE}", 404, "not_found"),
    ("PATCH", f"/api/v1/sources/{BEYOND_INTEGER}", 404, "not_found"),
    ("DELETE", f"/api/v1/numbers/{HUGE}", 404, "not_found"),
    ("GET", f"/api/v1/users/{HUGE}", 404, "not_found"),
    ("GET", "/api/v1/users/²", 404, "not_found"),
    ("DELETE", f"/api/v1/tokens/{HUGE}", 404, "not_found"),
    ("GET", f"/api/v1/pools/{HUGE}/advice", 404, "not_found"),
    ("GET", f"/api/v1/calls?company_id={HUGE}", 422, "validation_failed"),
    ("GET", f"/api/v1/calls?source_id=1,{BEYOND_INTEGER}", 422, "validation_failed"),
    ("GET", f"/api/v1/calls?tracking_number_id={HUGE}", 422, "validation_failed"),
    ("GET", f"/api/v1/calls/export.csv?company_id={HUGE}", 422, "validation_failed"),
    ("GET", f"/api/v1/sources?company_id={HUGE}", 422, "validation_failed"),
    ("GET", f"/api/v1/reports/sources?company_id={HUGE}", 422, "validation_failed"),
]


@pytest.mark.parametrize(("method", "path", "status", "code"), HUGE_IDS, ids=[f"{case[0]} {case[1]}" for case in HUGE_IDS])
async def test_huge_id_is_json_4xx(world: World, method: str, path: str, status: int, code: str) -> None:
    response = await world.client.request(method, path, json={} if method == "PATCH" else None, headers=world.admin)

    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_huge_company_id_message_in_english(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls?company_id={HUGE}", headers={**world.admin, "Accept-Language": "en"})

    fields = (await response.json())["error"]["fields"]
    assert fields == [{"field": "company_id", "code": "out_of_range", "message": "Must be between 1 and 2147483647."}]


# Query strings whose dates are beyond what a datetime can hold once a day or a time zone is added.
FAR_DATES = [
    "/api/v1/calls?to=9999-12-31",
    "/api/v1/calls?from=0001-01-01",
    "/api/v1/calls?to=9999-12-31T23:00:00-05:00",
    "/api/v1/calls?from=0001-01-01T00:00:00%2B03:00",
    "/api/v1/calls/export.csv?to=9999-12-31",
    "/api/v1/calls/export.xlsx?to=9999-12-31",
    "/api/v1/reports/sources?company_id={company}&to=9999-12-31",
    "/api/v1/reports/days?company_id={company}&from=9998-12-01&to=9999-12-31",
    "/api/v1/reports/hours?company_id={company}&to=0001-01-05",
]


@pytest.mark.parametrize("path", FAR_DATES)
async def test_far_date_is_422_out_of_range(world: World, path: str) -> None:
    url = path.format(company=world.company_id)
    response = await world.client.get(url, headers={**world.admin, "Accept-Language": "ru"})

    assert response.status == 422
    [field] = (await response.json())["error"]["fields"]
    assert field["code"] == "out_of_range"
    assert field["message"] == "Допустимо от 1900-01-01 до 9998-12-31."


async def test_last_supported_day_is_accepted(world: World) -> None:
    response = await world.client.get(
        f"/api/v1/reports/days?company_id={world.company_id}&from=9998-12-01&to=9998-12-31", headers=world.admin
    )

    assert response.status == 200
    assert len((await response.json())["items"]) == 31


async def test_dashboard_report_far_date_falls_back(world: World) -> None:
    response = await world.client.get("/dashboard/reports?to=9999-12-31", headers=world.viewer)

    assert response.status == 200


async def test_dashboard_huge_company_id_uses_own_company(world: World) -> None:
    response = await world.client.get(f"/dashboard/reports?company_id={HUGE}", headers=world.viewer)

    assert response.status == 200


@pytest.mark.parametrize("name", ["caller", "answered_by"])
async def test_nul_in_filter_is_422(world: World, name: str) -> None:
    response = await world.client.get(f"/api/v1/calls?{name}=79%00", headers={**world.admin, "Accept-Language": "en"})

    assert response.status == 422
    [field] = (await response.json())["error"]["fields"]
    assert field["field"] == name
    assert field["code"] == "invalid_characters"


async def test_dashboard_nul_filter_shows_journal(world: World) -> None:
    response = await world.client.get("/dashboard?caller=%00", headers=world.viewer)

    assert response.status == 200


@pytest.mark.parametrize("name", ["Окна\u0000", "Окна\ud800"], ids=["nul", "surrogate"])
async def test_unstorable_company_name_is_422(world: World, name: str) -> None:
    response = await world.client.post("/api/v1/companies", json={"name": name}, headers={**world.admin, "Accept-Language": "ru"})

    assert response.status == 422
    [field] = (await response.json())["error"]["fields"]
    assert field["field"] == "name"
    assert field["message"] == "Содержит символ, который нельзя сохранить: NUL (\\u0000) или непарный суррогат."


async def test_unstorable_rename_is_422(world: World) -> None:
    response = await world.client.patch(f"/api/v1/companies/{world.company_id}", json={"name": "a\u0000"}, headers=world.admin)

    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["code"] == "invalid_characters"


async def test_surrogate_field_name_reported(world: World) -> None:
    body = '{"name": "Окна-2", "\\ud800": 1}'
    headers = {**world.admin, "Content-Type": "application/json"}
    response = await world.client.post("/api/v1/companies", data=body, headers=headers)

    assert response.status == 422
    assert (await response.json())["error"]["fields"] == [
        {"field": "\ud800", "code": "unknown_field", "message": "Unknown field."}
    ]


async def test_nul_in_login_is_422(world: World) -> None:
    response = await world.client.post("/api/v1/auth/login", json={"login": "ad\u0000min", "password": "x"})

    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["code"] == "invalid_characters"


async def test_dashboard_nul_in_login_is_401(world: World) -> None:
    response = await world.client.post("/dashboard/login", data={"login": "ad\u0000min", "password": "x"})

    assert response.status == 401
    assert 'id="login-error"' in await response.text()


async def test_deeply_nested_body_is_400(world: World) -> None:
    body = "[" * 20_000 + "]" * 20_000
    headers = {**world.admin, "Content-Type": "application/json"}
    response = await world.client.post("/api/v1/companies", data=body, headers=headers)

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_json"


async def _raw_get(world: World, path: str, header: bytes) -> tuple[int, bytes]:
    """Send a GET with one header written as raw bytes, which the HTTP client cannot send."""
    reader, writer = await asyncio.open_connection(world.client.host, world.client.port)
    writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Language: en\r\n")
    writer.write(header + b"\r\nConnection: close\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_bearer_token_not_utf8_is_401(world: World) -> None:
    status, body = await _raw_get(world, "/api/v1/me", b"Authorization: Bearer pbx_\xff\xfe\xc3")

    assert status == 401
    assert b'"code": "unauthenticated"' in body


async def test_session_cookie_not_utf8_is_401(world: World) -> None:
    status, body = await _raw_get(world, "/api/v1/me", b"Cookie: pbx_session=pbx_\xff\xfe")

    assert status == 401
    assert b'"code": "unauthenticated"' in body


# (endpoint, accepted)
DIAL_STRINGS = [
    ("PJSIP/+74951234567@trunk", True),
    ("Local/100@office-queue", True),
    ("office", False),
    ("PJSIP/off ice", False),
    ("PJSIP/office\n", True),  # Surrounding whitespace is stripped, as for every string field.
    ("PJSIP/off\nice", False),
    ("PJSIP/" + "x" * 200, False),
]


@pytest.mark.parametrize(("endpoint", "accepted"), DIAL_STRINGS)
async def test_destination_dial_string_checked(world: World, endpoint: str, accepted: bool) -> None:
    request = {"name": "Окна-2", "destinations": [{"endpoint": endpoint}]}
    response = await world.client.post("/api/v1/companies", json=request, headers={**world.admin, "Accept-Language": "en"})

    body = await response.json()
    if accepted:
        assert response.status == 201
        assert body["destinations"] == [{"endpoint": endpoint.strip(), "ring_timeout": None}]
    else:
        assert response.status == 422
        [field] = body["error"]["fields"]
        assert field["field"] == "destinations[0].endpoint"
        assert field["code"] == "invalid_dial_string"


async def test_destination_update_checks_dial_string(world: World) -> None:
    url = f"/api/v1/companies/{world.company_id}"
    valid = await world.client.patch(url, json={"destinations": [{"endpoint": "PJSIP/office"}]}, headers=world.admin)
    assert valid.status == 200

    response = await world.client.patch(url, json={"destinations": [{"endpoint": "office"}]}, headers=world.admin)

    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["code"] == "invalid_dial_string"
    company = await (await world.client.get(url, headers=world.admin)).json()
    assert company["destinations"] == [{"endpoint": "PJSIP/office", "ring_timeout": None}]


async def test_tracking_number_extension_is_422(world: World) -> None:
    request = {"company_id": world.company_id, "number": "+7 495 111-00-02 ext 5", "source_id": world.source_id}
    response = await world.client.post("/api/v1/numbers", json=request, headers={**world.admin, "Accept-Language": "en"})

    assert response.status == 422
    [field] = (await response.json())["error"]["fields"]
    assert field["field"] == "number"
    assert field["code"] == "phone_extension"


async def test_site_origins_stored_normalized(world: World) -> None:
    origins = ["https://OKNA.RU:443", "https://okna.ru/", "http://Окна.рф:8080"]
    request = {"company_id": world.company_id, "name": "okna-2", "allowed_origins": origins}
    response = await world.client.post("/api/v1/sites", json=request, headers=world.admin)

    assert response.status == 201
    assert (await response.json())["allowed_origins"] == ["https://okna.ru", "http://xn--80atjc.xn--p1ai:8080"]


@pytest.mark.parametrize("origin", ["https://okna.ru/contacts", "https://okna.ru?a=1", "https://okna.ru:99999", "okna.ru"])
async def test_site_origin_with_path_rejected(world: World, origin: str) -> None:
    request = {"company_id": world.company_id, "name": "okna-2", "allowed_origins": [origin]}
    response = await world.client.post("/api/v1/sites", json=request, headers=world.admin)

    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["code"] == "invalid_origin"


async def test_xlsx_export_writes_text_cells(world: World) -> None:
    response = await world.client.get("/api/v1/calls/export.xlsx?sort=started_at", headers={**world.viewer, "Accept-Language": "en"})
    sheet = load_workbook(io.BytesIO(await response.read())).active
    header = [cell.value for cell in sheet[1]]
    first_call = sheet[2]

    caller = first_call[header.index("Caller")]
    assert caller.value == "+79161112233"
    assert caller.data_type == "s"
    assert caller.number_format == "@"
    campaign = first_call[header.index("utm_campaign")]
    assert campaign.value == '=HYPERLINK("http://evil")'
    assert campaign.data_type == "s"
    assert first_call[header.index("Call id")].value == world.call_ids[0]
