"""The models and the Alembic revisions describe the same schema, on SQLite and PostgreSQL."""

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import models
from pbx_bridge.cli import main
from pbx_bridge.storage.migrations import alembic_config, current_revisions


async def test_models_match_migrations(database):
    def compare(connection):
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, models.Base.metadata)

    async with database.engine.connect() as connection:
        differences = await connection.run_sync(compare)

    assert differences == []


def test_revisions_have_one_head():
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()

    assert len(heads) == 1


def test_db_upgrade_and_current(tmp_path, capsys):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")

    assert main(["--config", str(config), "db", "current"]) == 0
    before = capsys.readouterr().out
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "db", "current"]) == 0
    after = capsys.readouterr().out

    assert "current: empty" in before
    assert "upgrade pending" in before
    assert "up to date" in after
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert asyncio.run(current_revisions(url)) == (head,)
