"""A pipeline driver (the real runtime, ``@driver.pipeline``) against a real store process.

One job is updated three times (one update fails and rolls back), stopped and started, and the
store is SIGKILLed and restarted in the middle. At the end the revisions list matches what the
handler saw, and no two revisions of the job ever ran at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from jobqueue_store.client import JobClient, SyncJobClient
from jobqueue_store.driver import Driver
from jobqueue_store.models import JobRecord
from jobqueue_store.pipelines import PipelineJob
from tests.procs import StoreProcess, cli, fresh_pg_database

DSID = "pipes"
WAIT = 30.0
"""Seconds to wait for a state that must come (a hang guard, not a timing assertion)."""


class Watcher:
    """What the handler saw: every start and end of a revision, and overlaps."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, Any]] = []
        self.running: set[int] = set()
        self.overlaps: list[tuple[int, set[int]]] = []

    async def handler(self, job: PipelineJob) -> None:
        if self.running:
            self.overlaps.append((job.revision, set(self.running)))
        self.running.add(job.revision)
        self.log.append(("start", job.revision, job.request))
        try:
            if job.request.get("fail"):
                raise ValueError("this revision cannot run")
            n = 0
            while True:
                await job.report({"count": n, "v": job.request["v"]})
                n += 1
                await asyncio.sleep(0.05)
        finally:
            self.running.discard(job.revision)
            self.log.append(("end", job.revision, None))


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


async def until(
    client: JobClient, job: str, check: Callable[[JobRecord], bool], what: str
) -> JobRecord:
    """Poll ``job`` until ``check`` holds (bounded: a missing state fails the test)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    record = await client.status(DSID, job)
    while not check(record):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: still {record.to_wire()}")
        await asyncio.sleep(0.05)
        record = await client.status(DSID, job)
    return record


def runs(revision: int, request: Any = None) -> Callable[[JobRecord], bool]:
    """The job runs ``revision`` (with ``request``)."""
    return lambda r: (
        r.revision == revision
        and r.status.value == "running"
        and r.has_response
        and (request is None or r.request == request)
    )


@pytest.mark.slow
async def test_pipeline_updates_rollback_stop_start_and_a_store_crash(
    backend: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        database = ""
        if backend == "postgres":
            database = await stack.enter_async_context(fresh_pg_database())
        data = tmp_path / "data"
        cli("key", "rotate", data_dir=data)  # the root key, before the store's first start
        app_token = cli("token", "--role", "client", "--client", "app", data_dir=data)
        driver_token = cli("token", "--role", "driver", data_dir=data)
        store = StoreProcess(data, database=database)
        await store.start()
        stack.push_async_callback(lambda: _stop(store))

        watcher = Watcher()
        driver = Driver(store.url, driver_token, DSID, state_file=tmp_path / "state.json")
        driver.pipeline(watcher.handler)
        client = await stack.enter_async_context(JobClient(store.url, app_token))
        await stack.enter_async_context(running(driver))

        await client.submit(DSID, {"v": 0}, job="p1")
        await until(client, "p1", runs(0), "revision 0 runs")
        await client.update(DSID, "p1", {"v": 1})
        await until(client, "p1", runs(1, {"v": 1}), "revision 1 runs")

        # The store dies and comes back on the same port: the driver carries on.
        await store.kill()
        store = StoreProcess(data, database=database, port=store.port)
        await store.start()
        await until(client, "p1", lambda r: r.revision == 1 and r.version > 4, "after restart")

        await client.update(DSID, "p1", {"v": 2, "fail": True}, rollback=True)
        rolled = await until(client, "p1", runs(3, {"v": 1}), "rolled back to v1")
        assert rolled.rollback_of == 2
        await client.update(DSID, "p1", {"v": 4})
        await until(client, "p1", runs(4, {"v": 4}), "revision 4 runs")
        stopped = await client.stop(DSID, "p1")
        assert stopped.desired_state == "stopped"
        await until(client, "p1", lambda r: r.status.value == "stopped", "stopped")
        assert not watcher.running
        await client.start(DSID, "p1")
        await until(client, "p1", lambda r: runs(4)(r) and r.desired_state == "running", "again")

        revisions = await client.revisions(DSID, "p1")
        seen = list(watcher.log)  # before the driver's shutdown ends the last run

    # What the handler saw: each revision started with its request, one at a time.
    assert watcher.overlaps == []
    assert watcher.log[len(seen) :] == [("end", 4, None)]  # the driver's shutdown
    starts = [(rev, req) for kind, rev, req in seen if kind == "start"]
    assert [rev for rev, _ in starts] == [0, 1, 2, 3, 4, 4]
    kinds = [kind for kind, _, _ in seen]
    assert kinds == ["start", "end"] * 5 + ["start"]
    assert [r["revision"] for r in revisions] == [0, 1, 2, 3, 4]
    for rev, request in starts:
        assert revisions[rev]["request"] == request
        assert revisions[rev]["running_at"] is not None
    assert [r["status"] for r in revisions] == [
        "stopped",
        "stopped",
        "failed",
        "stopped",
        "running",
    ]
    assert revisions[2]["rollback"] is True
    assert "this revision cannot run" in revisions[2]["error"]
    assert revisions[3]["rollback_of"] == 2
    assert [r["rollback_of"] for r in revisions] == [None, None, None, 2, None]


async def _stop(store: StoreProcess) -> None:
    if store.proc is not None and store.proc.returncode is None:
        await store.stop()


async def test_a_restarted_pipeline_driver_runs_the_live_jobs_again(tmp_path: Path) -> None:
    """A live job stays below the resume mark: a new driver process (same state file) restarts
    its current revision; a finished one is not run again."""
    async with AsyncExitStack() as stack:
        data = tmp_path / "data"
        cli("key", "rotate", data_dir=data)
        app_token = cli("token", "--role", "client", "--client", "app", data_dir=data)
        driver_token = cli("token", "--role", "driver", data_dir=data)
        store = StoreProcess(data)
        await store.start()
        stack.push_async_callback(lambda: _stop(store))
        client = await stack.enter_async_context(JobClient(store.url, app_token))
        state = tmp_path / "state.json"

        first = Watcher()
        driver = Driver(store.url, driver_token, DSID, state_file=state)
        driver.pipeline(first.handler)
        async with running(driver):
            await client.submit(DSID, {"v": 0}, job="live")
            await client.submit(DSID, {"v": 0}, job="done")
            await until(client, "live", runs(0), "live runs")
            await until(client, "done", runs(0), "done runs")
            await client.update(DSID, "live", {"v": 1})
            await until(client, "live", runs(1), "live r1 runs")
            await client.cancel(DSID, "done")
            await until(client, "done", lambda r: r.terminal, "done is cancelled")

        again = Watcher()
        driver = Driver(store.url, driver_token, DSID, state_file=state)
        driver.pipeline(again.handler)
        async with running(driver):
            await until(client, "live", lambda r: runs(1)(r) and bool(again.running), "again")
            started = [(kind, rev) for kind, rev, _ in again.log if kind == "start"]
        assert started == [("start", 1)]
        assert (await client.status(DSID, "done")).status.value == "cancelled"

        def blocking() -> tuple[JobRecord, JobRecord, JobRecord, list[dict[str, Any]]]:
            with SyncJobClient(store.url, app_token) as sync:
                updated = sync.update(DSID, "done", {"v": 9}, rollback=True)
                stopped = sync.stop(DSID, "done")
                started = sync.start(DSID, "done")
                return updated, stopped, started, sync.revisions(DSID, "done")

        updated, stopped, restarted, revisions = await asyncio.to_thread(blocking)
        assert (updated.revision, updated.status.value, updated.rollback) == (1, "submitted", True)
        assert stopped.desired_state == "stopped" and restarted.desired_state == "running"
        assert [(r["revision"], r["status"]) for r in revisions] == [
            (0, "cancelled"),
            (1, "submitted"),
        ]
