"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests use a database of their own, created for the test run and dropped after it, so
several runs on one server never meet. They are skipped when no server answers, unless
PBX_BRIDGE_REQUIRE_POSTGRES=1, which turns a missing server into a failure (CI sets it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from pbx_bridge.storage import Database
from pbx_bridge.storage.migrations import upgrade

import models

POSTGRES_ADMIN_URL = os.environ.get(
    "PBX_BRIDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("PBX_BRIDGE_REQUIRE_POSTGRES") == "1"
# Prefix of the database each run creates, for servers that allow only some database names.
POSTGRES_DATABASE_PREFIX = os.environ.get("PBX_BRIDGE_TEST_POSTGRES_PREFIX", "pbx_bridge_test")


def _postgres_url(database: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


async def _postgres_admin(statement: str) -> None:
    import asyncpg

    dsn = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test run."""
    name = f"{POSTGRES_DATABASE_PREFIX}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncio.TimeoutError) as error:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {error}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (PBX_BRIDGE_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    url = _postgres_url(name)
    asyncio.run(upgrade(url))
    yield url
    asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies, so migrations run once per session."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database: SQLite and PostgreSQL in turn."""
    if request.param == "sqlite":
        path = tmp_path / "pbx-bridge.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    asyncio.run(_truncate_postgres(url))


async def _truncate_postgres(url: str) -> None:
    tables = ", ".join(f'"{table.name}"' for table in models.Base.metadata.sorted_tables)
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await database.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.close()
