"""Errors carry a code and a message in the language of Accept-Language."""

from __future__ import annotations

from pbx_bridge.admin.i18n import negotiate_language
from tests.admin.conftest import World


async def test_unauthenticated_message_in_russian(world: World) -> None:
    response = await world.client.get("/api/v1/calls", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    body = await response.json()
    assert body["error"]["code"] == "unauthenticated"
    assert body["error"]["message"].startswith("Нужна аутентификация")
    assert response.headers["Content-Language"] == "ru"


async def test_unauthenticated_message_in_english(world: World) -> None:
    response = await world.client.get("/api/v1/calls", headers={"Accept-Language": "en-US,en;q=0.8,ru;q=0.5"})
    body = await response.json()
    assert body["error"]["message"].startswith("Authentication required")


async def test_validation_errors_field_by_field_in_russian(world: World) -> None:
    request = {"name": "", "timezone": "Mars/Olympus", "ring_timeout": "twenty", "color": "red"}
    headers = {**world.admin, "Accept-Language": "ru"}
    response = await world.client.post("/api/v1/companies", json=request, headers=headers)
    assert response.status == 422
    fields = {item["field"]: item for item in (await response.json())["error"]["fields"]}
    assert {name: item["code"] for name, item in fields.items()} == {
        "color": "unknown_field",
        "name": "too_short",
        "timezone": "invalid_timezone",
        "ring_timeout": "invalid_type",
    }
    assert fields["ring_timeout"]["message"] == "Ожидается целое число."


async def test_invalid_phone_number_reported_in_english(world: World) -> None:
    request = {"company_id": world.company_id, "number": "12", "source_id": world.source_id}
    headers = {**world.admin, "Accept-Language": "en"}
    response = await world.client.post("/api/v1/numbers", json=request, headers=headers)
    fields = (await response.json())["error"]["fields"]
    assert fields == [{"field": "number", "code": "invalid_phone", "message": "Not a valid phone number."}]


async def test_number_stored_in_e164(world: World) -> None:
    request = {"company_id": world.company_id, "number": "8 (495) 111-00-02", "source_id": world.source_id}
    response = await world.client.post("/api/v1/numbers", json=request, headers=world.admin)
    assert response.status == 201
    assert (await response.json())["number"] == "+74951110002"


async def test_reference_to_other_company_rejected(world: World) -> None:
    other_source = await (await world.client.get(f"/api/v1/sources?company_id={world.other_company_id}", headers=world.admin)).json()
    request = {"company_id": world.company_id, "number": "+74951110003", "source_id": other_source["items"][0]["id"]}
    response = await world.client.post("/api/v1/numbers", json=request, headers=world.admin)
    assert response.status == 422
    assert (await response.json())["error"]["fields"][0]["code"] == "reference_not_found"


async def test_duplicate_company_is_409(world: World) -> None:
    response = await world.client.post("/api/v1/companies", json={"name": "Other Ltd"}, headers=world.admin)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "conflict"


async def test_body_not_json_is_400(world: World) -> None:
    response = await world.client.post("/api/v1/companies", data="{", headers={**world.admin, "Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_json"


async def test_unknown_path_is_json_404_for_user(world: World) -> None:
    response = await world.client.get("/api/v1/nothing-here", headers={**world.admin, "Accept-Language": "en"})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


def test_language_negotiation_by_quality() -> None:
    assert negotiate_language("en;q=0.4, ru;q=0.8") == "ru"
    assert negotiate_language("de, en;q=0.5") == "en"
    assert negotiate_language("de") == "ru"
    assert negotiate_language(None, "en") == "en"
