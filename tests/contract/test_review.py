"""Regression tests for defects found in the correctness review of the stores.

Each test failed before its fix. Both defects were in the SQLite store; the PostgreSQL store was
reviewed for the same faults (see the review report) and needs no test of its own here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from jobqueue_store import errors
from jobqueue_store.models import Datasource, JobRecord
from jobqueue_store.storage.base import Store
from jobqueue_store.storage.sqlite import SQLiteStore

# Generous: these bounds only turn a hang into a failure, they measure nothing.
HANG_GUARD_S = 10.0


def _aiosqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_sqlite_reads_waiting_for_a_connection_end_when_the_store_closes(
    tmp_path: Path,
) -> None:
    # One reader connection: every read but the first waits for it. close() used to swap the
    # idle queue for a new one, so the waiting reads were never woken: they hung forever.
    store = SQLiteStore(tmp_path / "jobqueue.sqlite3", readers=1)
    await store.open()
    await store.put_datasource(Datasource("ds1"))
    reads = [asyncio.create_task(store.list_jobs("ds1", None)) for _ in range(5)]
    await asyncio.sleep(0)  # every read has taken the connection or is waiting for it
    await store.close()
    done, pending = await asyncio.wait(reads, timeout=HANG_GUARD_S)
    for task in pending:
        task.cancel()
    assert not pending, f"{len(pending)} reads still wait after close()"
    for task in done:
        exc = task.exception()
        # A read may have finished before the connections closed; any other is a 503.
        assert exc is None or isinstance(exc, errors.Unavailable), exc


async def test_sqlite_failed_open_closes_its_connections(tmp_path: Path) -> None:
    path = tmp_path / "jobqueue.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.put_datasource(Datasource("ds1", request_schema={"type": "object"}))
    await store.close()
    # A stored request schema that is not JSON: open() fails after its connections are made.
    db = sqlite3.connect(path)
    db.execute("UPDATE datasources SET request_schema = x'7b'")
    db.commit()
    db.close()

    before = _aiosqlite_threads()
    broken = SQLiteStore(path)
    with pytest.raises(errors.Unavailable, match="cannot be opened"):
        await broken.open()
    # Each aiosqlite connection runs a non-daemon thread: one left open keeps the process alive.
    leaked = _aiosqlite_threads() - before
    for thread in leaked:
        thread.join(HANG_GUARD_S)
    assert not [t for t in leaked if t.is_alive()], "open() left connections open"
    with pytest.raises(errors.Unavailable):
        await broken.list_jobs("ds1", None)
    await broken.close()  # still safe after a failed open


async def test_timestamps_never_decrease_after_the_newest_events_are_purged(
    backend: str, tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge that removes a datasource's newest events, a restart, and a clock that stepped
    back: the next entry's timestamp is still not below the ones handed out before."""
    from jobqueue_store.models import Status, StatusUpdate, now_ms
    from tests.conftest import _drop_schema, make_store

    store = make_store(backend, tmp_path, pg_schema)
    await store.open()
    try:
        await store.put_datasource(Datasource("ds"))
        await store.submit("ds", "old", "app", 1)
        await store.update_status("ds", "old", StatusUpdate(Status.COMPLETE))
        before = (await store.events_after("ds", 0))[-1].timestamp
        assert await store.purge(now_ms() + 1) == 1
        assert await store.events_after("ds", 0) == []
        await store.close()
        past = before - 60_000
        monkeypatch.setattr("jobqueue_store.storage.sqlite.now_ms", lambda: past)
        store = make_store(backend, tmp_path, pg_schema)
        await store.open()
        await store.submit("ds", "new", "app", 2)
        (entry,) = await store.events_after("ds", 0)
        assert entry.timestamp >= before
    finally:
        await store.close()
        if backend == "postgres":
            await _drop_schema(pg_schema)


async def test_commands_on_one_job_in_one_batch_see_each_other(store: Store) -> None:
    """Writes queued together (one group commit) apply in order, each seeing the ones before;
    a failing command, even one the database refuses, fails alone."""
    from jobqueue_store.models import Status, StatusUpdate

    await store.put_datasource(Datasource("ds"))
    results = await asyncio.gather(
        store.submit("ds", "j", "app", {"n": 1}),
        store.submit("ds", "j", "app", {"n": 1}),
        store.submit("ds", "j", "app", {"n": 2}),
        store.cancel("ds", "j", "app"),
        store.cancel("ds", "j", "app"),
        store.update_status("ds", "j", StatusUpdate(Status.ACCEPTED, progress=0.5)),
        store.update_status("ds", "j", StatusUpdate(Status.FAILED, error="bad \x00 byte")),
        store.submit("ds", "k", "app", 2),
        store.update_status("ds", "nope", StatusUpdate(Status.ACCEPTED)),
        return_exceptions=True,
    )
    (first, created), (again, created_again) = results[0], results[1]  # type: ignore[misc]
    assert created and not created_again and again == first
    assert isinstance(results[2], errors.Conflict)
    cancelled = results[3]
    assert isinstance(cancelled, JobRecord) and cancelled.cancel_requested
    assert results[4] == cancelled
    accepted = results[5]
    assert isinstance(accepted, JobRecord)
    assert (accepted.status, accepted.version, accepted.cancel_requested) == (
        Status.ACCEPTED,
        3,
        True,
    )
    # A NUL byte: PostgreSQL refuses it in text, SQLite stores it; either way only this fails.
    assert isinstance(results[6], errors.BadRequest | JobRecord)
    assert isinstance(results[7], tuple) and results[7][1] is True
    assert isinstance(results[8], errors.NotFound)
    events = await store.events_after("ds", 0)
    failed_stored = isinstance(results[6], JobRecord)
    expected = [("j", "request"), ("j", "cancel"), ("j", "status")]
    expected += [("j", "status")] * failed_stored + [("k", "request")]
    assert [(e.job, e.type) for e in events] == expected
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
