"""Group commit for the tracking API: requests that arrive together share one transaction.

A session start costs a handful of statements and a commit. Under load, paying those once per
batch instead of once per request is what lets one process serve thousands of starts a second:
the database runs a few multi-row statements, and Python builds a few statements, not hundreds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("pbx_bridge.tracking")

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `handle` on the items submitted while earlier batches ran, `concurrency` batches at
    a time.

    An item submitted to an idle batcher runs at once, alone, so batching adds no wait; under
    load each batch takes what queued up meanwhile. `handle` returns one result per item, in
    order. Items with the same `key` never run together: the later one waits until the earlier
    one's batch is done, so it reads what that batch wrote. When a batch fails, its items run
    again one by one, so a bad item fails only its own request.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        key: Callable[[Item], Hashable] | None = None,
        concurrency: int = 1,
        max_size: int = 200,
    ) -> None:
        self.name = name
        self._handle = handle
        self._key = key
        self._concurrency = concurrency
        self._max_size = max_size
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._busy_keys: set[Hashable] = set()
        # Counted by the workers themselves: a task's done callback runs a loop turn late, when
        # a new item could already have found the batcher full and no worker left to take it.
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self._concurrency:
            self._running += 1
            task = asyncio.create_task(self._drain(), name=f"batcher-{self.name}")
            # The event loop keeps only a weak reference to a task.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def close(self) -> None:
        """Wait until the batches in progress, and any queued behind them, are written.

        A server that stops must not leave a batch's transaction open behind it.
        """
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self) -> None:
        # A worker stops when nothing it may take is left. Items that wait for a busy key are
        # taken by the worker running that key's batch once it is done.
        try:
            while batch := self._take():
                keys = {self._key(item) for item, _ in batch} if self._key else set()
                self._busy_keys |= keys
                try:
                    await self._run(batch)
                finally:
                    self._busy_keys -= keys
        finally:
            self._running -= 1

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        later: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: set[Hashable] = set()
        for entry in self._pending:
            key = self._key(entry[0]) if self._key else None
            if len(batch) >= self._max_size or (
                key is not None and (key in keys or key in self._busy_keys)
            ):
                later.append(entry)
            else:
                keys.add(key)
                batch.append(entry)
        self._pending = later
        return batch

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._handle([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} {self.name}")
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            log.warning(
                "a batch of %s %s failed (%s); running them one by one",
                len(batch), self.name, type(error).__name__,
            )
            for entry in batch:
                await self._run([entry])
            return
        for (_, future), result in zip(batch, results):
            _settle(future, result=result)


def _settle(future: asyncio.Future, *, result: object = None, error: BaseException | None = None) -> None:
    # A request whose client went away may have cancelled its future already.
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def padded(values: list) -> list:
    """Repeat the last value until the list's length is a power of two.

    A list in `IN (...)` or a batch of lookups gives a statement of its own length, and every
    distinct statement is compiled by SQLAlchemy and prepared by the database connection once
    more. Padded, a handful of statements serve every batch size; a repeated value matches
    nothing new.
    """
    size = 1 << (len(values) - 1).bit_length() if values else 0
    return values + values[-1:] * (size - len(values))
