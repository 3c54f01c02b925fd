"""The monitoring reads of the Store contract: ``job_stats`` and the group-commit observer."""

from __future__ import annotations

import asyncio

from jobqueue_store.models import Datasource, Status, StatusUpdate
from jobqueue_store.storage.base import Store


async def test_job_stats_of_an_empty_store(store: Store) -> None:
    assert await store.job_stats() == {}
    await store.put_datasource(Datasource("idle"))
    stats = await store.job_stats()
    assert list(stats) == ["idle"]
    assert dict(stats["idle"].counts) == dict.fromkeys(Status, 0)
    assert stats["idle"].oldest_unfinished_at is None


async def test_job_stats_count_every_status_and_find_the_oldest_unfinished(store: Store) -> None:
    for dsid in ("a", "b", "idle"):
        await store.put_datasource(Datasource(dsid))
    submitted = {}
    for job in ("a1", "a2", "a3", "a4", "a5", "a6"):
        record, _ = await store.submit("a", job, "app", {"n": job})
        submitted[job] = record.submitted_at
    record, _ = await store.submit("b", "b1", "app", 1)
    await store.update_status("b", "b1", StatusUpdate(Status.COMPLETE))
    # a1 complete, a2 failed, a3 accepted, a4 retrying, a5 cancelled, a6 submitted.
    await store.update_status("a", "a1", StatusUpdate(Status.ACCEPTED))
    await store.update_status(
        "a", "a1", StatusUpdate(Status.COMPLETE, response=1, has_response=True)
    )
    await store.update_status("a", "a2", StatusUpdate(Status.FAILED, error="no"))
    await store.update_status("a", "a3", StatusUpdate(Status.ACCEPTED))
    await store.update_status("a", "a4", StatusUpdate(Status.RETRYING))
    await store.cancel("a", "a5", "app")
    await store.update_status("a", "a5", StatusUpdate(Status.CANCELLED))

    stats = await store.job_stats()
    assert sorted(stats) == ["a", "b", "idle"]
    expected_a = dict.fromkeys(Status, 0)
    expected_a.update(
        {
            Status.COMPLETE: 1,
            Status.FAILED: 1,
            Status.ACCEPTED: 1,
            Status.RETRYING: 1,
            Status.CANCELLED: 1,
            Status.SUBMITTED: 1,
        }
    )
    assert dict(stats["a"].counts) == expected_a
    assert stats["a"].oldest_unfinished_at == submitted["a3"]
    assert dict(stats["b"].counts) == {**dict.fromkeys(Status, 0), Status.COMPLETE: 1}
    assert stats["b"].oldest_unfinished_at is None
    assert sum(stats["idle"].counts.values()) == 0

    # The backend's grouped queries agree with the generic definition (paging list_jobs).
    assert await Store.job_stats(store) == stats

    await store.update_status("a", "a3", StatusUpdate(Status.COMPLETE))
    assert (await store.job_stats())["a"].oldest_unfinished_at == submitted["a4"]


async def test_commit_observer_sees_every_write_once(store: Store) -> None:
    await store.put_datasource(Datasource("ds1"))
    sizes: list[int] = []
    store.set_commit_observer(sizes.append)
    await asyncio.gather(*(store.submit("ds1", f"j{i}", "app", i) for i in range(40)))
    await store.update_status("ds1", "j0", StatusUpdate(Status.ACCEPTED))
    assert sum(sizes) == 41
    assert all(size >= 1 for size in sizes)
    assert len(sizes) < 41, "concurrent writes are committed in groups"
    store.set_commit_observer(None)
    await store.submit("ds1", "late", "app", 0)
    assert sum(sizes) == 41
