"""Retention (``Store.purge``, ``Store.purged_through`` and the :class:`Retention` task), on every
backend through the ``store`` fixture.

Time is controlled without sleeping: a purge's cutoff is taken from the records' own
``updated_at`` (or ``now + 1`` for "everything terminal"), and the task gets a clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jobqueue_store.models import Datasource, Event, JobRecord, Status, StatusUpdate, now_ms
from jobqueue_store.retention import DAY_MS, Retention
from jobqueue_store.storage import sqlite as sqlite_store
from jobqueue_store.storage.base import Store
from tests.conftest import PG_DSN, _drop_schema, make_store
from tests.contract.conftest import Reopen

# PostgreSQL's partial index predicate; SQLite's is the store's own (sqlite.TERMINAL_SQL).
TERMINAL_SQL = "status IN ('complete', 'cancelled', 'forbidden', 'failed')"


@pytest.fixture
async def ds(store: Store) -> str:
    """Two declared datasources; returns the first."""
    await store.put_datasource(Datasource("ds1"))
    await store.put_datasource(Datasource("ds2"))
    return "ds1"


async def after_tick(t: int) -> None:
    """Return once the clock has passed ``t`` (ms): later writes get a larger ``updated_at``."""
    for _ in range(10_000):
        if now_ms() > t:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the clock does not move")


async def make_job(
    store: Store, dsid: str, job: str, *statuses: Status, client: str = "c1"
) -> JobRecord:
    """Submit ``job`` and report ``statuses`` in turn; return the last record."""
    record, _ = await store.submit(dsid, job, client, {"job": job})
    for status in statuses:
        record = await store.update_status(dsid, job, StatusUpdate(status))
    return record


async def whole_log(store: Store, dsid: str) -> list[Event]:
    return await store.events_after(dsid, 0, limit=100_000)


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def without(events: list[Event], purged: set[tuple[str, str]]) -> list[Event]:
    """``events`` minus those of the ``(datasource, job)`` pairs in ``purged``."""
    return [e for e in events if (e.datasource_id, e.job) not in purged]


# what is purged -------------------------------------------------------------------------------
async def test_purge_deletes_only_old_terminal_jobs_and_their_events(store: Store, ds: str) -> None:
    old = {
        ("ds1", "done"): await make_job(store, "ds1", "done", Status.ACCEPTED, Status.COMPLETE),
        ("ds1", "failed"): await make_job(store, "ds1", "failed", Status.FAILED),
        ("ds2", "forbidden"): await make_job(store, "ds2", "forbidden", Status.FORBIDDEN),
    }
    await store.submit("ds1", "cancelled", "c2", {})
    await store.cancel("ds1", "cancelled", "c2")
    old[("ds1", "cancelled")] = await store.update_status(
        "ds1", "cancelled", StatusUpdate(Status.CANCELLED)
    )
    # Old but unfinished: kept whatever their age.
    await make_job(store, "ds1", "waiting")
    await make_job(store, "ds1", "running", Status.ACCEPTED)
    await make_job(store, "ds2", "retrying", Status.RETRYING)
    cutoff = max(r.updated_at for r in old.values()) + 1
    await after_tick(cutoff)
    # Terminal but newer than the cutoff: kept.
    young = await make_job(store, "ds1", "young", Status.COMPLETE)
    assert young.updated_at >= cutoff

    before = {d: await whole_log(store, d) for d in ("ds1", "ds2")}
    stream_before = {d: await store.entries_since(d, 0, limit=100_000) for d in ("ds1", "ds2")}
    last = await store.last_seq()
    assert await store.purged_through() == 0

    assert await store.purge(cutoff) == len(old)

    purged = set(old)
    for dsid, job in purged:
        assert await store.get_job(dsid, job) is None
    for dsid, job in [
        ("ds1", "waiting"),
        ("ds1", "running"),
        ("ds2", "retrying"),
        ("ds1", "young"),
    ]:
        assert await store.get_job(dsid, job) is not None
    for dsid in ("ds1", "ds2"):
        assert await whole_log(store, dsid) == without(before[dsid], purged)
        assert await store.entries_since(dsid, 0, limit=100_000) == without(
            stream_before[dsid], purged
        )
    deleted = [e for d in before.values() for e in d if (e.datasource_id, e.job) in purged]
    assert await store.purged_through() == max(seqs(deleted))
    assert await store.last_seq() == last  # no seq is handed out again
    # Nothing is left to purge at that cutoff; the kept terminal job goes with a later one.
    assert await store.purge(cutoff) == 0
    assert await store.purge(now_ms() + 1) == 1
    assert await store.get_job("ds1", "young") is None
    assert await store.get_job("ds1", "running") is not None


async def test_latest_entry_and_list_after_purge(store: Store, ds: str) -> None:
    await make_job(store, "ds1", "keep")
    gone = await make_job(store, "ds1", "gone", Status.COMPLETE)
    assert (await store.latest_entry("ds1")) is not None
    assert await store.purge(gone.updated_at + 1) == 1
    latest = await store.latest_entry("ds1")
    assert latest is not None and latest.job == "keep"
    page = await store.list_jobs("ds1", None)
    assert [r.job for r in page.jobs] == ["keep"]


async def test_purged_job_id_can_be_submitted_again(store: Store, ds: str) -> None:
    first = await make_job(store, "ds1", "j", Status.FAILED)
    await store.purge(now_ms() + 1)
    record, created = await store.submit("ds1", "j", "someone-else", {"again": True})
    assert created and record.status is Status.SUBMITTED and record.version == 1
    assert record.submitted_at >= first.updated_at
    assert [e.job for e in await whole_log(store, "ds1")] == ["j"]


# the log that remains ---------------------------------------------------------------------------
async def test_paging_the_remaining_log_has_no_gap_and_no_duplicate(store: Store, ds: str) -> None:
    # Interleave jobs that will be purged with jobs that stay, over two clients.
    for i in range(30):
        client = f"c{i % 2}"
        if i % 3 == 0:
            await make_job(store, "ds1", f"j{i}", Status.ACCEPTED, Status.COMPLETE, client=client)
        elif i % 3 == 1:
            await make_job(store, "ds1", f"j{i}", Status.ACCEPTED, client=client)
        else:
            await make_job(store, "ds1", f"j{i}", client=client)
            await store.cancel("ds1", f"j{i}", client)
    before = await whole_log(store, "ds1")
    stream = await store.entries_since("ds1", 0, limit=100_000)
    assert await store.purge(now_ms() + 1) == 10
    purged = {("ds1", f"j{i}") for i in range(0, 30, 3)}
    kept = without(before, purged)
    kept_stream = without(stream, purged)
    assert kept and len(kept) < len(before)

    async def page_events(**kw: object) -> list[Event]:
        out: list[Event] = []
        after = 0
        while True:
            page = await store.events_after("ds1", after, limit=4, **kw)  # type: ignore[arg-type]
            out += page
            if len(page) < 4:
                return out
            after = page[-1].seq

    assert await page_events() == kept
    assert await page_events(stream_only=True) == kept_stream
    for client in ("c0", "c1"):
        assert await page_events(client=client) == [e for e in kept if e.client == client]

    since: list[Event] = []
    after = 0
    while True:
        page = await store.entries_since("ds1", 0, after_seq=after, limit=3)
        since += page
        if len(page) < 3:
            break
        after = page[-1].seq
    assert since == kept_stream
    # A time lookup inside the purged range still finds the first kept entry at or after it.
    t = stream[0].timestamp
    assert (await store.entries_since("ds1", t, limit=100_000)) == [
        e for e in kept_stream if e.timestamp >= t
    ]
    # Resuming from purged_through loses nothing that was kept after it.
    through = await store.purged_through()
    assert await store.events_after("ds1", through, limit=100_000) == [
        e for e in kept if e.seq > through
    ]


async def test_purged_through_survives_reopen(store: Store, ds: str, reopen: Reopen) -> None:
    await make_job(store, "ds1", "keep", Status.ACCEPTED)
    gone = await make_job(store, "ds1", "gone", Status.ACCEPTED, Status.COMPLETE)
    last = await store.last_seq()
    # The newest events are the purged job's: the log's max seq drops, last_seq does not.
    assert await store.purge(gone.updated_at + 1) == 1
    assert await store.purged_through() == last
    assert await store.last_seq() == last
    again = await reopen()
    assert await again.purged_through() == last
    assert await again.last_seq() == last
    await again.submit("ds1", "next", "c1", {})
    (event,) = await again.events_after("ds1", last)
    assert event.job == "next" and event.seq > last
    keep = await again.update_status("ds1", "keep", StatusUpdate(Status.FAILED))
    assert await again.purge(keep.updated_at + 1) == 1
    assert await again.purged_through() == await again.last_seq() > event.seq


async def test_purge_with_a_limit_takes_the_oldest_first(store: Store, ds: str) -> None:
    records = []
    for i in range(7):
        records.append(await make_job(store, "ds1", f"j{i}", Status.COMPLETE))
        await after_tick(records[-1].updated_at)
    await make_job(store, "ds1", "open")
    cutoff = now_ms() + 1
    assert await store.purge(cutoff, limit=3) == 3
    remaining = {r.job for r in (await store.list_jobs("ds1", None, limit=100)).jobs}
    assert remaining == {"open", "j3", "j4", "j5", "j6"}
    assert await store.purge(cutoff, limit=3) == 3
    assert await store.purge(cutoff, limit=3) == 1
    assert await store.purge(cutoff, limit=3) == 0
    assert [r.job for r in (await store.list_jobs("ds1", None)).jobs] == ["open"]
    with pytest.raises(ValueError):
        await store.purge(cutoff, limit=0)


async def test_purge_during_concurrent_writes(store: Store, ds: str) -> None:
    seen: list[Event] = []
    store.set_listener(seen.extend)
    for i in range(60):
        await make_job(store, "ds1", f"old{i}", Status.FAILED)
    cutoff = now_ms() + 1
    await after_tick(cutoff)
    before = await store.last_seq()

    async def writer(n: int) -> None:
        for i in range(15):
            job = f"new{n}-{i}"
            await store.submit("ds1", job, f"c{n}", {"i": i})
            await store.update_status("ds1", job, StatusUpdate(Status.ACCEPTED))
            await store.update_status("ds1", job, StatusUpdate(Status.COMPLETE))

    async def purger() -> int:
        total = 0
        while (deleted := await store.purge(cutoff, limit=7)) > 0:
            total += deleted
        return total

    results = await asyncio.gather(writer(0), writer(1), writer(2), purger(), purger())
    assert results[3] + results[4] == 60
    log = await whole_log(store, "ds1")
    assert all(e.job.startswith("new") for e in log)
    assert len(log) == 3 * 15 * 3
    assert seqs(log) == sorted(set(seqs(log)))
    assert min(seqs(log)) > before
    for n in range(3):
        for i in range(15):
            record = await store.get_job("ds1", f"new{n}-{i}")
            assert record is not None and record.status is Status.COMPLETE
    # The listener got every new event once, in seq order (a backend may deliver them later).
    for _ in range(500):
        if len([e for e in seen if e.seq > before]) >= len(log):
            break
        await asyncio.sleep(0.01)
    assert [e.seq for e in seen if e.seq > before] == seqs(log)


# the Retention task ---------------------------------------------------------------------------
async def test_retention_run_once_uses_the_clock_and_loops(store: Store, ds: str) -> None:
    old = [await make_job(store, "ds1", f"old{i}", Status.COMPLETE) for i in range(5)]
    cutoff = max(r.updated_at for r in old) + 1
    await after_tick(cutoff)
    await make_job(store, "ds1", "young", Status.COMPLETE)
    await make_job(store, "ds1", "open")
    retention = Retention(store, 2.5, batch=2, clock=lambda: cutoff + round(2.5 * DAY_MS))
    assert retention.cutoff_ms() == cutoff
    assert await retention.run_once() == 5
    assert retention.purged == 5 and retention.runs == 1
    jobs = {r.job for r in (await store.list_jobs("ds1", None)).jobs}
    assert jobs == {"young", "open"}
    assert await retention.run_once() == 0


async def test_retention_disabled(store: Store, ds: str) -> None:
    await make_job(store, "ds1", "j", Status.COMPLETE)
    for days in (0.0, -1.0):
        retention = Retention(store, days, clock=lambda: now_ms() + 365 * DAY_MS)
        assert not retention.enabled
        assert await retention.run_once() == 0
        retention.start()
        await retention.stop()
    assert await store.get_job("ds1", "j") is not None
    with pytest.raises(ValueError):
        Retention(store, 1, interval_s=0)


async def test_retention_task_purges_periodically(store: Store, ds: str) -> None:
    clock = [now_ms()]
    retention = Retention(store, 1, interval_s=0.01, clock=lambda: clock[0])
    retention.start()
    retention.start()  # a second start is a no-op
    await make_job(store, "ds1", "j", Status.COMPLETE)
    clock[0] = now_ms() + DAY_MS + 1
    for _ in range(1000):
        if retention.purged:
            break
        await asyncio.sleep(0.01)
    await retention.stop()
    await retention.stop()
    assert retention.purged == 1
    assert await store.get_job("ds1", "j") is None


# indexes --------------------------------------------------------------------------------------
async def test_purge_queries_use_indexes(backend: str, tmp_path: Path, pg_schema: str) -> None:
    s = make_store(backend, tmp_path, pg_schema)
    await s.open()
    await s.close()
    terminal = sqlite_store.TERMINAL_SQL if backend == "sqlite" else TERMINAL_SQL
    purge_jobs = (
        f"SELECT id FROM jobs WHERE {terminal} AND updated_at < 5 ORDER BY updated_at LIMIT 9"
    )
    delete_events = "DELETE FROM events WHERE datasource_id = 'a' AND job = 'b'"
    if backend == "sqlite":
        import sqlite3

        db = sqlite3.connect(tmp_path / "jobqueue.sqlite3")
        try:
            plans = [
                " ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
                for sql in (purge_jobs, delete_events)
            ]
        finally:
            db.close()
        assert "USING INDEX jobs_terminal_updated" in plans[0], plans[0]
        assert "USING INDEX events_job" in plans[1], plans[1]
        return
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema})
    try:
        await conn.execute("SET enable_seqscan = off")
        plans = [
            "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}"))
            for sql in (purge_jobs, delete_events)
        ]
    finally:
        await conn.close()
        await _drop_schema(pg_schema)
    assert "jobs_terminal_by_updated" in plans[0], plans[0]
    assert "events_by_job" in plans[1], plans[1]


# several PostgreSQL processes ---------------------------------------------------------------------
async def test_postgres_stores_purging_concurrently(pg_schema: str, tmp_path: Path) -> None:
    stores = [make_store("postgres", tmp_path, pg_schema) for _ in range(3)]
    try:
        for s in stores:
            await s.open()
        a = stores[0]
        await a.put_datasource(Datasource("ds1"))
        for i in range(50):
            await make_job(a, "ds1", f"j{i}", Status.COMPLETE)
        last = await a.last_seq()
        await make_job(a, "ds1", "open")
        cutoff = now_ms() + 1

        async def drain(s: Store) -> int:
            total = 0
            while (deleted := await s.purge(cutoff, limit=4)) > 0:
                total += deleted
            return total

        counts = await asyncio.gather(*(drain(s) for s in stores))
        assert sum(counts) == 50
        for s in stores:
            assert await s.purged_through() == last
            assert [e.job for e in await whole_log(s, "ds1")] == ["open"]
    finally:
        for s in stores:
            await s.close()
        await _drop_schema(pg_schema)


async def test_sqlite_upgrade_fills_in_updated_at(tmp_path: Path) -> None:
    """Jobs written before schema 3 get their ``updated_at`` column from their record."""
    import sqlite3

    from jobqueue_store import codec
    from jobqueue_store.storage.sqlite import SQLiteStore, _migrate, migrations

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        _migrate(db, migrations()[:2])
        record = JobRecord(
            datasource_id="ds1",
            job="j",
            client="c1",
            status=Status.COMPLETE,
            request={},
            cancel_requested=False,
            version=2,
            submitted_at=1000,
            updated_at=2000,
        )
        db.execute("INSERT INTO datasources (id) VALUES ('ds1')")
        db.execute(
            "INSERT INTO jobs (datasource_id, job, client, status, record) VALUES (?, ?, ?, ?, ?)",
            ("ds1", "j", "c1", "complete", codec.dumps(record.to_wire())),
        )
    finally:
        db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.get_job("ds1", "j") == record
        assert await store.purge(2000) == 0
        assert await store.purge(2001) == 1
    finally:
        await store.close()
