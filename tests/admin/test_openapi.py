"""The OpenAPI document is valid and the real responses match the schemas it declares."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012 as _SPEC

from tests.admin.conftest import World


async def _document(world: World) -> dict[str, Any]:
    response = await world.client.get("/api/v1/openapi.json", headers=world.admin)
    assert response.status == 200
    return await response.json()


def _response_schema(document: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][status]
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        response = document["components"]["responses"][name]
    return response["content"]["application/json"]["schema"]


def _check(document: dict[str, Any], path: str, method: str, status: str, body: Any) -> None:
    schema = _response_schema(document, path, method, status)
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(document, default_specification=_SPEC))
    wrapped = {"$ref": "urn:openapi#" + schema["$ref"].removeprefix("#")} if "$ref" in schema else _rebase(schema)
    errors = sorted(Draft202012Validator(wrapped, registry=registry).iter_errors(body), key=str)
    assert [error.message for error in errors] == []


def _rebase(schema: Any) -> Any:
    """Point local references of an inline schema at the registered document."""
    if isinstance(schema, dict):
        return {key: ("urn:openapi" + value if key == "$ref" else _rebase(value)) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_rebase(value) for value in schema]
    return schema


async def test_document_is_valid_openapi(world: World) -> None:
    validate(await _document(world))


async def test_journal_response_matches_schema(world: World) -> None:
    document = await _document(world)
    body = await (await world.client.get("/api/v1/calls", headers=world.admin)).json()
    _check(document, "/api/v1/calls", "get", "200", body)


async def test_call_response_matches_schema(world: World) -> None:
    document = await _document(world)
    body = await (await world.client.get(f"/api/v1/calls/{world.call_ids[0]}", headers=world.admin)).json()
    _check(document, "/api/v1/calls/{id}", "get", "200", body)


@pytest.mark.parametrize("report", ["sources", "days", "hours", "destinations", "pools"])
async def test_report_response_matches_schema(world: World, report: str) -> None:
    document = await _document(world)
    response = await world.client.get(
        f"/api/v1/reports/{report}?company_id={world.company_id}&from=2026-03-01&to=2026-03-31", headers=world.admin
    )
    assert response.status == 200
    _check(document, f"/api/v1/reports/{report}", "get", "200", await response.json())


@pytest.mark.parametrize("resource", ["companies", "sites", "sources", "numbers", "pools"])
async def test_settings_list_matches_schema(world: World, resource: str) -> None:
    document = await _document(world)
    body = await (await world.client.get(f"/api/v1/{resource}", headers=world.admin)).json()
    _check(document, f"/api/v1/{resource}", "get", "200", body)


async def test_created_source_matches_schema(world: World) -> None:
    document = await _document(world)
    request = {
        "company_id": world.company_id,
        "name": "Радио",
        "kind": "offline",
        "spend": [{"period_start": "2026-03-01", "period_end": "2026-03-31", "amount": "1500.5"}],
    }
    response = await world.client.post("/api/v1/sources", json=request, headers=world.admin)
    assert response.status == 201
    body = await response.json()
    assert body["spend"][0]["amount"] == "1500.50"
    _check(document, "/api/v1/sources", "post", "201", body)


async def test_user_and_token_responses_match_schema(world: World) -> None:
    document = await _document(world)
    users = await (await world.client.get("/api/v1/users", headers=world.admin)).json()
    _check(document, "/api/v1/users", "get", "200", users)
    token = await (await world.client.post("/api/v1/tokens", json={"name": "x"}, headers=world.admin)).json()
    _check(document, "/api/v1/tokens", "post", "201", token)


async def test_error_responses_match_schema(world: World) -> None:
    document = await _document(world)
    unauthenticated = await (await world.client.get("/api/v1/calls")).json()
    _check(document, "/api/v1/calls", "get", "401", unauthenticated)
    invalid = await (await world.client.get("/api/v1/calls?page=0", headers=world.admin)).json()
    _check(document, "/api/v1/calls", "get", "422", invalid)
