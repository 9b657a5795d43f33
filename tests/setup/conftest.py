"""Fixtures for the setup commands: a config file per database and helpers that run the CLI."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import models
from pbx_bridge.cli import main
from pbx_bridge.storage import Database

SAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "tracking.toml"


@dataclass
class Result:
    status: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs `pbx-bridge --config FILE ...` in-process against the test database."""

    config_path: Path
    database_url: str
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str) -> Result:
        self.capsys.readouterr()
        status = main(["--config", str(self.config_path), *argv])
        captured = self.capsys.readouterr()
        return Result(status, captured.out, captured.err)

    def load(self, path: Path, *options: str) -> Result:
        return self.run("load", str(path), *options)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        return asyncio.run(dump_rows(self.database_url))

    def fetch(self, statement: Any) -> list[Any]:
        return asyncio.run(_fetch(self.database_url, statement))


@pytest.fixture
def cli(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    config_path = tmp_path / "pbx-bridge.toml"
    config_path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return Cli(config_path, database_url, capsys)


async def dump_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of every table, ordered by primary key, for before/after comparisons."""
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            rows = {}
            for table in models.Base.metadata.sorted_tables:
                result = await connection.execute(
                    select(table).order_by(*table.primary_key.columns)
                )
                rows[table.name] = [tuple(row) for row in result.all()]
            return rows
    finally:
        await database.close()


async def _fetch(url: str, statement: Any) -> list[Any]:
    database = Database(url)
    try:
        async with database.sessions() as session:
            return list((await session.execute(statement)).all())
    finally:
        await database.close()
