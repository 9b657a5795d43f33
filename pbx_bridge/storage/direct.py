"""Core statements run on the driver's own connection, for writes made many times a second.

SQLAlchemy's async execution cost 100 to 250 us of CPU per statement here (a greenlet switch, an
execution context, a result object), more than the driver itself spends. `DirectConnection`
compiles each Core statement once per dialect and set of parameter names. It converts the values
with the column types' own bind processors, so rows look exactly as SQLAlchemy writes them, and
runs the SQL on the asyncpg or aiosqlite connection underneath a SQLAlchemy connection.

It fills in no Python-side column defaults: every column a statement writes needs a value in
the parameters, `onupdate` ones included. Driver exceptions are raised as the SQLAlchemy
exceptions the rest of the code catches (IntegrityError, OperationalError and so on).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


class DirectConnection:
    """The driver connection under one SQLAlchemy connection, running precompiled statements.

    Outside a SQLAlchemy transaction, each statement on PostgreSQL commits on its own, and on
    SQLite the statements since the last `commit` form one transaction.
    """

    def __init__(self, driver: Any, dialect: Dialect) -> None:
        self._driver = driver
        self._dialect = dialect
        self._sqlite = dialect.name == "sqlite"
        self._compiled: dict[tuple[UpdateBase, frozenset[str]], _Compiled] = {}

    @classmethod
    async def under(cls, connection: AsyncConnection) -> DirectConnection:
        """Return the driver connection of `connection`, which must stay checked out meanwhile."""
        raw = await connection.get_raw_connection()
        return cls(raw.driver_connection, connection.dialect)

    async def execute(self, statement: UpdateBase, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Run an INSERT or UPDATE and return the rows of its RETURNING clause, if it has one."""
        sql, values = self._bind(statement, params)
        try:
            if self._sqlite:
                return await self._driver.execute_fetchall(sql, values)
            return await self._driver.fetch(sql, *values)
        except Exception as error:
            raise _sqlalchemy_error(error, sql) from error

    async def write(self, statements: Sequence[tuple[UpdateBase, Mapping[str, Any]]]) -> Sequence[Sequence[Any]]:
        """Run INSERTs and UPDATEs and commit them; return the RETURNING rows of the last one.

        On SQLite they form one transaction, run in one hand-off to aiosqlite's thread: each
        hand-off costs about 20 us of CPU, and a statement with its commit took two. On PostgreSQL
        each statement commits on its own.
        """
        if not self._sqlite:
            rows: Sequence[Sequence[Any]] = []
            for statement, params in statements:
                rows = await self.execute(statement, params)
            return rows
        bound = [self._bind(statement, params) for statement, params in statements]
        # NOTE: `_execute` and `_conn` are aiosqlite's private API (checked with 0.22), as
        # SQLAlchemy's aiosqlite dialect also uses them. The public calls take a hand-off each.
        return await self._driver._execute(_write_sqlite, self._driver._conn, bound)

    @property
    def dialect_name(self) -> str:
        return self._dialect.name

    def is_closed(self) -> bool:
        """Return whether the PostgreSQL server has closed the connection, as far as the driver
        has noticed. An SQLite connection is never closed by the other side."""
        return not self._sqlite and self._driver.is_closed()

    async def commit(self) -> None:
        """Commit SQLite's open transaction; PostgreSQL statements have committed already."""
        if self._sqlite:
            try:
                await self._driver.commit()
            except Exception as error:
                raise _sqlalchemy_error(error, "COMMIT") from error

    def _bind(self, statement: UpdateBase, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """Return a statement's SQL and its parameters' values in the driver's form."""
        compiled = self._compile(statement, params.keys())
        values = [
            params[name] if process is None else process(params[name])
            for name, process in zip(compiled.names, compiled.processors)
        ]
        return compiled.sql, values

    def _compile(self, statement: UpdateBase, names: Iterable[str]) -> _Compiled:
        key = (statement, frozenset(names))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._build(statement, key[1])
        return compiled

    def _build(self, statement: UpdateBase, names: frozenset[str]) -> _Compiled:
        compiled = statement.compile(dialect=self._dialect, column_keys=sorted(names))
        order = tuple(compiled.positiontup or ())
        missing = [name for name in order if name not in names]
        if missing:
            # A column default or onupdate that SQLAlchemy would fill in, and this class does not.
            raise ValueError(
                f"missing value for {', '.join(missing)}: DirectConnection fills no column "
                f"defaults, so pass every written column in the parameters ({compiled.string!r})"
            )
        processors = tuple(
            compiled.binds[name].type.dialect_impl(self._dialect).bind_processor(self._dialect)
            for name in order
        )
        return _Compiled(compiled.string, order, processors)


def _write_sqlite(connection: sqlite3.Connection, bound: list[tuple[str, list[Any]]]) -> list[Any]:
    """Run statements and commit them on an SQLite connection, in the thread that owns it.

    A failure rolls the transaction back, so no half-done write stays open on the connection.
    A driver error is raised as SQLAlchemy's, with the SQL of the statement that failed.
    """
    sql = "COMMIT"
    try:
        rows: list[Any] = []
        for sql, values in bound:
            rows = connection.execute(sql, values).fetchall()
        sql = "COMMIT"
        connection.commit()
        return rows
    except BaseException as error:
        connection.rollback()
        if isinstance(error, sqlite3.Error):
            raise _sqlalchemy_error(error, sql) from error
        raise


# asyncpg's exception classes, most specific first, and the SQLAlchemy exception each one becomes.
# A lost or refused connection becomes an OperationalError, the class callers retry.
_ASYNCPG_ERRORS: tuple[tuple[type[Exception], type[exc.DBAPIError]], ...] = (
    (asyncpg.IntegrityConstraintViolationError, exc.IntegrityError),
    (asyncpg.PostgresConnectionError, exc.OperationalError),
    (asyncpg.exceptions.OperatorInterventionError, exc.OperationalError),
    (asyncpg.InterfaceError, exc.InterfaceError),
    (asyncpg.exceptions.SyntaxOrAccessError, exc.ProgrammingError),
    (asyncpg.PostgresError, exc.DBAPIError),
)


def _sqlalchemy_error(error: Exception, sql: str) -> Exception:
    """Return the SQLAlchemy exception for a driver's exception, without the statement's values.

    Other exceptions (OSError, TimeoutError) are returned as they are.
    """
    if isinstance(error, sqlite3.Error):
        return exc.DBAPIError.instance(sql, None, error, sqlite3.Error, hide_parameters=True)
    for driver_class, sqlalchemy_class in _ASYNCPG_ERRORS:
        if isinstance(error, driver_class):
            return sqlalchemy_class(sql, None, error, hide_parameters=True)
    return error
