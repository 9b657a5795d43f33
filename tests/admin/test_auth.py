"""Authentication, roles and company isolation of the admin API."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from models import User
from pbx_bridge.admin import auth
from tests.admin.conftest import PASSWORD, World

PROTECTED = [
    ("GET", "/api/v1/calls"),
    ("GET", "/api/v1/calls/1"),
    ("GET", "/api/v1/calls/1/recording"),
    ("GET", "/api/v1/calls/export.csv"),
    ("GET", "/api/v1/reports/sources"),
    ("GET", "/api/v1/companies"),
    ("POST", "/api/v1/companies"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/tokens"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/no-such-thing"),
    ("GET", "/dashboard"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_unauthenticated_request_gets_401(world: World, method: str, path: str) -> None:
    response = await world.client.request(method, path)
    assert response.status == 401


async def test_health_stays_public(world: World) -> None:
    response = await world.client.get("/healthz")
    assert response.status == 200


async def test_invalid_token_gets_401(world: World) -> None:
    response = await world.client.get("/api/v1/calls", headers=world.auth("pbx_wrong"))
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] == "unauthenticated"


async def test_login_returns_working_token(world: World) -> None:
    response = await world.client.post("/api/v1/auth/login", json={"login": "viewer", "password": PASSWORD})
    assert response.status == 200
    token = (await response.json())["token"]
    me = await world.client.get("/api/v1/me", headers=world.auth(token))
    assert (await me.json())["login"] == "viewer"


async def test_login_wrong_password_gets_401(world: World) -> None:
    response = await world.client.post("/api/v1/auth/login", json={"login": "viewer", "password": "nope"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_credentials"


async def test_password_stored_as_argon2id(world: World) -> None:
    async with world.database.transaction() as session:
        user = (await session.scalars(select(User).where(User.login == "viewer"))).one()
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


async def test_login_hashes_off_event_loop(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 takes tenths of a second; on the event loop a login flood would stall every call."""
    hashing_threads = []
    verify = auth.verify_password

    def recording_verify(password_hash: str | None, password: str) -> bool:
        hashing_threads.append(threading.get_ident())
        return verify(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", recording_verify)
    response = await world.client.post("/api/v1/auth/login", json={"login": "viewer", "password": PASSWORD})
    assert response.status == 200
    assert len(hashing_threads) == 1
    assert hashing_threads[0] != threading.get_ident()


async def test_user_creation_hashes_off_event_loop(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    hashing_threads = []
    hash_password = auth.hash_password

    def recording_hash(password: str) -> str:
        hashing_threads.append(threading.get_ident())
        return hash_password(password)

    monkeypatch.setattr(auth, "hash_password", recording_hash)
    body = {"login": "second-admin", "password": PASSWORD, "role": "admin"}
    response = await world.client.post("/api/v1/users", json=body, headers=world.admin)
    assert response.status == 201
    assert len(hashing_threads) == 1
    assert hashing_threads[0] != threading.get_ident()


async def test_logout_revokes_session(world: World) -> None:
    login = await world.client.post("/api/v1/auth/login", json={"login": "admin", "password": PASSWORD})
    token = (await login.json())["token"]
    logout = await world.client.post("/api/v1/auth/logout", headers=world.auth(token))
    assert logout.status == 204
    after = await world.client.get("/api/v1/me", headers=world.auth(token))
    assert after.status == 401


async def test_session_cookie_cannot_post(world: World) -> None:
    """A cookie alone never authorizes a change, so cross-site forms cannot act for a user."""
    login = await world.client.post("/api/v1/auth/login", json={"login": "admin", "password": PASSWORD})
    assert login.status == 200
    read = await world.client.get("/api/v1/companies")
    assert read.status == 200
    write = await world.client.post("/api/v1/companies", json={"name": "Forged"})
    assert write.status == 401


async def test_api_token_created_and_revoked(world: World) -> None:
    created = await world.client.post("/api/v1/tokens", json={"name": "cron"}, headers=world.viewer)
    assert created.status == 201
    token = (await created.json())["token"]
    token_id = (await created.json())["id"]
    assert (await world.client.get("/api/v1/me", headers=world.auth(token))).status == 200
    revoked = await world.client.delete(f"/api/v1/tokens/{token_id}", headers=world.viewer)
    assert revoked.status == 204
    assert (await world.client.get("/api/v1/me", headers=world.auth(token))).status == 401


async def test_viewer_cannot_create_company(world: World) -> None:
    response = await world.client.post("/api/v1/companies", json={"name": "X"}, headers=world.viewer)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "forbidden"


async def test_viewer_cannot_delete_source(world: World) -> None:
    response = await world.client.delete(f"/api/v1/sources/{world.source_id}", headers=world.viewer)
    assert response.status == 403


async def test_viewer_cannot_list_users(world: World) -> None:
    response = await world.client.get("/api/v1/users", headers=world.viewer)
    assert response.status == 403


async def test_viewer_sees_only_own_company(world: World) -> None:
    response = await world.client.get("/api/v1/companies", headers=world.viewer)
    names = [item["name"] for item in (await response.json())["items"]]
    assert names == ["Окна Москвы"]


async def test_viewer_other_company_object_is_404(world: World) -> None:
    response = await world.client.get(f"/api/v1/companies/{world.other_company_id}", headers=world.viewer)
    assert response.status == 404


async def test_viewer_other_company_call_is_404(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls/{world.call_ids[3]}", headers=world.viewer)
    assert response.status == 404


async def test_viewer_other_company_filter_is_403(world: World) -> None:
    response = await world.client.get(f"/api/v1/calls?company_id={world.other_company_id}", headers=world.viewer)
    assert response.status == 403


async def test_admin_creates_viewer_who_logs_in(world: World) -> None:
    body = {"login": "marketer", "password": "long enough pw", "role": "viewer", "company_id": world.company_id}
    created = await world.client.post("/api/v1/users", json=body, headers=world.admin)
    assert created.status == 201
    login = await world.client.post("/api/v1/auth/login", json={"login": "marketer", "password": "long enough pw"})
    assert login.status == 200


async def test_viewer_without_company_rejected(world: World) -> None:
    body = {"login": "lost", "password": "long enough pw", "role": "viewer"}
    response = await world.client.post("/api/v1/users", json=body, headers=world.admin)
    assert response.status == 422
    fields = [item["field"] for item in (await response.json())["error"]["fields"]]
    assert fields == ["company_id"]


async def test_last_admin_cannot_be_deleted(world: World) -> None:
    users = await (await world.client.get("/api/v1/users", headers=world.admin)).json()
    admin_id = next(item["id"] for item in users["items"] if item["login"] == "admin")
    response = await world.client.delete(f"/api/v1/users/{admin_id}", headers=world.admin)
    assert response.status == 409
