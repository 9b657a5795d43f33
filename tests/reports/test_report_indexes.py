"""The migrated calls indexes have the INCLUDE columns that the models declare.

Alembic 1.20.1 compares index keys but not INCLUDE lists, so `alembic check` passes even when a
revision leaves them out.
"""

from __future__ import annotations

from sqlalchemy import inspect

from models import Call
from pbx_bridge.storage import Database


async def test_calls_indexes_have_model_includes(database: Database) -> None:
    async with database.engine.connect() as connection:
        on_postgresql = connection.dialect.name == "postgresql"
        reflected = await connection.run_sync(lambda sync: inspect(sync).get_indexes("calls"))
    found = {index["name"]: index.get("dialect_options", {}).get("postgresql_include", []) for index in reflected}

    for index in Call.__table__.indexes:
        # SQLite has no INCLUDE, so there every index has only its key columns.
        declared = list(index.dialect_options["postgresql"]["include"] or []) if on_postgresql else []
        assert found[index.name] == declared, index.name
