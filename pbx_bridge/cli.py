"""The `pbx-bridge` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from pbx_bridge import __version__
from pbx_bridge.config import Config, ConfigError, load_config, mask_url, masked

EXIT_USAGE = 2
# Maximum of `test-call --timeout`, in seconds: the QA call's originate passes it to Asterisk,
# which reads the originate timeout as a C int.
MAX_TEST_CALL_TIMEOUT = 2**31 - 1


def _test_call_timeout(text: str) -> float:
    """Parse `test-call --timeout`: a finite number of seconds above 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TEST_CALL_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"expected seconds above 0 and at most {MAX_TEST_CALL_TIMEOUT}, got {text!r}"
        )
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbx-bridge", description="Call tracking for companies that run their own Asterisk."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (default: $PBX_BRIDGE_CONFIG, else built-in defaults)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the ARI worker and the HTTP server")
    serve.add_argument(
        "--log-format",
        choices=["human", "json"],
        help="log line format (default: log.format of the configuration)",
    )
    serve.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level to log (default: log.level of the configuration)",
    )
    serve.add_argument("--no-ari", action="store_true", help="do not connect to Asterisk (HTTP only)")
    serve.add_argument("--no-http", action="store_true", help="do not start the HTTP server")
    serve.add_argument(
        "--no-delivery",
        action="store_true",
        help="do not run the outbox worker that sends call data to webhooks, GA4 and Metrica",
    )

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser("show", help="print the effective configuration, secrets masked")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="apply pending migrations")
    db_commands.add_parser("current", help="show the database's revision and the newest one")

    test_call = commands.add_parser(
        "test-call", help="place a QA call through Asterisk and print its journal row"
    )
    test_call.add_argument("number", help="tracked number to call, as the trunk would send it")
    test_call.add_argument("--caller", help="caller id of the test call, e.g. +79161234567")
    test_call.add_argument(
        "--timeout",
        type=_test_call_timeout,
        default=120.0,
        help="seconds to wait for the call to end, also the maximum ringing time of the QA caller (default 120)",
    )

    load = commands.add_parser(
        "load", help="create or update companies, sources, sites, pools and numbers from a TOML file"
    )
    load.add_argument("file", metavar="FILE.toml", help="setup file, see docs/setup.md")
    load.add_argument(
        "--dry-run", action="store_true", help="check the file and report changes without writing"
    )

    numbers = commands.add_parser("numbers", help="tracking numbers")
    numbers_commands = numbers.add_subparsers(dest="numbers_command", required=True, metavar="ACTION")
    numbers_list = numbers_commands.add_parser(
        "list", help="print every tracking number with its company, mode, source or pool, state"
    )
    numbers_list.add_argument("--company", metavar="NAME", help="only the numbers of this company")
    numbers_list.add_argument("--state", choices=["active", "retired"], help="only numbers in this state")
    numbers_list.add_argument("--json", action="store_true", help="print a JSON array for scripts")

    from pbx_bridge.delivery.commands import add_parser as add_outbox_parser

    add_outbox_parser(commands)

    from pbx_bridge.admin.commands import add_parser as add_user_parser

    add_user_parser(commands)

    from pbx_bridge.tracking.commands import add_parser as add_pool_parser

    add_pool_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"pbx-bridge: {error}", file=sys.stderr)
        return EXIT_USAGE

    handler = _HANDLERS[args.command]
    try:
        return handler(args, config)
    except KeyboardInterrupt:
        return 130
    except EOFError:
        print("pbx-bridge: input ended before the command had what it needed", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of the output went away (`pbx-bridge config show | head`). Pointing stdout
        # at devnull keeps Python's flush at exit from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, SQLAlchemyError) as error:
        # Commands that reach the database end here when it is down: one line, not a traceback.
        print(f"pbx-bridge: database {mask_url(config.database.url)} failed: {_first_line(error)}", file=sys.stderr)
        return 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _serve(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.service import run_service

    return run_service(
        config,
        log_format=args.log_format,
        log_level=args.log_level,
        with_ari=not args.no_ari,
        with_http=not args.no_http,
        with_delivery=not args.no_delivery,
    )


def _config(args: argparse.Namespace, config: Config) -> int:
    print(json.dumps(masked(config), indent=2, ensure_ascii=False))
    return 0


def _db(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.storage.migrations import current_revisions, head_revisions, upgrade

    url = config.database.url
    if args.db_command == "upgrade":
        asyncio.run(upgrade(url))
        print(f"database at revision {', '.join(head_revisions(url))}")
        return 0

    current = asyncio.run(current_revisions(url))
    heads = head_revisions(url)
    state = "up to date" if current == heads else "upgrade pending (run: pbx-bridge db upgrade)"
    print(f"current: {', '.join(current) or 'empty'}\nhead:    {', '.join(heads)}\n{state}")
    return 0


def _test_call(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.ari import AriError, Unauthorized
    from pbx_bridge.calls.qa import TestCallError, place_test_call

    try:
        row = asyncio.run(place_test_call(config, args.number, args.caller, args.timeout))
    except Unauthorized as error:
        print(
            f"pbx-bridge: test call failed: {error}. Check ari.username and ari.password "
            "against Asterisk's ari.conf.",
            file=sys.stderr,
        )
        return 1
    except (AriError, TestCallError) as error:
        print(f"pbx-bridge: test call failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(row, indent=2, ensure_ascii=False, default=str))
    return 0



def _outbox(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.delivery import commands
    from pbx_bridge.storage import Database

    async def run() -> int:
        database = Database(config.database.url)
        try:
            if args.outbox_command == "list":
                rows = await commands.list_rows(
                    database, state=args.state, receiver=args.receiver, limit=args.limit
                )
                counts = await commands.count_by_state(database)
                print(commands.format_rows(rows))
                print(", ".join(f"{state}: {counts.get(state, 0)}" for state in commands.STATES))
                return 0
            if not args.ids and not args.all_dead:
                print("pbx-bridge: outbox retry needs row ids or --all-dead", file=sys.stderr)
                return EXIT_USAGE
            count = await commands.retry_dead(database, None if args.all_dead else args.ids)
            print(f"{count} dead row(s) queued for delivery again")
            return 0
        finally:
            await database.close()

    return asyncio.run(run())


def _load(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.setup.commands import load_command

    return load_command(args, config)


def _numbers(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.setup.commands import numbers_command

    return numbers_command(args, config)


def _user(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.admin.commands import user_command

    return user_command(args, config)


def _pool(args: argparse.Namespace, config: Config) -> int:
    from pbx_bridge.tracking.commands import pool_command

    return pool_command(args, config)


_HANDLERS = {
    "serve": _serve,
    "config": _config,
    "db": _db,
    "test-call": _test_call,
    "outbox": _outbox,
    "load": _load,
    "numbers": _numbers,
    "user": _user,
    "pool": _pool,
}


if __name__ == "__main__":
    sys.exit(main())
