"""`pbx-bridge outbox list` and `pbx-bridge outbox retry`: inspect and resend outbox rows."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy import func, select, update

from models import Delivery, DeliveryState, Receiver, utcnow
from pbx_bridge.storage import Database

STATES = [state.value for state in DeliveryState]
RECEIVERS = [receiver.value for receiver in Receiver]
_ERROR_WIDTH = 120


def add_parser(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser("outbox", help="inspect and retry deliveries of call data")
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="print outbox rows, newest first")
    listing.add_argument("--state", choices=STATES, help="only rows in this state")
    listing.add_argument("--receiver", choices=RECEIVERS, help="only rows for this receiver")
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help="number of rows to print (default 50)"
    )

    retry = actions.add_parser(
        "retry", help="send dead rows again, with a new give-up window starting now"
    )
    retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="outbox row ids")
    retry.add_argument("--all-dead", action="store_true", help="retry every dead row")


async def list_rows(
    database: Database, *, state: str | None, receiver: str | None, limit: int
) -> list[Delivery]:
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if state:
        query = query.where(Delivery.state == state)
    if receiver:
        query = query.where(Delivery.receiver == receiver)
    async with database.sessions() as session:
        return list(await session.scalars(query))


async def count_by_state(database: Database) -> dict[str, int]:
    query = select(Delivery.state, func.count()).group_by(Delivery.state)
    async with database.sessions() as session:
        return {state: count for state, count in await session.execute(query)}


async def retry_dead(database: Database, ids: Sequence[int] | None) -> int:
    """Make dead rows pending again, due now; `ids` None means every dead row. Return the count."""
    now = utcnow()
    statement = (
        update(Delivery)
        .where(Delivery.state == DeliveryState.DEAD.value)
        .values(
            state=DeliveryState.PENDING.value,
            pending_since=now,
            next_attempt_at=now,
        )
    )
    if ids is not None:
        statement = statement.where(Delivery.id.in_(ids))
    async with database.transaction() as session:
        result = await session.execute(statement)
    return result.rowcount


def format_rows(rows: Sequence[Delivery]) -> str:
    header = f"{'ID':>7}  {'RECEIVER':8}  {'EVENT':13}  {'CALL':>7}  {'STATE':9}  {'TRIES':>5}  {'NEXT/DONE (UTC)':19}  LAST ERROR / UPLOAD"
    lines = [header]
    for row in rows:
        when = row.delivered_at if row.state == DeliveryState.DELIVERED.value else row.next_attempt_at
        detail = row.last_error or ""
        if row.upload_id:
            detail = f"upload {row.upload_id} {row.upload_status or ''}".strip()
        detail = " ".join(detail.split())[:_ERROR_WIDTH]
        lines.append(
            f"{row.id:>7}  {row.receiver:8}  {row.event:13}  {row.call_id or '-':>7}  "
            f"{row.state:9}  {row.attempts:>5}  {when:%Y-%m-%d %H:%M:%S}  {detail}"
        )
    return "\n".join(lines)
