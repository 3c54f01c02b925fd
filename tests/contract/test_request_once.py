"""Each revision's request text is stored once, on every backend: in the log entry that brought
it. The job's row and its other events keep their records without it, and every read (status,
lists, events, request-stream pages, revisions) puts it back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobqueue_store.models import Datasource, Dispatch, JobRecord, Status, StatusUpdate
from jobqueue_store.storage.base import Store
from jobqueue_store.storage.sqlite import SQLiteStore
from jobqueue_store.timers import ManualClock
from tests.conftest import PG_DSN
from tests.contract.conftest import Opener

LEASED = Datasource(
    "lq", "", dispatch=Dispatch.LEASE, lease_seconds=30, max_attempts=3, job_timeout=60
)
STREAM = Datasource("sq", "")


def _request(marker: str) -> dict[str, Any]:
    # Long and unique: found in a stored text only where the request itself was stored.
    return {"marker": marker * 200, "text": 'caf\u00e9 "q" \u0000', "big": 2**63 - 1}


async def _stored_rows(store: Store, backend: str, pg_schema: str) -> list[str]:
    """Every row of the jobs and events tables, as text."""
    if backend == "sqlite":
        assert isinstance(store, SQLiteStore)
        import sqlite3

        db = sqlite3.connect(store.path)
        try:
            return [
                repr([v.decode() if isinstance(v, bytes) else v for v in row])
                for table in ("jobs", "events")
                for row in db.execute(f"SELECT * FROM {table}")
            ]
        finally:
            db.close()
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
    try:
        return [
            str(row[0])
            for table in ("jobs", "events")
            for row in await conn.fetch(f"SELECT t::text FROM {table} t")
        ]
    finally:
        await conn.close()


def _copies(rows: list[str], marker: str) -> int:
    return sum(row.count(marker * 200) for row in rows)


async def _assert_reads(store: Store, dsid: str, requests: dict[str, dict[int, Any]]) -> None:
    """Every read of ``dsid`` carries each record's request: that of its revision."""
    for job, by_revision in requests.items():
        record = await store.get_job(dsid, job)
        assert record is not None
        assert record.request == by_revision[record.revision]
        found = await store.get_job_wire(dsid, job)
        assert found is not None and found[1] == record.wire_bytes()
        history = [e.record.request for e in await store.job_events(dsid, job)]
        assert all(
            r == by_revision[e.record.revision]
            for r, e in zip(history, await store.job_events(dsid, job), strict=True)
        )
    page = await store.list_jobs(dsid, None)
    assert {r.job: r.request == requests[r.job][r.revision] for r in page.jobs} == {
        job: True for job in requests
    }
    for event in await store.events_after(dsid, 0):
        assert event.record.request == requests[event.job][event.record.revision]
        if event.type in ("request", "update"):
            assert event.data is not None and event.data["request"] == event.record.request
    entries = await store.entries_since(dsid, 0)
    wire = await store.entries_since_wire(dsid, 0)
    assert [orjson.loads(text) for _, text in wire] == [e.stream_entry() for e in entries]
    for entry in entries:
        if entry.type in ("request", "update"):
            assert entry.data is not None
            assert entry.data["request"] == requests[entry.job][entry.record.revision]
    latest = await store.latest_entry_wire(dsid)
    assert latest is not None and orjson.loads(latest) == entries[-1].stream_entry()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000_000)


async def test_a_request_is_stored_once_whatever_the_job_goes_through(
    opener: Opener, backend: str, pg_schema: str, clock: ManualClock
) -> None:
    store = await opener()
    await store.put_datasource(LEASED)
    await store.put_datasource(STREAM)

    # A stream job: submitted (again: a repeat), accepted, progress, cancelled.
    await store.submit("sq", "s1", "app", _request("S"))
    await store.submit("sq", "s1", "app", _request("S"))
    await store.update_status("sq", "s1", StatusUpdate(Status.ACCEPTED))
    await store.update_status("sq", "s1", StatusUpdate(Status.RUNNING, progress=0.5))
    await store.cancel("sq", "s1", "app")
    # A pipeline: a new revision (its own request), stopped, started.
    await store.submit("sq", "p1", "app", _request("P"))
    await store.update_status("sq", "p1", StatusUpdate(Status.RUNNING))
    revised, new = await store.revise("sq", "p1", "app", _request("Q"), rollback=False)
    assert new and revised.revision == 1
    await store.update_status("sq", "p1", StatusUpdate(Status.RUNNING))
    await store.set_desired("sq", "p1", "app", "stopped")
    await store.set_desired("sq", "p1", "app", "running")
    # Leased jobs: claimed in one set-based write, a heartbeat, then one passes its deadline
    # and its grace (timer writes), the other completes.
    await store.submit("lq", "l1", "app", _request("L"))
    await store.submit("lq", "l2", "app", _request("M"))
    claimed = await store.claim("lq", "w1", 2)
    assert [r.request for r in claimed] == [_request("L"), _request("M")]
    held = {r.job: r for r in claimed}
    assert held["l1"].lease is not None
    await store.heartbeat("lq", "l1", held["l1"].lease.id)
    lease2 = held["l2"].lease
    assert lease2 is not None
    await store.update_status("lq", "l2", StatusUpdate(Status.COMPLETE, lease=lease2.id))
    for _ in range(3):
        clock.advance(3_600_000)
        await store.fire_due()

    rows = await _stored_rows(store, backend, pg_schema)
    assert {m: _copies(rows, m) for m in "SPQLM"} == {m: 1 for m in "SPQLM"}
    await _assert_reads(
        store, "sq", {"s1": {0: _request("S")}, "p1": {0: _request("P"), 1: _request("Q")}}
    )
    await _assert_reads(store, "lq", {"l1": {0: _request("L")}, "l2": {0: _request("M")}})

    # After a restart, the same.
    await store.close()
    store = await opener()
    await _assert_reads(
        store, "sq", {"s1": {0: _request("S")}, "p1": {0: _request("P"), 1: _request("Q")}}
    )
    record = await store.get_job("lq", "l1")
    assert record is not None and record.terminal


async def test_a_rollback_stores_the_request_it_goes_back_to_once_more(
    opener: Opener, backend: str, pg_schema: str
) -> None:
    """A rollback is a new revision (an ``update`` entry) with an earlier revision's request:
    that entry holds its own copy, and nothing else adds one."""
    store = await opener()
    await store.put_datasource(STREAM)
    await store.submit("sq", "p", "app", _request("A"))
    await store.update_status("sq", "p", StatusUpdate(Status.RUNNING))
    await store.revise("sq", "p", "app", _request("B"), rollback=True)
    rolled: JobRecord = await store.update_status(
        "sq", "p", StatusUpdate(Status.FAILED, error="boom")
    )
    assert rolled.revision == 2 and rolled.rollback_of == 1 and rolled.request == _request("A")
    await store.update_status("sq", "p", StatusUpdate(Status.RUNNING, progress=1))

    rows = await _stored_rows(store, backend, pg_schema)
    assert (_copies(rows, "A"), _copies(rows, "B")) == (2, 1)
    await _assert_reads(store, "sq", {"p": {0: _request("A"), 1: _request("B"), 2: _request("A")}})
    history = await store.job_events("sq", "p")
    assert [e.type for e in history].count("update") == 2


async def test_requests_survive_the_purge_of_other_jobs(
    opener: Opener, backend: str, pg_schema: str, clock: ManualClock
) -> None:
    """Retention deletes a finished job with all its events; the request of a job that stays
    is kept by its own entry."""
    store = await opener()
    await store.put_datasource(STREAM)
    await store.submit("sq", "old", "app", _request("O"))
    await store.update_status("sq", "old", StatusUpdate(Status.COMPLETE))
    await store.submit("sq", "kept", "app", _request("K"))
    clock.advance(10_000)
    await store.update_status("sq", "kept", StatusUpdate(Status.ACCEPTED))
    assert await store.purge(clock.now_ms() - 5_000) == 1
    rows = await _stored_rows(store, backend, pg_schema)
    assert (_copies(rows, "O"), _copies(rows, "K")) == (0, 1)
    await _assert_reads(store, "sq", {"kept": {0: _request("K")}})
