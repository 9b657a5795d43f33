"""The `pbx-bridge load` and `pbx-bridge numbers list` commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from models import Company, NumberMode, NumberPool, NumberState, Site, Source, TrackingNumber
from pbx_bridge.config import Config, mask_url
from pbx_bridge.setup.loader import KINDS, LoadReport, apply_setup
from pbx_bridge.setup.positions import Positions, scan_positions
from pbx_bridge.setup.schema import Problem, SetupError, SetupSpec, parse_setup
from pbx_bridge.storage import Database
from pbx_bridge.storage.migrations import schema_problem

EXIT_FAILED = 1
EXIT_INVALID = 2

# tomllib ends its messages with "(at line L, column C)", and Python 3.11 has no attribute for it.
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")

NUMBER_COLUMNS = ("company", "number", "mode", "source", "site", "pool", "state")


class CommandError(Exception):
    """A failure outside the setup file, such as an unreachable or outdated database."""


def load_command(args: argparse.Namespace, config: Config) -> int:
    """Load a setup file: exit 0 when loaded, 2 when the file is invalid, 1 when the database fails."""
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _fail(f"{path}: file not found", EXIT_INVALID)
    except UnicodeDecodeError as error:
        return _fail(f"{path}: not UTF-8 text (byte {error.start}), save the file as UTF-8", EXIT_INVALID)
    except OSError as error:
        return _fail(f"{path}: cannot read the file: {error.strerror}", EXIT_INVALID)

    try:
        document = tomllib.loads(text)
        positions = scan_positions(text)
    except tomllib.TOMLDecodeError as error:
        return _fail(_describe_toml_error(path, error), EXIT_INVALID)
    except RecursionError:
        return _fail(f"{path}: invalid TOML: arrays or tables nested too deeply", EXIT_INVALID)

    try:
        spec = parse_setup(document, config.calls.default_region)
        report = asyncio.run(_load(config, spec, dry_run=args.dry_run))
    except SetupError as error:
        for problem in error.problems:
            print(format_problem(path, positions, problem), file=sys.stderr)
        count = len(error.problems)
        noun = "problem" if count == 1 else "problems"
        return _fail(f"{path}: {count} {noun} found, nothing was written", EXIT_INVALID)
    except CommandError as error:
        return _fail(str(error), EXIT_FAILED)

    print(_format_report(path, config, report, dry_run=args.dry_run))
    return 0


def numbers_command(args: argparse.Namespace, config: Config) -> int:
    """Print the configured tracking numbers as a table or, with --json, as a JSON array."""
    try:
        rows = asyncio.run(_list_numbers(config, company=args.company, state=args.state))
    except CommandError as error:
        return _fail(str(error), EXIT_FAILED)

    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("No tracking numbers found. Load a setup file with: pbx-bridge load FILE.toml")
        return 0
    print(format_table(rows))
    return 0


def format_problem(path: Path, positions: Positions, problem: Problem) -> str:
    """Format a problem as FILE:LINE: MESSAGE, the form editors and terminals link to."""
    line = positions.line_of(problem.path)
    where = f"{path}:{line}" if line is not None else str(path)
    message = problem.message
    if problem.first_path is not None:
        first_line = positions.line_of(problem.first_path)
        if first_line is not None:
            message += f" (first on line {first_line})"
    return f"{where}: {message}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Lay out number rows in aligned columns, with "-" for an empty cell."""
    header = [column.upper() for column in NUMBER_COLUMNS]
    cells = [[row[column] or "-" for column in NUMBER_COLUMNS] for row in rows]
    widths = [max(len(line[index]) for line in [header, *cells]) for index in range(len(header))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip()
        for line in [header, *cells]
    ]
    active = sum(1 for row in rows if row["state"] == NumberState.ACTIVE.value)
    lines.append(f"{len(rows)} numbers: {active} active, {len(rows) - active} retired")
    return "\n".join(lines)


async def _load(config: Config, spec: SetupSpec, *, dry_run: bool) -> LoadReport:
    database = Database(config.database.url)
    try:
        await _check_schema(database)
        async with database.sessions() as session:
            try:
                report = await apply_setup(session, spec)
            except BaseException:
                await session.rollback()
                raise
            if dry_run:
                await session.rollback()
            else:
                await session.commit()
        return report
    except IntegrityError as error:
        # Another writer changed the same rows between our reads and writes (SQLite has no
        # advisory lock, see apply_setup), or a row breaks a rule the file checks cannot see.
        raise CommandError(
            f"the database rejected the change, nothing was written: {error.orig}. "
            "Run the load again; if it fails the same way, report this message"
        ) from error
    except (SQLAlchemyError, OSError) as error:
        raise CommandError(_database_failure(config, error)) from error
    finally:
        await database.close()


async def _check_schema(database: Database) -> None:
    """Raise CommandError unless the database has every Alembic head this code expects."""
    problem = await schema_problem(database.url, database.display_url)
    if problem is not None:
        raise CommandError(problem)


async def _list_numbers(config: Config, *, company: str | None, state: str | None) -> list[dict[str, Any]]:
    database = Database(config.database.url)
    try:
        await _check_schema(database)
        query = (
            select(
                Company.name,
                TrackingNumber.number,
                TrackingNumber.mode,
                Source.name,
                Site.name,
                NumberPool.name,
                TrackingNumber.state,
            )
            .join(Company, Company.id == TrackingNumber.company_id)
            .outerjoin(Source, Source.id == TrackingNumber.source_id)
            .outerjoin(NumberPool, NumberPool.id == TrackingNumber.pool_id)
            .outerjoin(Site, Site.id == NumberPool.site_id)
        )
        if company is not None:
            query = query.where(Company.name == company)
        if state is not None:
            query = query.where(TrackingNumber.state == state)
        async with database.sessions() as session:
            result = await session.execute(query)
            rows = [dict(zip(NUMBER_COLUMNS, row)) for row in result.all()]
    except (SQLAlchemyError, OSError) as error:
        raise CommandError(_database_failure(config, error)) from error
    finally:
        await database.close()

    # Sorted here, not in SQL, so the order is the same on SQLite and PostgreSQL collations.
    rows.sort(
        key=lambda row: (
            row["company"],
            row["state"] != NumberState.ACTIVE.value,
            row["mode"] != NumberMode.STATIC.value,
            row["number"],
        )
    )
    return rows


def _format_report(path: Path, config: Config, report: LoadReport, *, dry_run: bool) -> str:
    target = mask_url(config.database.url)
    if dry_run:
        title = f"Checked {path} against {target}; nothing was written (--dry-run). It would change:"
    else:
        title = f"Loaded {path} into {target}:"
    lines = [title]
    for kind in KINDS:
        counts = [
            f"{report.created[kind]} created",
            f"{report.updated[kind]} updated",
            f"{report.unchanged[kind]} unchanged",
        ]
        if kind == "numbers":
            counts.append(f"{len(report.retired)} retired")
        if kind == "webhooks":
            counts.append(f"{len(report.removed_webhooks)} removed")
        lines.append(f"  {kind + ':':<10} {', '.join(counts)}")
    lines.extend(f"moved {entry}" for entry in report.moved)
    lines.extend(f"retired {entry}, kept for the call history" for entry in report.retired)
    lines.extend(f"removed webhook {entry}" for entry in report.removed_webhooks)
    lines.extend(
        f"not in the file, left as it is: {entry}" for entry in report.left_alone
    )
    if not report.changed:
        lines.append("Nothing changed.")
    return "\n".join(lines)


def _describe_toml_error(path: Path, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    match = _TOML_POSITION.search(message)
    if match is None:
        return f"{path}: invalid TOML: {message}"
    return f"{path}:{match.group(1)}: invalid TOML: {message[: match.start()]} (column {match.group(2)})"


def _database_failure(config: Config, error: BaseException) -> str:
    detail = getattr(error, "orig", None) or error
    return (
        f"database {mask_url(config.database.url)} failed: {type(detail).__name__}: {detail}. "
        "Check [database] url and that the server is running"
    )


def _fail(message: str, status: int) -> int:
    print(f"pbx-bridge: {message}", file=sys.stderr)
    return status
