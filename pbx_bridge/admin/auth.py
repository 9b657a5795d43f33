"""Password hashing, API tokens and dashboard sessions, and the middleware that checks them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from models import AccessToken, Role, TokenKind, User, utcnow
from pbx_bridge.admin.errors import ApiError, forbidden
from pbx_bridge.admin.principal import USER, Principal
from pbx_bridge.http.app import CONTEXT

log = logging.getLogger("pbx_bridge.admin.auth")

SESSION_COOKIE = "pbx_session"
SESSION_LIFETIME = timedelta(hours=12)
TOKEN_PREFIX = "pbx_"
# last_used_at is written at most this often per token, so reads do not turn into writes.
LAST_USED_PRECISION = timedelta(minutes=1)

# Argon2id with the library's defaults (RFC 9106 "second recommended" profile in argon2-cffi 23+).
_hasher = PasswordHasher()
# Verified against when the login is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
# One Argon2 hash costs tenths of a second of CPU. Request handlers run hashes on this single
# thread, so a flood of logins neither blocks the event loop, which in `serve` also drives the
# call flow, nor takes more than one thread at a time.
_PASSWORD_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-hash")

PUBLIC_API_PREFIXES = ("/api/v1/track/",)
PUBLIC_PATHS = frozenset({"/api/v1/auth/login", "/dashboard/login"})
PUBLIC_PREFIXES = ("/dashboard/static/",)
PROTECTED_PREFIXES = ("/api/", "/dashboard")




def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_in_worker(password: str) -> str:
    """Hash a password on the password thread, off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_PASSWORD_EXECUTOR, hash_password, password)


async def verify_password_in_worker(password_hash: str | None, password: str) -> bool:
    """Check a password on the password thread, off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_PASSWORD_EXECUTOR, verify_password, password_hash, password)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def issue_token(
    session, user: User, kind: TokenKind, name: str = "", lifetime: timedelta | None = None
) -> tuple[AccessToken, str]:
    """Store a new token for `user` and return it with its secret, which is never stored."""
    secret = new_token_secret()
    token = AccessToken(
        user_id=user.id,
        kind=kind.value,
        name=name,
        token_hash=hash_token(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        expires_at=utcnow() + lifetime if lifetime else None,
    )
    session.add(token)
    await session.flush()
    return token, secret


async def authenticate_secret(request: web.Request, secret: str, kind: TokenKind) -> Principal | None:
    """Look up an unexpired, unrevoked token of `kind` and its active user."""
    if not secret.isascii():
        # Issued secrets are ASCII. A header that is not UTF-8 arrives with surrogate escapes,
        # which hash_token could not encode.
        return None
    database = request.app[CONTEXT].database
    now = utcnow()
    async with database.transaction() as session:
        row = (
            await session.execute(
                select(AccessToken, User)
                .join(User, User.id == AccessToken.user_id)
                .where(AccessToken.token_hash == hash_token(secret), AccessToken.kind == kind.value)
            )
        ).first()
        if row is None:
            return None
        token, user = row
        if token.revoked_at is not None or not user.active:
            return None
        if token.expires_at is not None and token.expires_at <= now:
            return None
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            await session.execute(
                update(AccessToken).where(AccessToken.id == token.id).values(last_used_at=now)
            )
        return Principal(
            user_id=user.id,
            login=user.login,
            name=user.name,
            role=user.role,
            company_id=user.company_id,
            language=user.language,
            token_id=token.id,
            token_kind=token.kind,
        )


def is_protected(path: str) -> bool:
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES + PUBLIC_API_PREFIXES):
        return False
    return path == "/" or path.startswith(PROTECTED_PREFIXES)


async def principal_of(request: web.Request) -> Principal | None:
    """Authenticate by bearer token, else by the dashboard session cookie.

    The cookie counts only for GET and HEAD under /api/, so a page on another site cannot make a
    logged-in browser change anything (cross-site request forgery); scripts use bearer tokens.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        secret = credentials.strip()
        return await authenticate_secret(request, secret, TokenKind.API) or await authenticate_secret(
            request, secret, TokenKind.SESSION
        )

    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    if request.path.startswith("/api/") and request.method not in ("GET", "HEAD"):
        return None
    return await authenticate_secret(request, cookie, TokenKind.SESSION)


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Reject unauthenticated requests to the admin API and the dashboard with 401."""
    if not is_protected(request.path):
        return await handler(request)
    principal = await principal_of(request)
    if principal is None:
        if request.path.startswith("/api/"):
            raise ApiError(401, "unauthenticated", headers={"WWW-Authenticate": 'Bearer realm="pbx-bridge"'})
        from pbx_bridge.dashboard.pages import login_required

        return await login_required(request)
    request[USER] = principal
    return await handler(request)


def current_user(request: web.Request) -> Principal:
    return request[USER]


def require_admin(request: web.Request) -> Principal:
    user = request[USER]
    if not user.is_admin:
        raise forbidden()
    return user


def session_expiry(now: datetime | None = None) -> datetime:
    return (now or utcnow()) + SESSION_LIFETIME
