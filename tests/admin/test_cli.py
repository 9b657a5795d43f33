"""`pbx-bridge user add` creates a user who can then log in."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from models import User
from pbx_bridge.cli import main
from pbx_bridge.storage import Database


async def _users(database: Database) -> list[User]:
    async with database.transaction() as session:
        return list((await session.scalars(select(User))).all())


def test_user_add_creates_admin(database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import asyncio

    monkeypatch.setenv("PBX_BRIDGE_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["user", "add", "root@example.ru"]) == 0
    assert "created" in capsys.readouterr().out

    database = Database(database_url)
    users = asyncio.run(_users(database))
    asyncio.run(database.close())
    assert [(user.login, user.role, user.company_id) for user in users] == [("root@example.ru", "admin", None)]
    assert users[0].password_hash.startswith("$argon2id$")


def test_user_add_rejects_short_password(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBX_BRIDGE_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "add", "root@example.ru"]) == 1


def test_user_add_needs_migrated_database(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PBX_BRIDGE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))

    status = main(["user", "add", "root@example.ru"])

    assert status == 1
    error = capsys.readouterr().err
    assert "is at revision none" in error
    assert "Run: pbx-bridge db upgrade" in error
