"""The writer's queue (storage/base.py ``WriteQueue``): order, waiting, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from jobqueue_store.storage.base import WriteQueue


async def test_items_come_out_in_the_order_they_went_in() -> None:
    queue: WriteQueue[int] = WriteQueue()
    assert queue.qsize() == 0
    for i in range(5):
        queue.put_nowait(i)
    assert queue.qsize() == 5
    assert [await queue.get() for _ in range(2)] == [0, 1]
    assert list(queue.items) == [2, 3, 4]


async def test_get_waits_for_the_next_put() -> None:
    queue: WriteQueue[str] = WriteQueue()
    taker = asyncio.create_task(queue.get())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not taker.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await taker == "a"
    assert await queue.get() == "b"
    assert queue.qsize() == 0


async def test_a_cancelled_get_leaves_the_queue_working() -> None:
    queue: WriteQueue[int] = WriteQueue()
    taker = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    queue.put_nowait(7)  # no waiter to wake: the cancelled one is gone
    assert await asyncio.wait_for(queue.get(), 1) == 7
    again = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(8)
    assert await asyncio.wait_for(again, 1) == 8
