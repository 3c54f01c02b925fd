"""Group commit under load (``storage/base.py``, ``let_batch_fill``), on every backend: a batch
waits for the writes still arriving only after a large commit, never behind a lone write."""

from __future__ import annotations

import asyncio

from jobqueue_store.models import Datasource
from jobqueue_store.storage.base import GROUP_FROM, Store


async def _load(store: Store, sizes: list[int], name: str) -> None:
    """Concurrent submits until the last commit held at least ``GROUP_FROM`` writes."""
    for attempt in range(5):
        await asyncio.gather(
            *(store.submit("ds1", f"{name}{attempt}-{i}", "app", i) for i in range(2 * GROUP_FROM))
        )
        if sizes and sizes[-1] >= GROUP_FROM:
            return
    raise AssertionError(f"no commit of {GROUP_FROM} writes or more: {sizes}")


async def _trickle(store: Store, name: str, count: int) -> None:
    """One submit now and one more on each of the next ``count - 1`` event-loop turns."""
    tasks = []
    for i in range(count):
        tasks.append(asyncio.ensure_future(store.submit("ds1", f"{name}{i}", "app", i)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)


async def test_under_load_a_batch_waits_for_the_writes_still_arriving(store: Store) -> None:
    await store.put_datasource(Datasource("ds1"))
    sizes: list[int] = []
    store.set_commit_observer(sizes.append)
    await _load(store, sizes, "load")
    sizes.clear()
    # Writes arriving one per loop turn, right after a large commit: one commit for them all.
    await _trickle(store, "t", 5)
    assert sizes == [5]


async def test_a_lone_write_is_not_held_back(store: Store) -> None:
    await store.put_datasource(Datasource("ds1"))
    sizes: list[int] = []
    store.set_commit_observer(sizes.append)
    await store.submit("ds1", "alone", "app", 0)
    assert sizes == [1]
    sizes.clear()
    # After a small commit the writer takes the first write at once: the next ones that arrive
    # while it commits make the following batch.
    await _trickle(store, "t", 5)
    assert sizes[0] == 1
    assert sum(sizes) == 5
