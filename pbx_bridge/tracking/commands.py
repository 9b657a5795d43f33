"""`pbx-bridge pool advise POOL`: size a number pool from its lease history."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import models
from pbx_bridge.config import Config
from pbx_bridge.storage import Database
from pbx_bridge.tracking.sizing import PoolAdvice, PoolNotFound, advise_pool, default_period, parse_time


def add_parser(commands: argparse._SubParsersAction) -> None:
    pool = commands.add_parser("pool", help="number pools of dynamic tracking")
    actions = pool.add_subparsers(dest="pool_command", required=True, metavar="ACTION")
    advise = actions.add_parser(
        "advise",
        help="print peak concurrency, exhaustions and the pool size that avoids exhaustion",
    )
    advise.add_argument("pool", metavar="POOL", help="pool id or pool name")
    advise.add_argument(
        "--days", type=int, default=7, metavar="N", help="period: the last N days (default 7)"
    )
    advise.add_argument("--from", dest="start", metavar="TIME", help="period start, ISO 8601 (UTC unless a zone is given)")
    advise.add_argument("--to", dest="end", metavar="TIME", help="period end, ISO 8601 (default now)")
    advise.add_argument("--json", action="store_true", help="print JSON for scripts")


def pool_command(args: argparse.Namespace, config: Config) -> int:
    now = models.utcnow()
    start, end = default_period(now, args.days)
    try:
        if args.end:
            end = parse_time(args.end)
            start = end - (now - start)
        if args.start:
            start = parse_time(args.start)
    except ValueError as error:
        print(f"pbx-bridge: invalid --from or --to time: {error}", file=sys.stderr)
        return 2
    if end <= start:
        print("pbx-bridge: the period is empty: --from must be before --to", file=sys.stderr)
        return 2

    try:
        advice = asyncio.run(_advise(config, args.pool, start, end))
    except PoolNotFound as error:
        print(f"pbx-bridge: {error}", file=sys.stderr)
        return 1

    if args.json:
        print(json.dumps(advice.as_json(), indent=2))
    else:
        print(_render(advice))
    return 0


async def _advise(config: Config, pool: str, start, end) -> PoolAdvice:
    database = Database(config.database.url)
    try:
        async with database.sessions() as session:
            return await advise_pool(session, pool, start, end)
    finally:
        await database.close()


def _render(advice: PoolAdvice) -> str:
    verdict = (
        "the pool is large enough"
        if advice.recommended_size <= advice.pool_size
        else f"add {advice.recommended_size - advice.pool_size} numbers"
    )
    return "\n".join(
        [
            f"pool {advice.pool_id} ({advice.pool_name}), hold time {advice.hold_time} s",
            f"period:            {advice.period_start:%Y-%m-%d %H:%M} to {advice.period_end:%Y-%m-%d %H:%M} UTC",
            f"pool size:         {advice.pool_size} active numbers",
            f"leases:            {advice.leases}",
            f"peak held:         {advice.peak_held}",
            f"exhaustions:       {advice.exhaustions}",
            f"peak demand:       {advice.peak_demand}",
            f"recommended size:  {advice.recommended_size} ({verdict})",
        ]
    )
