"""Alembic migrations run from the service and the CLI with the configured database URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

# alembic.ini and alembic/ sit at the repository root, beside this package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    # "%" would start ConfigParser interpolation inside a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    return config


async def upgrade(url: str, revision: str = "heads") -> None:
    """Apply Alembic revisions up to `revision`; env.py runs them on its own event loop."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


async def current_revisions(url: str) -> tuple[str, ...]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: tuple(sorted(MigrationContext.configure(sync).get_current_heads()))
            )
    finally:
        await engine.dispose()


def head_revisions(url: str) -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config(url)).get_heads()))


async def schema_problem(database_url: str, display_url: str) -> str | None:
    """Describe why the database is not at the revision this code expects, or return None."""
    current = set(await current_revisions(database_url))
    heads = head_revisions(database_url)
    if current == set(heads):
        return None
    return (
        f"the database at {display_url} is at revision {', '.join(sorted(current)) or 'none'}, "
        f"expected {', '.join(heads)}. Run: pbx-bridge db upgrade"
    )
