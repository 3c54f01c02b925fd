"""The PostgreSQL log watermark: readers never skip a seq, across processes.

Two :class:`PostgresStore` instances on one schema stand for two store processes. Sequence
values could commit out of order (PITFALLS.md, PostgreSQL); these tests check that every reader
of the log (``events_after`` with a moving cursor, ``entries_since``, ``latest_entry`` and each
process's listener) only ever sees a gap-free prefix of the log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from jobqueue_store.models import Datasource, Event, Status, StatusUpdate
from jobqueue_store.storage.postgres import PostgresStore
from tests.conftest import PG_DSN

Stores = tuple[PostgresStore, PostgresStore, list[Event], list[Event]]


async def _until(cond: Callable[[], bool], what: str) -> None:
    """Wait until ``cond()`` holds (bounded, so a bug fails the test rather than hanging it)."""
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
async def two_stores() -> AsyncIterator[Stores]:
    """Two opened stores (two "processes") on one fresh schema, each with a recording listener."""
    schema = "t_" + uuid.uuid4().hex[:16]
    a = PostgresStore(PG_DSN, schema=schema)
    b = PostgresStore(PG_DSN, schema=schema)
    # Both start at once: migrations run under an advisory lock.
    await asyncio.gather(a.open(), b.open())
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    a.set_listener(seen_a.extend)
    b.set_listener(seen_b.extend)
    try:
        yield a, b, seen_a, seen_b
    finally:
        await a.close()
        await b.close()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _blocked_by(conn: asyncpg.Connection, pid: int) -> int | None:
    """A backend waiting for a lock that ``pid`` holds, if any."""
    row = await conn.fetchrow(
        "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1", pid
    )
    return None if row is None else int(row["pid"])


async def _wait_blocked_by(conn: asyncpg.Connection, pid: int) -> int:
    for _ in range(2000):
        waiter = await _blocked_by(conn, pid)
        if waiter is not None:
            return waiter
        await asyncio.sleep(0.005)
    raise AssertionError(f"no backend ever waited for backend {pid}")


async def test_concurrent_writers_on_two_processes_reach_both_listeners_in_seq_order(
    two_stores: Stores,
) -> None:
    a, b, seen_a, seen_b = two_stores
    await a.put_datasource(Datasource("ds1"))
    await b.put_datasource(Datasource("ds2"))
    writes_done = asyncio.Event()
    cursor_reads: dict[str, list[int]] = {"ds1": [], "ds2": []}

    async def cursor_reader(dsid: str) -> None:
        # What a websocket replay does: advance a cursor over events_after. A skipped seq would
        # be lost for good, since the cursor never goes back.
        cursor = 0
        while True:
            done = writes_done.is_set()
            events = await a.events_after(dsid, cursor)
            for event in events:
                cursor_reads[dsid].append(event.seq)
                cursor = event.seq
            if done and not events:
                return

    async def writer(store: PostgresStore, dsid: str, prefix: str) -> None:
        for i in range(40):
            job = f"{prefix}{i}"
            await store.submit(dsid, job, "c1", {"i": i})
            if i % 3 == 0:
                await store.cancel(dsid, job, "c1")
            if i % 4 == 0:
                await store.update_status(dsid, job, StatusUpdate(Status.ACCEPTED, progress=0.5))

    readers = [asyncio.create_task(cursor_reader(d)) for d in ("ds1", "ds2")]
    try:
        # Four concurrent writers over two processes and two datasources.
        await asyncio.gather(
            writer(a, "ds1", "a"),
            writer(b, "ds1", "b"),
            writer(a, "ds2", "c"),
            writer(b, "ds2", "d"),
        )
        writes_done.set()
        await asyncio.gather(*readers)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    total = await a.last_seq()
    assert total == await b.last_seq() == 4 * (40 + 14 + 10)
    await _until(lambda: len(seen_a) >= total and len(seen_b) >= total, "both listeners caught up")

    expected = list(range(1, total + 1))
    assert [e.seq for e in seen_a] == expected
    assert [e.seq for e in seen_b] == expected
    assert [(e.seq, e.type, e.job) for e in seen_a] == [(e.seq, e.type, e.job) for e in seen_b]
    assert sorted(cursor_reads["ds1"] + cursor_reads["ds2"]) == expected
    for dsid in ("ds1", "ds2"):
        stored = await b.events_after(dsid, 0, limit=10_000)
        assert cursor_reads[dsid] == [e.seq for e in stored]
        assert [e for e in seen_a if e.datasource_id == dsid] == stored
        stamps = [e.timestamp for e in stored]
        assert stamps == sorted(stamps)


async def test_a_slow_transaction_does_not_let_a_reader_skip_a_seq(two_stores: Stores) -> None:
    a, b, _, seen_b = two_stores
    await a.put_datasource(Datasource("ds"))
    await a.submit("ds", "slow", "c1", 1)
    base = await b.last_seq()
    await _until(lambda: len(seen_b) == base, "the first submit reached b's listener")

    schema = a.schema
    assert schema is not None
    holder = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    watcher = await asyncpg.connect(PG_DSN)
    try:
        # Another transaction holds the job's row: process a's update takes the log lock and
        # seq base+1, then stalls inside its transaction.
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM jobs WHERE job = 'slow' FOR UPDATE")
        slow = asyncio.create_task(
            a.update_status(
                "ds", "slow", StatusUpdate(Status.COMPLETE, response=1, has_response=True)
            )
        )
        slow_pid = await _wait_blocked_by(watcher, holder.get_server_pid())
        # Process b writes meanwhile: it must not commit seq base+2 before base+1 commits.
        fast = asyncio.create_task(b.submit("ds", "fast", "c1", 2))
        await _wait_blocked_by(watcher, slow_pid)

        assert await b.events_after("ds", base) == []
        assert await b.entries_since("ds", 0, after_seq=base) == []
        latest = await b.latest_entry("ds")
        assert latest is not None and latest.seq == base
        assert await b.last_seq() == base
        assert not slow.done() and not fast.done()

        await hold.rollback()
        record = await slow
        fast_record, created = await fast
    finally:
        await holder.close()
        await watcher.close()

    assert record.status is Status.COMPLETE and created and fast_record.job == "fast"
    after = await b.events_after("ds", base)
    assert [(e.seq, e.type, e.job) for e in after] == [
        (base + 1, "status", "slow"),
        (base + 2, "request", "fast"),
    ]
    entries = await b.entries_since("ds", 0, after_seq=base)
    assert [e.seq for e in entries] == [base + 2]
    await _until(lambda: len(seen_b) >= base + 2, "b's listener saw both writes")
    assert [e.seq for e in seen_b] == list(range(1, base + 3))


async def test_listener_catches_up_after_its_connection_is_killed(two_stores: Stores) -> None:
    a, _, _, seen_b = two_stores
    await a.put_datasource(Datasource("ds"))
    await a.submit("ds", "j0", "c1", 0)
    await _until(lambda: len(seen_b) == 1, "b heard of the first write")

    admin = await asyncpg.connect(PG_DSN)
    try:
        # Kill every LISTEN connection on b's channel (a's too): notifications are lost while
        # they reconnect, but the log is read again, so nothing is missed.
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE $1",
            f"%LISTEN%jobqueue_{a.schema}%",
        )
        assert killed >= 1
    finally:
        await admin.close()
    for i in range(1, 6):
        await a.submit("ds", f"j{i}", "c1", i)
    await _until(lambda: len(seen_b) >= 6, "b caught up after reconnecting")
    assert [e.seq for e in seen_b] == [1, 2, 3, 4, 5, 6]
