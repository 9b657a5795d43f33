"""The outbox worker: claims due rows, sends them, and records each attempt.

Rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` inside one transaction that stays open
while the batch is sent, so on PostgreSQL several workers never send the same row at once, and a
worker that dies mid-batch releases its rows with its connection. SQLite has no row locks and
ignores FOR UPDATE: run one worker process per SQLite file.

"Exactly once" holds when the worker stops between batches (`stop()` waits for the current
batch). A crash after a receiver's 2xx but before the commit sends that row again on the next
attempt. Webhook receivers can drop the repeat by its `X-PBX-Bridge-Delivery` id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta

import aiohttp
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from models import Delivery, DeliveryState, Receiver, Webhook, utcnow
from pbx_bridge.config import Config
from pbx_bridge.delivery.ga4 import send_ga4
from pbx_bridge.delivery.http import SendResult
from pbx_bridge.delivery.metrica import id_type, upload_calls
from pbx_bridge.delivery.webhooks import send_webhook
from pbx_bridge.storage import Database

log = logging.getLogger("pbx_bridge.delivery")

# Requests in flight at once within one batch.
MAX_CONCURRENT_REQUESTS = 20


def retry_delay(attempts: int, min_delay: float, max_delay: float) -> float:
    """Return the seconds before the next attempt: doubling from min_delay, capped at max_delay."""
    exponent = min(attempts - 1, 60)
    return min(min_delay * 2**exponent, max_delay)


class DeliveryWorker:
    def __init__(
        self, database: Database, config: Config, *, http: aiohttp.ClientSession | None = None
    ) -> None:
        self.database = database
        self.config = config
        self._http = http
        self._owns_http = http is None
        self._stopping = False
        # Set by wake() and stop(): either ends the wait between polls.
        self._wake = asyncio.Event()
        # Seconds until the earliest retry the last batch scheduled, if any.
        self._retry_in: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="delivery-worker")

    async def stop(self) -> None:
        """Stop after the batch in flight, or cancel it when it outlasts the request timeout."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            grace = self.config.delivery.request_timeout + 5
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except asyncio.TimeoutError:
                log.warning("delivery batch still running after %s s; cancelling it", grace)
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    def wake(self) -> None:
        """Poll now rather than at the next poll interval: this process has just written rows."""
        self._wake.set()

    async def run(self) -> None:
        """Send due rows until stop() is called."""
        log.info("delivery worker started")
        while not self._stopping:
            self._wake.clear()
            try:
                handled = await self.run_once()
            except (SQLAlchemyError, OSError) as error:
                # The driver's own message only: SQLAlchemy's text repeats the row's call data.
                cause = getattr(error, "orig", None) or error
                log.error(
                    "delivery batch failed, retrying after the poll interval: %s: %s",
                    type(cause).__name__, str(cause)[:200],
                )  # fmt: skip
                handled = 0
            if handled < self.config.delivery.batch_size:
                await self._wait_for_work()
        log.info("delivery worker stopped")

    async def _wait_for_work(self) -> None:
        # Wait until this process writes rows (wake), a retry falls due, or the poll interval
        # ends. Polls at that interval find the rows that other processes wrote.
        timeout = self.config.delivery.poll_interval
        if self._retry_in is not None:
            timeout = min(timeout, self._retry_in)
        try:
            await asyncio.wait_for(self._wake.wait(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            pass

    async def run_once(self) -> int:
        """Claim up to one batch of due rows, send them and record the attempts; return the count."""
        now = utcnow()
        self._retry_in = None
        async with self.database.transaction() as session:
            query = (
                select(Delivery)
                .where(
                    Delivery.state == DeliveryState.PENDING.value,
                    Delivery.next_attempt_at <= now,
                )
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(self.config.delivery.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = list(await session.scalars(query))
            if not rows:
                return 0
            results = await self._send(session, rows)
            finished = utcnow()
            for row in rows:
                self._record(row, results[row.id], finished)
            _log_batch(rows)
        return len(rows)

    async def _send(self, session: AsyncSession, rows: list[Delivery]) -> dict[int, SendResult]:
        http = self._client()
        timeout = self.config.delivery.request_timeout
        limit = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        results: dict[int, SendResult] = {}

        webhook_ids = {row.webhook_id for row in rows if row.webhook_id is not None}
        webhooks: dict[int, Webhook] = {}
        if webhook_ids:
            found = await session.scalars(select(Webhook).where(Webhook.id.in_(webhook_ids)))
            webhooks = {webhook.id: webhook for webhook in found}

        async def send_one(row: Delivery) -> None:
            async with limit:
                if row.receiver == Receiver.WEBHOOK.value:
                    webhook = webhooks.get(row.webhook_id) if row.webhook_id is not None else None
                    results[row.id] = await send_webhook(http, row, webhook, timeout)
                else:
                    results[row.id] = await send_ga4(http, row, self.config.ga4, timeout)

        async def upload(batch: list[Delivery], client_id_type: str) -> None:
            async with limit:
                result = await upload_calls(http, batch, client_id_type, self.config.metrica, timeout)
            for row in batch:
                results[row.id] = result

        metrica_groups: dict[str, list[Delivery]] = defaultdict(list)
        jobs = []
        for row in rows:
            if row.receiver == Receiver.METRICA.value:
                metrica_groups[id_type(row)].append(row)
            else:
                jobs.append(send_one(row))
        size = self.config.metrica.batch_size
        for client_id_type, group in metrica_groups.items():
            for start in range(0, len(group), size):
                jobs.append(upload(group[start : start + size], client_id_type))
        await asyncio.gather(*jobs)
        return results

    def _record(self, row: Delivery, result: SendResult, now: datetime) -> None:
        row.attempts += 1
        row.last_attempt_at = now
        row.last_status = result.status
        if result.delivered:
            row.state = DeliveryState.DELIVERED.value
            row.delivered_at = now
            row.last_error = None
            row.upload_id = result.upload_id
            row.upload_status = result.upload_status
            return

        row.last_error = result.error
        give_up_at = row.pending_since + timedelta(seconds=self.config.delivery.give_up_after)
        if result.permanent or now >= give_up_at:
            row.state = DeliveryState.DEAD.value
            log.warning(
                "delivery %s (%s, call %s) is dead after %s attempts: %s",
                row.id, row.receiver, row.call_id, row.attempts, result.error,
            )  # fmt: skip
            return
        delay = retry_delay(
            row.attempts, self.config.delivery.retry_min_delay, self.config.delivery.retry_max_delay
        )
        # The last attempt happens at the give-up time rather than after it.
        row.next_attempt_at = min(now + timedelta(seconds=delay), give_up_at)
        retry_in = (row.next_attempt_at - now).total_seconds()
        self._retry_in = retry_in if self._retry_in is None else min(self._retry_in, retry_in)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http


def _log_batch(rows: list[Delivery]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.state] += 1
    retrying = counts[DeliveryState.PENDING.value]
    level = logging.WARNING if retrying else logging.DEBUG
    log.log(
        level,
        "delivery batch: %s delivered, %s to retry, %s dead",
        counts[DeliveryState.DELIVERED.value], retrying, counts[DeliveryState.DEAD.value],
    )  # fmt: skip
