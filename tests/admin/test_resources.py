"""Admins create, change and delete sites, pools, numbers, sources and companies; viewers cannot."""

from __future__ import annotations

from tests.admin.conftest import World


async def _create(world: World, resource: str, body: dict) -> dict:
    response = await world.client.post(f"/api/v1/{resource}", json=body, headers=world.admin)
    data = await response.json()
    assert response.status == 201, data
    return data


async def _patch(world: World, resource: str, object_id: int, body: dict, headers=None):
    response = await world.client.patch(
        f"/api/v1/{resource}/{object_id}", json=body, headers=headers or world.admin
    )
    return response.status, await response.json()


async def test_site_pool_and_number_lifecycle(world: World) -> None:
    site = await _create(
        world, "sites",
        {"company_id": world.company_id, "name": "okna.example", "allowed_origins": ["https://okna.example"]},
    )
    pool = await _create(world, "pools", {"site_id": site["id"], "name": "main", "hold_time": 600})
    number = await _create(
        world, "numbers",
        {"company_id": world.company_id, "number": "8 (495) 222-00-11", "mode": "pool", "pool_id": pool["id"]},
    )

    site_status, changed_site = await _patch(world, "sites", site["id"], {"display_format": "+7 (XXX) XXX-XX-XX"})
    pool_status, changed_pool = await _patch(world, "pools", pool["id"], {"exhausted_policy": "reuse"})
    number_status, changed_number = await _patch(world, "numbers", number["id"], {"state": "retired"})
    deleted = await world.client.delete(f"/api/v1/numbers/{number['id']}", headers=world.admin)
    after_delete = await world.client.get(f"/api/v1/numbers/{number['id']}", headers=world.admin)

    assert len(site["site_key"]) >= 8
    assert number["number"] == "+74952220011"
    assert (site_status, changed_site["display_format"]) == (200, "+7 (XXX) XXX-XX-XX")
    assert (pool_status, changed_pool["exhausted_policy"]) == (200, "reuse")
    assert changed_pool["hold_time"] == 600
    assert (number_status, changed_number["state"]) == (200, "retired")
    assert deleted.status == 204
    assert after_delete.status == 404


async def test_company_and_source_updates(world: World) -> None:
    company_status, company = await _patch(
        world, "companies", world.company_id,
        {"ring_timeout": 30, "destinations": [{"endpoint": "PJSIP/office", "ring_timeout": 15}]},
    )
    source_status, source = await _patch(
        world, "sources", world.source_id,
        {"priority": 5, "spend": [{"period_start": "2026-03-01", "period_end": "2026-03-31", "amount": "3100.00"}]},
    )

    assert company_status == 200
    assert company["ring_timeout"] == 30
    assert company["destinations"] == [{"endpoint": "PJSIP/office", "ring_timeout": 15}]
    assert source_status == 200
    assert source["priority"] == 5
    assert [spend["period_start"] for spend in source["spend"]] == ["2026-03-01"]


async def test_number_bound_to_other_company_pool_rejected(world: World) -> None:
    site = await _create(world, "sites", {"company_id": world.other_company_id, "name": "other.example"})
    pool = await _create(world, "pools", {"site_id": site["id"], "name": "other"})

    response = await world.client.post(
        "/api/v1/numbers",
        json={"company_id": world.company_id, "number": "+74952220012", "mode": "pool", "pool_id": pool["id"]},
        headers=world.admin,
    )
    data = await response.json()

    assert response.status == 422
    assert [error["field"] for error in data["error"]["fields"]] == ["pool_id"]


async def test_viewer_cannot_change_own_company(world: World) -> None:
    status, data = await _patch(world, "companies", world.company_id, {"ring_timeout": 5}, headers=world.viewer)
    company = await (await world.client.get(f"/api/v1/companies/{world.company_id}", headers=world.admin)).json()

    assert status == 403
    assert data["error"]["code"]
    assert company["ring_timeout"] != 5
