"""The driver runtime on a lease datasource and the client's lease calls, against a real store.

The runtime runs in this event loop (as in ``test_client_driver.py``); the store is a process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from jobqueue_store.client import DriverClient, JobClient, LeaseLost, SlotTaken
from jobqueue_store.driver import Driver, Job, RetryableError
from jobqueue_store.errors import Conflict
from tests.e2e.conftest import StoreProcess

DSID = "leased"


@asynccontextmanager
async def running(driver: Driver) -> AsyncIterator[Driver]:
    """Run ``driver`` in this event loop while the block runs."""
    task = asyncio.create_task(driver.run())
    ready = asyncio.create_task(driver.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    try:
        yield driver
    finally:
        driver.stop()
        await task


def lease_driver(store: StoreProcess, handler: Any, **kw: Any) -> Driver:
    kw.setdefault("lease_seconds", 3)
    driver = Driver(
        store.url,
        store.token("driver"),
        DSID,
        dispatch="lease",
        claim_wait=1.0,
        retry_backoff=0.01,
        **kw,
    )
    driver.handler(handler)
    return driver


async def test_client_claims_heartbeats_and_is_fenced(store_proc: StoreProcess) -> None:
    async with (
        DriverClient(store_proc.url, store_proc.token("driver")) as drv,
        JobClient(store_proc.url, store_proc.token("client", "app")) as client,
    ):
        declared = await drv.put_datasource(DSID, "d", dispatch="lease", lease_seconds=30)
        assert declared["dispatch"] == "lease"
        assert await drv.claim(DSID, "w1", max=5) == []
        for n in range(3):
            await client.submit(DSID, n, f"j{n}")
        claims = await drv.claim(DSID, "w1", max=2)
        assert [c.job for c in claims] == ["j0", "j1"]
        assert all(c.record.status.value == "accepted" for c in claims)
        assert claims[0].lease.worker == "w1" and claims[0].lease.attempt == 1
        assert claims[0].lease.expires_at > claims[0].record.updated_at
        (third,) = await drv.claim(DSID, "w2")
        assert third.job == "j2"
        # Long poll: a submit wakes the claim at once.
        waiting = asyncio.create_task(drv.claim(DSID, "w2", max=5, wait=20))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        await client.submit(DSID, 3, "j3")
        (woken,) = await waiting
        assert woken.job == "j3" and time.monotonic() - began < 5
        # Heartbeat renews without a change; an update under another lease is refused.
        one = claims[0]
        beat = await drv.heartbeat(DSID, one.job, one.lease.id)
        assert beat.version == one.record.version and not beat.cancel_requested
        with pytest.raises(LeaseLost) as lost:
            await drv.update(DSID, one.job, "complete", response=1, lease=third.lease.id)
        assert lost.value.code == "lease_lost" and lost.value.status == 409
        assert isinstance(lost.value, Conflict)
        with pytest.raises(LeaseLost):
            await drv.update(DSID, one.job, "complete", response=1)
        done = await drv.update(DSID, one.job, "complete", response=1, lease=one.lease.id)
        assert done.status.value == "complete"
        # Give-back: claimable again (by anyone) once retry_in has passed.
        await drv.update(DSID, "j1", "retrying", lease=claims[1].lease.id, retry_in=0.1)
        await asyncio.sleep(0.2)
        (again,) = await drv.claim(DSID, "w3")
        assert again.job == "j1" and again.lease.attempt == 2
        # A cancel of a held job shows in the holder's next heartbeat.
        await client.cancel(DSID, "j1")
        assert (await drv.heartbeat(DSID, "j1", again.lease.id)).cancel_requested
        # Submit with a deadline.
        record = await client.submit(DSID, 9, "timed", timeout=60)
        assert record.status.value == "submitted"
        # A worker slot is for stream datasources.
        with pytest.raises(Conflict) as not_stream:
            await drv.take_slot(DSID, "w1")
        assert "lease datasource" in not_stream.value.message


async def test_worker_slot_calls(store_proc: StoreProcess) -> None:
    async with DriverClient(store_proc.url, store_proc.token("driver")) as drv:
        await drv.put_datasource("s1", "a stream")
        slot = await drv.take_slot("s1", "first")
        assert slot.worker == "first" and slot.resume is None
        with pytest.raises(SlotTaken) as taken:
            await drv.take_slot("s1", "second")
        assert taken.value.code == "slot_taken" and "'first'" in taken.value.message
        renewed = await drv.slot_heartbeat("s1", slot.lease, 7)
        assert renewed.resume == 7 and renewed.expires_at >= slot.expires_at
        (ds,) = [d for d in await drv.catalogue() if d["datasource_id"] == "s1"]
        (worker,) = ds["workers"]
        assert worker["worker"] == "first" and worker["resume"] == 7
        assert worker["since"] <= worker["last_seen"]
        await drv.release_slot("s1", slot.lease)
        with pytest.raises(LeaseLost):
            await drv.slot_heartbeat("s1", slot.lease, 8)
        second = await drv.take_slot("s1", "second")
        assert second.resume == 7  # kept by the store for the next holder
        with pytest.raises(Conflict) as claim:
            await drv.claim("s1", "w")
        assert "stream datasource" in claim.value.message


async def test_runtime_runs_jobs_under_leases(store_proc: StoreProcess) -> None:
    seen: list[tuple[str, int]] = []
    outcomes: list[tuple[str, str]] = []

    async def handle(job: Job) -> Any:
        seen.append((job.id, job.attempt))
        await job.progress(0.5)
        return {"double": job.request * 2}

    driver = lease_driver(store_proc, handle, concurrency=3, worker="w-one")
    driver.on_outcome(lambda job, status: outcomes.append((job, status)))
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app")) as client,
    ):
        assert driver.leased
        for n in range(10):
            await client.submit(DSID, n, f"j{n}")
        for n in range(10):
            record = await client.wait(DSID, f"j{n}", timeout=30)
            assert record.status.value == "complete" and record.response == {"double": n * 2}
            assert record.lease is None and record.attempts == 1
    assert sorted(seen) == [(f"j{n}", 0) for n in range(10)]
    assert sorted(outcomes) == [(f"j{n}", "complete") for n in range(10)]


async def test_cancel_and_deadline_stop_the_handler_at_once(store_proc: StoreProcess) -> None:
    started: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    cancelled: list[str] = []

    async def handle(job: Job) -> Any:
        started[job.id].set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    # A deadline (timeout 1 s) reaches the handler through the next heartbeat (lease 3 s: every
    # second), long before the grace (10 s) would end the job from the store.
    driver = lease_driver(store_proc, handle, concurrency=2)
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app")) as client,
    ):
        began = time.monotonic()
        await client.submit(DSID, {}, "a")
        await client.submit(DSID, {}, "b", timeout=1)
        await started["a"].wait()
        await client.cancel(DSID, "a")
        a = await client.wait(DSID, "a", timeout=10)
        b = await client.wait(DSID, "b", timeout=10)
        assert time.monotonic() - began < 5
    assert (a.status.value, a.error) == ("cancelled", "cancelled on request")
    assert (b.status.value, b.error) == ("cancelled", "cancelled on request")
    assert sorted(cancelled) == ["a", "b"]


async def test_lost_lease_stops_the_handler_and_nothing_is_posted(
    store_proc: StoreProcess,
) -> None:
    outcomes: list[tuple[str, str]] = []
    runs: list[int] = []

    async def handle(job: Job) -> Any:
        runs.append(job.attempt)
        if job.attempt == 0:
            # Block the event loop past the lease: no heartbeat goes out, the store takes the
            # job back. The runtime must then stop the handler and post nothing for it.
            time.sleep(2.5)
            await asyncio.sleep(0.5)
            return "first"
        return "second"

    driver = lease_driver(store_proc, handle, concurrency=1, lease_seconds=2)
    driver.on_outcome(lambda job, status: outcomes.append((job, status)))
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app")) as client,
    ):
        await client.submit(DSID, {}, "j")
        record = await client.wait(DSID, "j", timeout=30)
    assert (record.status.value, record.response, record.attempts) == ("complete", "second", 2)
    assert runs == [0, 1]
    assert outcomes == [("j", "complete")]


async def test_retryable_error_gives_the_job_back(store_proc: StoreProcess) -> None:
    async def handle(job: Job) -> Any:
        if job.attempt == 0:
            raise RetryableError("not yet", delay=0.1)
        return job.attempt

    driver = lease_driver(store_proc, handle)
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app")) as client,
    ):
        sub = client.subscribe(DSID)
        async with sub:
            await client.submit(DSID, {}, "r")
            statuses = []
            async for note in sub:
                statuses.append((note.record.status.value, note.record.error))
                if note.record.terminal:
                    break
    assert statuses == [
        ("submitted", None),
        ("accepted", None),
        ("retrying", "not yet"),
        ("accepted", None),
        ("complete", None),
    ]


async def test_stop_gives_running_jobs_back_at_once(store_proc: StoreProcess) -> None:
    started = asyncio.Event()

    async def stuck(job: Job) -> Any:
        started.set()
        await asyncio.Event().wait()

    async def quick(job: Job) -> Any:
        return "done"

    first = lease_driver(store_proc, stuck, shutdown_grace=0.2, worker="first")
    async with JobClient(store_proc.url, store_proc.token("client", "app")) as client:
        async with running(first):
            await client.submit(DSID, {}, "g")
            await started.wait()
        record = await client.status(DSID, "g")
        assert record.status.value == "retrying" and record.lease is None
        assert record.error is not None and "worker first gave the job back" in record.error
        second = lease_driver(store_proc, quick, lease_seconds=30, worker="second")
        async with running(second):
            began = time.monotonic()
            record = await client.wait(DSID, "g", timeout=20)
            # Claimed at once, not after the first worker's 3 s lease.
            assert time.monotonic() - began < 2.5
        assert (record.status.value, record.response) == ("complete", "done")
