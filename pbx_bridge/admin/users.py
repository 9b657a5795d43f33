"""Login and logout, user accounts (admins only) and personal API tokens."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import AccessToken, Company, Role, TokenKind, User, utcnow
from pbx_bridge.admin.auth import (
    SESSION_COOKIE,
    SESSION_LIFETIME,
    current_user,
    hash_password_in_worker,
    issue_token,
    require_admin,
    verify_password_in_worker,
)
from pbx_bridge.admin.errors import ApiError, FieldError, not_found, validation_failed
from pbx_bridge.admin.params import path_id
from pbx_bridge.admin.schema import Field, parse_or_raise, read_json
from pbx_bridge.admin.throttle import LOGIN_THROTTLE, client_ip
from pbx_bridge.http.app import CONTEXT
from pbx_bridge.inputs import is_storable_text

log = logging.getLogger("pbx_bridge.admin.users")

MIN_PASSWORD_LENGTH = 10

USER_FIELDS = (
    Field("login", "string", required=True, min_length=1, max_length=200),
    Field("name", "string", max_length=200),
    Field("password", "string", required=True, min_length=MIN_PASSWORD_LENGTH, max_length=1024),
    Field("role", "choice", required=True, choices=tuple(role.value for role in Role)),
    Field("company_id", "ref", ref="company", nullable=True, description="required for viewers, empty for admins"),
    Field("language", "choice", choices=("ru", "en")),
    Field("active", "boolean"),
)
LOGIN_FIELDS = (
    Field("login", "string", required=True, max_length=200),
    Field("password", "string", required=True, max_length=1024),
)
TOKEN_FIELDS = (Field("name", "string", required=True, min_length=1, max_length=200),)


def serialize_user(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "login": user.login,
        "name": user.name,
        "role": user.role,
        "company_id": user.company_id,
        "language": user.language,
        "active": user.active,
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


def serialize_token(token: AccessToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at.isoformat(),
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "revoked": token.revoked_at is not None,
    }


async def check_login(session: AsyncSession, login: str, password: str) -> User | None:
    """Return the active user with this login and password, recording the login time."""
    user = None
    # A login that the database cannot store matches no user; the query would fail instead.
    if is_storable_text(login):
        user = (await session.scalars(select(User).where(User.login == login))).first()
    password_hash = user.password_hash if user is not None and user.active else None
    if not await verify_password_in_worker(password_hash, password):
        log.info("login failed for an unknown or inactive user, or a wrong password")
        return None
    user.last_login_at = utcnow()
    return user


async def login(request: web.Request) -> web.Response:
    """Exchange a login and password for a session token, also set as the dashboard cookie."""
    values = parse_or_raise(await read_json(request), LOGIN_FIELDS, partial=False)
    throttle = request.app[LOGIN_THROTTLE]
    ip = client_ip(request)
    wait = throttle.start_attempt(ip, values["login"])
    if wait:
        log.debug("login from %s rejected for %s s after too many failures", ip, wait)
        raise ApiError(429, "too_many_login_attempts", headers={"Retry-After": str(wait)}, seconds=wait)

    async with request.app[CONTEXT].database.transaction() as session:
        user = await check_login(session, values["login"], values["password"])
        if user is None:
            raise ApiError(401, "invalid_credentials")
        token, secret = await issue_token(session, user, TokenKind.SESSION, lifetime=SESSION_LIFETIME)
        body = {"token": secret, "expires_at": token.expires_at.isoformat(), "user": serialize_user(user)}
    throttle.succeeded(ip, values["login"])
    log.info("user %s logged in", user.id)
    response = web.json_response(body)
    set_session_cookie(response, secret)
    return response


def set_session_cookie(response: web.StreamResponse, secret: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="Strict",
        path="/",
    )


async def revoke_token(request: web.Request, token_id: int) -> None:
    async with request.app[CONTEXT].database.transaction() as session:
        token = await session.get(AccessToken, token_id)
        if token is not None and token.revoked_at is None:
            token.revoked_at = utcnow()


async def logout(request: web.Request) -> web.Response:
    """Revoke the token or session the request authenticated with."""
    await revoke_token(request, current_user(request).token_id)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    async with request.app[CONTEXT].database.transaction() as session:
        return web.json_response(serialize_user(await session.get(User, user.user_id)))


async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[CONTEXT].database.transaction() as session:
        users = (await session.scalars(select(User).order_by(User.id))).all()
        return web.json_response({"items": [serialize_user(user) for user in users]})


async def get_user(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[CONTEXT].database.transaction() as session:
        return web.json_response(serialize_user(await _load_user(request, session)))


async def _load_user(request: web.Request, session: AsyncSession) -> User:
    user = await session.get(User, path_id(request, "user"))
    if user is None:
        raise not_found("user")
    return user


async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    values = parse_or_raise(await read_json(request), USER_FIELDS, partial=False)
    async with request.app[CONTEXT].database.transaction() as session:
        user = User(password_hash=await hash_password_in_worker(values.pop("password")), **values)
        await _check_role_company(session, user)
        session.add(user)
        await _flush_user(session)
        body = serialize_user(user)
    log.info("user %s created with role %s", user.id, user.role)
    return web.json_response(body, status=201)


async def update_user(request: web.Request) -> web.Response:
    admin = require_admin(request)
    values = parse_or_raise(await read_json(request), USER_FIELDS, partial=True)
    async with request.app[CONTEXT].database.transaction() as session:
        user = await _load_user(request, session)
        if "password" in values:
            user.password_hash = await hash_password_in_worker(values.pop("password"))
        for name, value in values.items():
            setattr(user, name, value)
        if user.role == Role.ADMIN.value and "company_id" not in values:
            user.company_id = None
        await _check_role_company(session, user)
        if user.id == admin.user_id and (not user.active or user.role != Role.ADMIN.value):
            await _keep_one_admin(session)
        await _flush_user(session)
        body = serialize_user(user)
    return web.json_response(body)


async def delete_user(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[CONTEXT].database.transaction() as session:
        user = await _load_user(request, session)
        await session.delete(user)
        await session.flush()
        await _keep_one_admin(session)
    return web.Response(status=204)


async def _keep_one_admin(session: AsyncSession) -> None:
    """Reject a change that leaves no active admin, because nobody could then manage users."""
    admins = await session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.ADMIN.value, User.active.is_(True))
    )
    if not admins:
        raise ApiError(409, "conflict")


async def _check_role_company(session: AsyncSession, user: User) -> None:
    if user.role == Role.VIEWER.value:
        if user.company_id is None:
            raise validation_failed([FieldError("company_id", "required")])
        if await session.get(Company, user.company_id) is None:
            raise validation_failed([FieldError("company_id", "reference_not_found", {"what": "company"})])
    elif user.company_id is not None:
        raise validation_failed([FieldError("company_id", "invalid_choice", {"choices": "null"})])


async def _flush_user(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise validation_failed([FieldError("login", "already_exists")]) from None


async def list_tokens(request: web.Request) -> web.Response:
    user = current_user(request)
    async with request.app[CONTEXT].database.transaction() as session:
        tokens = (
            await session.scalars(
                select(AccessToken)
                .where(AccessToken.user_id == user.user_id, AccessToken.kind == TokenKind.API.value)
                .order_by(AccessToken.id)
            )
        ).all()
        return web.json_response({"items": [serialize_token(token) for token in tokens]})


async def create_token(request: web.Request) -> web.Response:
    """Create an API token of the current user; the secret is in this response only."""
    principal = current_user(request)
    values = parse_or_raise(await read_json(request), TOKEN_FIELDS, partial=False)
    async with request.app[CONTEXT].database.transaction() as session:
        user = await session.get(User, principal.user_id)
        token, secret = await issue_token(session, user, TokenKind.API, name=values["name"])
        body = {**serialize_token(token), "token": secret}
    log.info("user %s created API token %s", principal.user_id, token.id)
    return web.json_response(body, status=201)


async def delete_token(request: web.Request) -> web.Response:
    principal = current_user(request)
    token_id = path_id(request, "token")
    async with request.app[CONTEXT].database.transaction() as session:
        token = await session.get(AccessToken, token_id)
        if token is None or token.user_id != principal.user_id or token.kind != TokenKind.API.value:
            raise not_found("token")
        token.revoked_at = token.revoked_at or utcnow()
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/auth/login", login)
    app.router.add_post("/api/v1/auth/logout", logout)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/users", list_users)
    app.router.add_post("/api/v1/users", create_user)
    app.router.add_get("/api/v1/users/{id}", get_user)
    app.router.add_patch("/api/v1/users/{id}", update_user)
    app.router.add_delete("/api/v1/users/{id}", delete_user)
    app.router.add_get("/api/v1/tokens", list_tokens)
    app.router.add_post("/api/v1/tokens", create_token)
    app.router.add_delete("/api/v1/tokens/{id}", delete_token)
