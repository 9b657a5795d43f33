"""Database access: the async engine, sessions and Alembic migrations."""

from pbx_bridge.storage.engine import Database, StorageError

__all__ = ["Database", "StorageError"]
