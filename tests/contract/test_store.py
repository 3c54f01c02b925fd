"""The Store contract (storage/base.py), run against every backend through the ``store`` fixture.

Everything here is backend-neutral except the last section, which exercises SQLite's own failure
handling on a real database file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from jobqueue_store import errors
from jobqueue_store.models import Datasource, Event, Status, StatusUpdate
from jobqueue_store.storage.base import Store
from tests.contract.conftest import Opener, Reopen
from tests.cycles import cyclic_garbage


@pytest.fixture
async def ds(store: Store) -> str:
    """A declared datasource."""
    await store.put_datasource(Datasource("ds1", "the first queue"))
    return "ds1"


def collect(store: Store) -> list[Event]:
    """Install a listener on ``store`` and return the list it fills."""
    seen: list[Event] = []

    def listener(events: Sequence[Event]) -> None:
        seen.extend(events)

    store.set_listener(listener)
    return seen


async def settled(seen: list[Event], count: int) -> list[Event]:
    """``seen`` once it holds ``count`` events (a backend may deliver them from another task),
    bounded so that a missing event fails the test instead of hanging it."""
    for _ in range(500):
        if len(seen) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # let a duplicate, if any, arrive too
    return seen


def update(status: Status, **kw: Any) -> StatusUpdate:
    """A status update; ``response=`` sets ``has_response`` too."""
    if "response" in kw:
        kw["has_response"] = True
    return StatusUpdate(status, **kw)


# datasources ------------------------------------------------------------------------------------
async def test_datasource_put_get_list_replace(store: Store) -> None:
    assert await store.list_datasources() == []
    assert await store.get_datasource("b") is None
    schema = {"type": "object", "required": ["x"]}
    b = await store.put_datasource(Datasource("b", "bee", schema))
    a = await store.put_datasource(Datasource("a", "ay"))
    assert b == Datasource("b", "bee", schema)
    assert await store.get_datasource("b") == b
    assert await store.list_datasources() == [a, b]

    replaced = await store.put_datasource(Datasource("b", "new text"))
    assert await store.get_datasource("b") == replaced == Datasource("b", "new text", None)
    assert [d.id for d in await store.list_datasources()] == ["a", "b"]


async def test_datasources_survive_reopen(store: Store, reopen: Reopen) -> None:
    await store.put_datasource(Datasource("a", "ay", {"type": "object"}))
    again = await reopen()
    assert await again.get_datasource("a") == Datasource("a", "ay", {"type": "object"})


# submit -----------------------------------------------------------------------------------------
async def test_submit_new(store: Store, ds: str) -> None:
    seen = collect(store)
    before = await store.last_seq()
    record, created = await store.submit(ds, "j1", "alice", {"x": 1})
    assert created is True
    assert record.status is Status.SUBMITTED
    assert record.version == 1
    assert (record.job, record.client, record.datasource_id) == ("j1", "alice", ds)
    assert record.request == {"x": 1}
    assert record.cancel_requested is False
    assert record.submitted_at == record.updated_at > 0
    assert await store.get_job(ds, "j1") == record

    events = await store.events_after(ds, before)
    assert len(events) == 1
    event = events[0]
    assert event.type == "request"
    assert (event.job, event.client, event.datasource_id) == ("j1", "alice", ds)
    assert event.data == {"job": "j1", "client": "alice", "request": {"x": 1}}
    assert event.record == record
    assert event.timestamp == record.submitted_at
    assert event.seq == await store.last_seq() > before
    assert await settled(seen, 1) == events


async def test_submit_repeat_is_idempotent(store: Store, ds: str) -> None:
    first, _ = await store.submit(ds, "j1", "alice", {"a": 1, "b": [1, 2]})
    seq = await store.last_seq()
    again, created = await store.submit(ds, "j1", "alice", {"b": [1, 2], "a": 1})
    assert created is False
    assert again == first
    assert await store.last_seq() == seq


async def test_submit_different_request_conflicts(store: Store, ds: str) -> None:
    first, _ = await store.submit(ds, "j1", "alice", {"x": 1})
    seq = await store.last_seq()
    with pytest.raises(errors.Conflict):
        await store.submit(ds, "j1", "alice", {"x": 2})
    with pytest.raises(errors.Conflict):
        await store.submit(ds, "j1", "bob", {"x": 1})
    assert await store.get_job(ds, "j1") == first
    assert await store.last_seq() == seq


async def test_same_job_id_on_two_datasources_is_two_jobs(store: Store, ds: str) -> None:
    await store.put_datasource(Datasource("ds2"))
    a, created_a = await store.submit(ds, "j1", "alice", 1)
    b, created_b = await store.submit("ds2", "j1", "bob", 2)
    assert created_a and created_b
    assert (await store.get_job(ds, "j1"), await store.get_job("ds2", "j1")) == (a, b)


async def test_unknown_datasource_and_job(store: Store, ds: str) -> None:
    with pytest.raises(errors.NotFound, match="PUT /jobs/nope"):
        await store.submit("nope", "j1", "alice", {})
    with pytest.raises(errors.NotFound):
        await store.cancel("nope", "j1", "alice")
    with pytest.raises(errors.NotFound):
        await store.update_status("nope", "j1", update(Status.ACCEPTED))
    with pytest.raises(errors.NotFound):
        await store.cancel(ds, "missing", "alice")
    with pytest.raises(errors.NotFound):
        await store.update_status(ds, "missing", update(Status.ACCEPTED))
    assert await store.get_job(ds, "missing") is None
    assert await store.get_job("nope", "missing") is None
    assert await store.last_seq() == 0


# cancel -----------------------------------------------------------------------------------------
async def test_cancel(store: Store, ds: str) -> None:
    record, _ = await store.submit(ds, "j1", "alice", {})
    seq = await store.last_seq()
    cancelled = await store.cancel(ds, "j1", "alice")
    assert cancelled.cancel_requested is True
    assert cancelled.version == record.version + 1
    assert cancelled.status is Status.SUBMITTED
    assert cancelled.updated_at >= record.updated_at
    assert await store.get_job(ds, "j1") == cancelled

    again = await store.cancel(ds, "j1", "alice")
    assert again == cancelled
    events = await store.events_after(ds, seq)
    assert [e.type for e in events] == ["cancel"]
    assert events[0].data == {"job": "j1", "client": "alice"}
    assert events[0].record == cancelled
    assert [e.type for e in await store.entries_since(ds, 0)] == ["request", "cancel"]


async def test_cancel_other_client_forbidden_admin_allowed(store: Store, ds: str) -> None:
    await store.submit(ds, "j1", "alice", {})
    with pytest.raises(errors.Forbidden):
        await store.cancel(ds, "j1", "bob")
    assert (await store.get_job(ds, "j1")).cancel_requested is False  # type: ignore[union-attr]
    by_admin = await store.cancel(ds, "j1", None)
    assert by_admin.cancel_requested is True
    assert by_admin.version == 2


async def test_cancel_terminal_changes_nothing(store: Store, ds: str) -> None:
    await store.submit(ds, "j1", "alice", {})
    done = await store.update_status(ds, "j1", update(Status.COMPLETE, response=42))
    seq = await store.last_seq()
    assert await store.cancel(ds, "j1", "alice") == done
    assert await store.last_seq() == seq


# update_status ----------------------------------------------------------------------------------
async def test_update_status_transitions(store: Store, ds: str) -> None:
    seen = collect(store)
    await store.submit(ds, "j1", "alice", {"q": 1})
    accepted = await store.update_status(ds, "j1", update(Status.ACCEPTED, progress=0.5))
    assert accepted.status is Status.ACCEPTED
    assert accepted.progress == 0.5
    assert accepted.version == 2

    retrying = await store.update_status(ds, "j1", update(Status.RETRYING, error="flaky"))
    assert retrying.version == 3
    assert retrying.error == "flaky"
    assert retrying.progress is None  # omitted fields are cleared

    done = await store.update_status(ds, "j1", update(Status.COMPLETE, response={"r": [1]}))
    assert done.version == 4
    assert done.has_response and done.response == {"r": [1]}
    assert done.error is None and done.progress is None
    assert done.request == {"q": 1}
    assert done.updated_at >= retrying.updated_at >= accepted.updated_at
    assert await store.get_job(ds, "j1") == done

    seq = await store.last_seq()
    # An identical repeat of the terminal update: the record, and no new event.
    assert await store.update_status(ds, "j1", update(Status.COMPLETE, response={"r": [1]})) == done
    assert await store.last_seq() == seq
    for other in (
        update(Status.FAILED, error="x"),
        update(Status.COMPLETE, response={"r": [2]}),
        update(Status.ACCEPTED),
    ):
        with pytest.raises(errors.Conflict):
            await store.update_status(ds, "j1", other)
    assert await store.get_job(ds, "j1") == done
    assert await store.last_seq() == seq

    events = await store.events_after(ds, 0)
    assert [e.type for e in events] == ["request", "status", "status", "status"]
    assert [e.record.version for e in events] == [1, 2, 3, 4]
    assert all(e.data is None for e in events[1:])
    assert await settled(seen, 4) == events
    # Status events are not request-stream entries.
    assert [e.type for e in await store.entries_since(ds, 0)] == ["request"]


async def test_non_terminal_repeat_changes_nothing(store: Store, ds: str) -> None:
    await store.submit(ds, "j1", "alice", {})
    accepted = await store.update_status(ds, "j1", update(Status.ACCEPTED, progress=0.1))
    seq = await store.last_seq()
    assert await store.update_status(ds, "j1", update(Status.ACCEPTED, progress=0.1)) == accepted
    assert await store.last_seq() == seq
    later = await store.update_status(ds, "j1", update(Status.ACCEPTED, progress=0.2))
    assert later.version == accepted.version + 1


async def test_cancel_then_driver_cancels(store: Store, ds: str) -> None:
    await store.submit(ds, "j1", "alice", {})
    await store.cancel(ds, "j1", "alice")
    final = await store.update_status(ds, "j1", update(Status.CANCELLED))
    assert final.status is Status.CANCELLED
    assert final.cancel_requested is True
    assert final.version == 3


# the log ----------------------------------------------------------------------------------------
async def test_seq_and_timestamps(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.put_datasource(Datasource(name))
    for i in range(30):
        dsid = "abc"[i % 3]
        await store.submit(dsid, f"j{i}", "alice", i)
        if i % 2:
            await store.update_status(dsid, f"j{i}", update(Status.ACCEPTED))
        if i % 5 == 0:
            await store.cancel(dsid, f"j{i}", "alice")
    all_events: list[Event] = []
    for name in ("a", "b", "c"):
        events = await store.events_after(name, 0)
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps), name
        assert [e.seq for e in events] == sorted({e.seq for e in events})
        all_events += events
    seqs = sorted(e.seq for e in all_events)
    assert len(set(seqs)) == len(seqs) == 30 + 15 + 6
    assert seqs[-1] == await store.last_seq()


async def test_entries_since_pages_without_gap_or_duplicate(store: Store, ds: str) -> None:
    n = 2500
    # Concurrent submits: many entries share one millisecond. Updates add status events, which
    # the request stream must skip.
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                store.submit(ds, f"j{i:05}", f"c{i % 7}", {"i": i})
                for i in range(start, start + 500)
            )
        )
        await store.update_status(ds, f"j{start:05}", update(Status.ACCEPTED))
    await store.cancel(ds, "j00001", "c1")

    stream = [e for e in await store.events_after(ds, 0, limit=10_000) if e.in_request_stream]
    assert len(stream) == n + 1
    stamps = [e.timestamp for e in stream]
    assert len(set(stamps)) < len(stamps)  # the test really covers shared milliseconds

    pages: list[list[Event]] = []
    after = 0
    while True:
        page = await store.entries_since(ds, 0, after_seq=after, limit=97)
        if not page:
            break
        assert len(page) <= 97
        pages.append(page)
        after = page[-1].seq
    got = [e for page in pages for e in page]
    assert [e.seq for e in got] == [e.seq for e in stream]
    assert got == stream
    assert {e.type for e in got} == {"request", "cancel"}

    # The timestamp bound: every entry at or after a shared millisecond, paging from inside it.
    middle = stamps[len(stamps) // 2]
    expected = [e.seq for e in stream if e.timestamp >= middle]
    first = await store.entries_since(ds, middle, limit=10)
    assert [e.seq for e in first] == expected[:10]
    rest = await store.entries_since(ds, middle, after_seq=first[-1].seq, limit=10_000)
    assert [e.seq for e in first + rest] == expected
    assert await store.entries_since(ds, stamps[-1] + 1) == []
    assert [e.seq for e in await store.entries_since(ds, 0, limit=3)] == expected_first(stream, 3)


def expected_first(stream: list[Event], k: int) -> list[int]:
    """The first ``k`` seqs of ``stream``."""
    return [e.seq for e in stream[:k]]


async def test_latest_entry(store: Store, ds: str) -> None:
    await store.put_datasource(Datasource("other"))
    assert await store.latest_entry(ds) is None
    await store.submit(ds, "j1", "alice", 1)
    latest = await store.latest_entry(ds)
    assert latest is not None and (latest.type, latest.job) == ("request", "j1")
    await store.submit(ds, "j2", "bob", 2)
    await store.cancel(ds, "j1", "alice")
    await store.update_status(ds, "j2", update(Status.ACCEPTED))  # not a stream entry
    await store.submit("other", "j9", "alice", 9)
    latest = await store.latest_entry(ds)
    assert latest is not None
    assert (latest.type, latest.job, latest.data) == (
        "cancel",
        "j1",
        {"job": "j1", "client": "alice"},
    )
    assert latest.stream_entry()["datasource_id"] == ds


async def test_events_after_filters(store: Store, ds: str) -> None:
    await store.put_datasource(Datasource("other"))
    await store.submit(ds, "a1", "alice", 1)
    await store.submit(ds, "b1", "bob", 2)
    await store.submit("other", "a9", "alice", 3)
    await store.update_status(ds, "a1", update(Status.ACCEPTED))
    await store.cancel(ds, "b1", "bob")
    await store.update_status(ds, "b1", update(Status.CANCELLED))

    every = await store.events_after(ds, 0)
    assert [(e.job, e.type) for e in every] == [
        ("a1", "request"),
        ("b1", "request"),
        ("a1", "status"),
        ("b1", "cancel"),
        ("b1", "status"),
    ]
    alice = await store.events_after(ds, 0, client="alice")
    assert [(e.job, e.type) for e in alice] == [("a1", "request"), ("a1", "status")]
    stream = await store.events_after(ds, 0, stream_only=True)
    assert [(e.job, e.type) for e in stream] == [
        ("a1", "request"),
        ("b1", "request"),
        ("b1", "cancel"),
    ]
    bob_stream = await store.events_after(ds, 0, client="bob", stream_only=True)
    assert [e.type for e in bob_stream] == ["request", "cancel"]

    assert await store.events_after(ds, every[2].seq) == every[3:]
    assert await store.events_after(ds, 0, limit=2) == every[:2]
    assert await store.events_after(ds, every[-1].seq) == []
    notification = every[-1].notification()
    assert notification["data"]["status"] == "cancelled"
    assert notification["seq"] == every[-1].seq


# listing ----------------------------------------------------------------------------------------
async def test_list_jobs_paging(store: Store, ds: str) -> None:
    for i in range(12):
        await store.submit(ds, f"j{i:02}", "alice" if i % 3 else "bob", i)
    for i in (1, 4, 7):
        await store.update_status(ds, f"j{i:02}", update(Status.COMPLETE))

    alice = [f"j{i:02}" for i in reversed(range(12)) if i % 3]
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.list_jobs(ds, "alice", limit=3, cursor=cursor)
        pages.append([r.job for r in page.jobs])
        cursor = page.next_cursor
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert [j for p in pages for j in p] == alice
    assert all(len(p) == 3 for p in pages[:-1])

    everyone = await store.list_jobs(ds, None, limit=100)
    assert [r.job for r in everyone.jobs] == [f"j{i:02}" for i in reversed(range(12))]
    assert everyone.next_cursor is None

    done = await store.list_jobs(ds, "alice", status=Status.COMPLETE, limit=2)
    assert [r.job for r in done.jobs] == ["j07", "j04"]
    assert done.next_cursor is not None
    rest = await store.list_jobs(ds, "alice", status=Status.COMPLETE, cursor=done.next_cursor)
    assert [r.job for r in rest.jobs] == ["j01"]
    assert rest.next_cursor is None
    assert rest.jobs[0].status is Status.COMPLETE

    assert (await store.list_jobs(ds, "carol")).jobs == []
    assert (await store.list_jobs("nope", "alice")).jobs == []


@pytest.mark.parametrize("cursor", ["", "abc", "-1", "1.5", "9" * 40, "\x00"])
async def test_list_jobs_bad_cursor(store: Store, ds: str, cursor: str) -> None:
    await store.submit(ds, "j1", "alice", 1)
    with pytest.raises(errors.BadRequest):
        await store.list_jobs(ds, "alice", cursor=cursor)


# listener, concurrency, durability -------------------------------------------------------------
async def test_listener_gets_every_event_once_in_order(store: Store, ds: str) -> None:
    seen = collect(store)
    await asyncio.gather(*(store.submit(ds, f"j{i}", "alice", i) for i in range(50)))
    await asyncio.gather(
        *(store.update_status(ds, f"j{i}", update(Status.ACCEPTED)) for i in range(0, 50, 2)),
        *(store.cancel(ds, f"j{i}", "alice") for i in range(1, 50, 2)),
        store.submit(ds, "j0", "alice", 0),  # a repeat: no event
    )
    committed = await store.events_after(ds, 0, limit=1000)
    assert len(committed) == 100
    assert await settled(seen, 100) == committed
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


async def test_concurrent_submits_are_durable(store: Store, ds: str, reopen: Reopen) -> None:
    results = await asyncio.gather(
        *(store.submit(ds, f"job-{i}", f"client-{i % 5}", {"n": i}) for i in range(200))
    )
    assert all(created for _, created in results)
    seqs = [e.seq for e in await store.events_after(ds, 0, limit=1000)]
    assert len(seqs) == 200 == len(set(seqs))

    again = await reopen()
    for i in range(200):
        record = await again.get_job(ds, f"job-{i}")
        assert record == results[i][0]
    assert [e.seq for e in await again.events_after(ds, 0, limit=1000)] == seqs
    assert await again.last_seq() == seqs[-1]
    # Timestamps and seq keep going after a restart.
    record, _ = await again.submit(ds, "after", "client-0", {})
    assert record.submitted_at >= max(r.submitted_at for r, _ in results)
    assert await again.last_seq() > seqs[-1]


async def test_failing_command_does_not_affect_its_batch(store: Store, ds: str) -> None:
    await store.submit(ds, "taken", "alice", {"x": 1})
    await store.update_status(ds, "taken", update(Status.COMPLETE))
    await store.submit(ds, "pending", "alice", {})
    before = await store.last_seq()
    results = await asyncio.gather(
        store.submit(ds, "ok1", "alice", 1),
        store.submit(ds, "taken", "alice", {"x": 2}),  # Conflict
        store.cancel(ds, "pending", "bob"),  # Forbidden
        store.update_status(ds, "missing", update(Status.ACCEPTED)),  # NotFound
        store.update_status(ds, "taken", update(Status.FAILED)),  # Conflict: terminal
        store.submit("nope", "x", "alice", 1),  # NotFound
        store.cancel(ds, "pending", "alice"),
        store.submit(ds, "ok2", "bob", 2),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "tuple",
        "Conflict",
        "Forbidden",
        "NotFound",
        "Conflict",
        "NotFound",
        "JobRecord",
        "tuple",
    ]
    events = await store.events_after(ds, before)
    assert sorted((e.job, e.type) for e in events) == [
        ("ok1", "request"),
        ("ok2", "request"),
        ("pending", "cancel"),
    ]
    pending = await store.get_job(ds, "pending")
    assert pending is not None and pending.cancel_requested and pending.version == 2
    assert await store.get_job(ds, "ok1") == results[0][0]  # type: ignore[index]
    assert await store.get_job(ds, "ok2") == results[7][0]  # type: ignore[index]
    taken = await store.get_job(ds, "taken")
    assert taken is not None and taken.status is Status.COMPLETE and taken.request == {"x": 1}


async def test_writes_after_close_are_unavailable(store: Store, ds: str) -> None:
    await store.close()
    with pytest.raises(errors.Unavailable):
        await store.submit(ds, "j1", "alice", 1)
    with pytest.raises(errors.Unavailable):
        await store.put_datasource(Datasource("x"))


async def test_close_finishes_pending_writes(store: Store, ds: str, reopen: Reopen) -> None:
    tasks = [asyncio.create_task(store.submit(ds, f"j{i}", "alice", i)) for i in range(20)]
    await asyncio.sleep(0)  # every submit is queued
    again = await reopen()
    assert all(t.done() and t.result()[1] for t in tasks)
    assert len((await again.list_jobs(ds, None, limit=100)).jobs) == 20


async def test_ping_and_migrate(store: Store) -> None:
    await store.ping()
    version = await store.migrate()
    assert version >= 1
    assert await store.migrate() == version


# SQLite only: a failing commit ------------------------------------------------------------------
async def test_sqlite_failed_commit_fails_the_batch(tmp_path: Path) -> None:
    from jobqueue_store.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "full.sqlite3")
    await store.open()
    try:
        seen = collect(store)
        await store.put_datasource(Datasource("ds"))
        await store.submit("ds", "before", "alice", 1)
        seq = await store.last_seq()
        conn = store._writer_conn
        assert conn is not None
        # A real "database or disk is full": the file may not grow by a single page.
        async with conn.execute("PRAGMA page_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        await conn.execute(f"PRAGMA max_page_count = {row[0]}")
        big = "x" * 100_000
        results = await asyncio.gather(
            *(store.submit("ds", f"j{i}", "alice", big) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, errors.Unavailable) for r in results), results
        assert "full" in str(results[0])
        assert await store.last_seq() == seq
        assert await store.get_job("ds", "j0") is None

        # Room again: the store goes on, with no trace of the failed batch.
        await conn.execute("PRAGMA max_page_count = 1073741823")
        record, created = await store.submit("ds", "j0", "alice", big)
        assert created and record.version == 1
        assert [e.job for e in await settled(seen, 2)] == ["before", "j0"]
        assert [e.seq for e in seen] == sorted({e.seq for e in seen})
    finally:
        await store.close()


async def test_sqlite_commands_in_one_batch_see_each_other(tmp_path: Path) -> None:
    from jobqueue_store.storage.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "batch.sqlite3")
    await store.open()
    try:
        # Queued in this order before the writer wakes: one batch, applied in order.
        results = await asyncio.gather(
            store.put_datasource(Datasource("ds")),
            store.submit("ds", "j", "alice", 1),
            store.cancel("ds", "j", "bob"),
            store.cancel("ds", "j", "alice"),
            store.update_status("ds", "j", update(Status.ACCEPTED)),
            store.submit("ds", "j", "alice", 1),
            store.update_status("ds", "j", update(Status.CANCELLED)),
            store.cancel("ds", "j", None),
            return_exceptions=True,
        )
        assert isinstance(results[2], errors.Forbidden)
        records = [r[0] if isinstance(r, tuple) else r for r in results[1:] if r is not results[2]]
        assert [r.version for r in records] == [1, 2, 3, 3, 4, 4]  # type: ignore[union-attr]
        assert [e.type for e in await store.events_after("ds", 0)] == [
            "request",
            "cancel",
            "status",
            "status",
        ]
    finally:
        await store.close()


class _SteppingClock:
    """A clock a test sets to any time, earlier ones included (a wall clock stepped back)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


async def test_writes_and_reads_leave_no_cycles_for_the_collector(store: Store, ds: str) -> None:
    """What the store allocates for a submit, an update, a cancel, a read or a refused write is
    freed as soon as it is unused: none of it waits, as a reference cycle, for the cyclic garbage
    collector (whose collections under load held the event loop for tens of milliseconds)."""
    await store.submit(ds, "warm", "app", {"n": 0})  # caches and statements made once
    await store.update_status(ds, "warm", update(Status.ACCEPTED, progress=0.5))
    await store.cancel(ds, "warm", "app")
    with cyclic_garbage(("jobqueue_store",)) as left:
        for i in range(20):
            await asyncio.gather(
                *(store.submit(ds, f"j{i}-{k}", "app", {"n": i, "k": k}) for k in range(5))
            )
            await store.update_status(ds, f"j{i}-0", update(Status.ACCEPTED, progress=0.5))
            await store.update_status(ds, f"j{i}-1", update(Status.COMPLETE, response={"ok": 1}))
            await store.cancel(ds, f"j{i}-2", "app")
            assert await store.get_job(ds, f"j{i}-3") is not None
            await store.entries_since(ds, 0, limit=10)
            # Refused writes too: the error travels from the writer to the caller.
            with pytest.raises(errors.NotFound):
                await store.update_status(ds, f"nope-{i}", update(Status.ACCEPTED))
            with pytest.raises(errors.Conflict):
                await store.submit(ds, f"j{i}-4", "app", {"other": True})
    assert left == []


async def test_the_request_stream_in_order_when_the_clock_stands_still_or_steps_back(
    opener: Opener,
) -> None:
    """Entries never get a timestamp below an earlier one of their datasource: a clock that
    stands still or steps back gives many entries one timestamp. Every read of the stream
    (pages from inside such a run, with and without a timestamp bound, the driver's replay, the
    latest entry) still returns them in seq order, without gap or duplicate."""
    store = await opener()
    clock = _SteppingClock(1_000_000)
    store.clock = clock
    await store.put_datasource(Datasource("ds1"))
    await store.put_datasource(Datasource("ds2"))
    for i in range(300):
        if i == 100:
            clock.now = 1_000_050  # forward
        if i == 200:
            clock.now = 999_000  # back: entries keep 1_000_050 until the clock passes it
        await store.submit("ds1", f"j{i:03}", "app", {"i": i})
        if i % 3 == 0:
            await store.update_status("ds1", f"j{i:03}", update(Status.ACCEPTED))
        if i % 50 == 0:
            await store.submit("ds2", f"k{i:03}", "app", {"i": i})
    clock.now = 1_000_060
    await store.cancel("ds1", "j005", "app")

    stream = await store.events_after("ds1", 0, stream_only=True, limit=10_000)
    assert [(e.type, e.job) for e in stream] == [
        *(("request", f"j{i:03}") for i in range(300)),
        ("cancel", "j005"),
    ]
    assert [e.seq for e in stream] == sorted(e.seq for e in stream)
    stamps = [e.timestamp for e in stream]
    assert stamps == sorted(stamps)
    assert stamps.count(1_000_050) == 200  # the run the test is about

    def seqs(events: Sequence[Event]) -> list[int]:
        return [e.seq for e in events]

    everything = await store.events_after("ds1", 0, limit=10_000)
    for after in (0, stream[0].seq, stream[150].seq, stream[250].seq, stream[299].seq):
        expected = [e.seq for e in stream if e.seq > after]
        assert seqs(await store.entries_since("ds1", 0, after_seq=after, limit=10_000)) == expected
        assert seqs(await store.entries_since("ds1", 0, after_seq=after, limit=7)) == expected[:7]
        replay = await store.events_after("ds1", after, stream_only=True, limit=10_000)
        assert seqs(replay) == expected
        page = await store.events_after("ds1", after, stream_only=True, limit=5)
        assert seqs(page) == expected[:5]
        wire = await store.entries_since_wire("ds1", 0, after_seq=after, limit=10_000)
        assert [seq for seq, _ in wire] == expected
        # A status event's seq is a resume point too.
        status_after = [e.seq for e in everything if e.type == "status" and e.seq > after]
        if status_after:
            point = status_after[0]
            expected = [e.seq for e in stream if e.seq > point]
            assert seqs(await store.entries_since("ds1", 0, after_seq=point, limit=10_000)) == (
                expected
            )
        # So is a seq of another datasource's event.
        other = [e.seq for e in await store.events_after("ds2", 0) if e.seq > after]
        if other:
            expected = [e.seq for e in stream if e.seq > other[0]]
            page = await store.entries_since("ds1", 0, after_seq=other[0], limit=10_000)
            assert seqs(page) == expected
    # The timestamp bound inside the run, paging through it.
    got: list[int] = []
    after = 0
    while page := await store.entries_since("ds1", 1_000_050, after_seq=after, limit=9):
        got += seqs(page)
        after = page[-1].seq
    assert got == [e.seq for e in stream if e.timestamp >= 1_000_050]
    assert await store.entries_since("ds1", 1_000_061) == []
    latest = await store.latest_entry("ds1")
    assert latest is not None and (latest.type, latest.seq) == ("cancel", stream[-1].seq)
    other = await store.events_after("ds2", 0, stream_only=True)
    assert [e.job for e in other] == [f"k{i:03}" for i in range(0, 300, 50)]
