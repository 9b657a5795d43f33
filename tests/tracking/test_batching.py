"""The group commit of the tracking API: what shares a batch, in what order, and failures."""

import asyncio

import pytest

from pbx_bridge.tracking.batching import Batcher


class Recorder:
    """A batch handler that records each batch and returns item * 10 after one loop turn."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if self.fail_on in items:
            raise ValueError(f"item {self.fail_on} is bad")
        return [item * 10 for item in items]


async def test_lone_item_runs_at_once_alone():
    handler = Recorder()
    batcher = Batcher("items", handler)

    assert await batcher.submit(1) == 10
    assert handler.batches == [[1]]


async def test_items_submitted_one_after_another_all_run():
    handler = Recorder()
    batcher = Batcher("items", handler)

    async def one_after_another() -> list[int]:
        # Each submit comes right after the previous result, before the worker task's done
        # callbacks have run: the batcher must still start a worker for it.
        return [await batcher.submit(item) for item in range(3)]

    assert await asyncio.wait_for(one_after_another(), 1) == [0, 10, 20]
    assert handler.batches == [[0], [1], [2]]


async def test_items_queued_during_a_batch_share_the_next():
    handler = Recorder()
    batcher = Batcher("items", handler)

    results = await asyncio.gather(*(batcher.submit(item) for item in range(5)))

    assert results == [0, 10, 20, 30, 40]
    # The first submit starts the worker; the rest queue up before it takes its first batch.
    assert handler.batches == [[0, 1, 2, 3, 4]]


async def test_batches_never_exceed_max_size():
    handler = Recorder()
    batcher = Batcher("items", handler, max_size=2)

    results = await asyncio.gather(*(batcher.submit(item) for item in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert handler.batches == [[0, 1], [2, 3], [4]]


async def test_items_with_one_key_never_share_a_batch():
    handler = Recorder()
    batcher = Batcher("items", handler, key=lambda item: item % 2)

    await asyncio.gather(*(batcher.submit(item) for item in range(5)))

    assert handler.batches == [[0, 1], [2, 3], [4]]


async def test_busy_key_waits_for_the_other_worker():
    gate = asyncio.Event()
    batches: list[list[int]] = []

    async def handler(items: list[int]) -> list[int]:
        batches.append(list(items))
        if 0 in items:
            await gate.wait()
        return [item * 10 for item in items]

    batcher = Batcher("items", handler, key=lambda item: item % 2, concurrency=2)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)  # the first worker takes [0] and waits at the gate
    second = asyncio.ensure_future(batcher.submit(2))
    third = asyncio.ensure_future(batcher.submit(1))

    assert await third == 10
    assert batches == [[0], [1]]  # 2 shares key 0 with the running batch, so it waits
    gate.set()
    assert await first == 0
    assert await second == 20
    assert batches == [[0], [1], [2]]


async def test_failed_batch_fails_only_the_bad_item():
    handler = Recorder(fail_on=2)
    batcher = Batcher("items", handler)

    results = await asyncio.gather(
        *(batcher.submit(item) for item in range(4)), return_exceptions=True
    )

    assert results[0] == 0
    assert results[1] == 10
    assert results[3] == 30
    assert isinstance(results[2], ValueError)
    assert handler.batches == [[0, 1, 2, 3], [0], [1], [2], [3]]


async def test_wrong_result_count_fails_the_items():
    async def short(items: list[int]) -> list[int]:
        return []

    batcher = Batcher("items", short)

    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await batcher.submit(1)


async def test_cancelled_caller_does_not_stop_the_batch():
    handler = Recorder()
    batcher = Batcher("items", handler)

    cancelled = asyncio.ensure_future(batcher.submit(1))
    waiting = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    cancelled.cancel()

    assert await waiting == 20
    assert handler.batches == [[1, 2]]


async def test_close_waits_for_running_batch():
    gate = asyncio.Event()
    finished: list[list[int]] = []

    async def slow(items: list[int]) -> list[int]:
        await gate.wait()
        finished.append(items)
        return items

    batcher = Batcher("items", slow)
    submitted = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)

    assert not closing.done()
    gate.set()
    await asyncio.wait_for(closing, 1)
    assert finished == [[1]]
    assert await submitted == 1
