"""The client library and the driver runtime together, against a real store process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from jobqueue_store.client import ConnectionFailed, DriverClient, JobClient, Notification
from jobqueue_store.driver import Driver, ForbiddenJob, Job, RetryableError, load_state
from jobqueue_store.errors import Conflict, Forbidden, NotFound, Unauthorized
from tests.e2e.conftest import StoreProcess

DSID = "e2e"


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


def make_driver(
    store: StoreProcess, tmp_path: Path, handler: Callable[[Job], Awaitable[Any]], **kw: Any
) -> Driver:
    driver = Driver(
        store.url,
        store.token("driver"),
        DSID,
        state_file=tmp_path / "driver-state.json",
        retry_backoff=0.01,
        **kw,
    )
    driver.handler(handler)
    return driver


async def notifications_until_terminal(
    sub: AsyncIterator[Notification], jobs: set[str]
) -> list[Notification]:
    """Collect notifications until every job in ``jobs`` is terminal."""
    seen: list[Notification] = []
    left = set(jobs)
    async for note in sub:
        seen.append(note)
        if note.record.terminal:
            left.discard(note.job)
        if not left:
            return seen
    raise AssertionError("subscription ended")


async def test_job_submitted_by_client_completes_through_driver(
    store_proc: StoreProcess, tmp_path: Path
) -> None:
    async def handle(job: Job) -> Any:
        await job.progress(0.5)
        return {"sum": sum(job.request["numbers"])}

    driver = make_driver(store_proc, tmp_path, handle)
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app1")) as client,
    ):
        sub = client.subscribe(DSID)
        async with sub:
            record = await client.submit(DSID, {"numbers": [1, 2, 3]})
            assert record.status == "submitted"
            assert len(record.job) == 36  # a generated GUID
            done = await client.wait(DSID, record.job, timeout=30)
            assert done.status == "complete"
            assert done.response == {"sum": 6}
            notes = await notifications_until_terminal(sub, {record.job})
        statuses = [(n.record.status.value, n.record.progress) for n in notes]
        assert statuses == [
            ("submitted", None),
            ("accepted", None),
            ("accepted", 0.5),
            ("complete", None),
        ]
        seqs = [n.seq for n in notes]
        assert seqs == sorted(set(seqs))
        # The same submit again is an idempotent retry; another request under the id conflicts.
        again = await client.submit(DSID, {"numbers": [1, 2, 3]}, record.job)
        assert again.status == "complete"
        with pytest.raises(Conflict) as conflict:
            await client.submit(DSID, {"numbers": [4]}, record.job)
        assert conflict.value.code == "conflict" and conflict.value.status == 409
        assert "different request" in conflict.value.message
        listed = [r.job async for r in client.jobs(DSID, page_size=1)]
        assert listed == [record.job]
    assert load_state(tmp_path / "driver-state.json") == driver.after > 0


async def test_retries_failures_and_forbidden(store_proc: StoreProcess, tmp_path: Path) -> None:
    attempts: dict[str, int] = {}

    async def handle(job: Job) -> Any:
        attempts[job.id] = attempts.get(job.id, 0) + 1
        kind = job.request["kind"]
        if kind == "flaky" and job.attempt < 2:
            raise RetryableError("not yet", delay=0)
        if kind == "hopeless":
            raise RetryableError("never")
        if kind == "broken":
            raise ValueError("bad input")
        if kind == "forbidden":
            raise ForbiddenJob("not for you")
        return job.attempt

    driver = make_driver(store_proc, tmp_path, handle, max_retries=2)
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app1")) as client,
    ):
        sub = client.subscribe(DSID)
        async with sub:
            for kind in ("flaky", "hopeless", "broken", "forbidden"):
                await client.submit(DSID, {"kind": kind}, kind)
            notes = await notifications_until_terminal(
                sub, {"flaky", "hopeless", "broken", "forbidden"}
            )
    history = {
        job: [n.record.status.value for n in notes if n.job == job]
        for job in ("flaky", "hopeless", "broken", "forbidden")
    }
    assert history["flaky"] == [
        "submitted",
        "accepted",
        "retrying",
        "accepted",
        "retrying",
        "accepted",
        "complete",
    ]
    assert history["hopeless"][-1] == "failed"
    assert history["hopeless"].count("retrying") == 2
    assert history["broken"] == ["submitted", "accepted", "failed"]
    assert history["forbidden"] == ["submitted", "accepted", "forbidden"]
    last = {n.job: n.record for n in notes}
    assert last["flaky"].response == 2
    assert last["hopeless"].error == "gave up after 3 attempts: never"
    assert last["broken"].error == "ValueError: bad input"
    assert attempts == {"flaky": 3, "hopeless": 3, "broken": 1, "forbidden": 1}


async def test_cancel_reaches_the_running_handler(store_proc: StoreProcess, tmp_path: Path) -> None:
    started = asyncio.Event()
    cleaned_up = asyncio.Event()

    async def handle(job: Job) -> Any:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    driver = make_driver(store_proc, tmp_path, handle, concurrency=1)
    async with (
        running(driver),
        JobClient(store_proc.url, store_proc.token("client", "app1")) as client,
    ):
        await client.submit(DSID, {}, "long")
        await client.submit(DSID, {}, "queued")  # waits for the only slot
        await started.wait()
        await client.cancel(DSID, "queued")
        await client.cancel(DSID, "long")
        long = await client.wait(DSID, "long", timeout=30)
        queued = await client.wait(DSID, "queued", timeout=30)
        assert cleaned_up.is_set()
        assert (long.status, long.cancel_requested) == ("cancelled", True)
        assert queued.status == "cancelled"


async def test_typed_errors(store_proc: StoreProcess) -> None:
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        with pytest.raises(NotFound) as missing:
            await client.status("nowhere", "x")
        assert missing.value.code == "not_found" and "not declared" in missing.value.message
        with pytest.raises(NotFound):
            await client.subscribe("nowhere").open()
    async with JobClient(store_proc.url, "garbage") as client:
        with pytest.raises(Unauthorized):
            await client.status(DSID, "x")
    driver_token = store_proc.token("driver", dsid="other")
    async with DriverClient(store_proc.url, driver_token) as dclient:
        with pytest.raises(Forbidden):
            await dclient.put_datasource(DSID)
    async with JobClient("http://127.0.0.1:1", "t", retries=1, backoff=0.01) as client:
        with pytest.raises(ConnectionFailed) as failed:
            await client.status(DSID, "x")
        assert failed.value.code == "connection_failed"
