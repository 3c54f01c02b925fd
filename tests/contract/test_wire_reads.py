"""The stored-text reads (``get_job_wire``, ``latest_entry_wire``, ``entries_since_wire``): the
same JSON as the decoded reads, on every backend, whatever the job went through."""

from __future__ import annotations

import orjson
import pytest

from jobqueue_store import codec
from jobqueue_store.models import Datasource, Dispatch, Status, StatusUpdate
from jobqueue_store.storage.base import Store
from jobqueue_store.timers import ManualClock
from tests.contract.conftest import Opener

# Values a JSON text must carry exactly: unicode, escapes, NUL inside a string, big integers,
# floats, nesting, an empty key.
AWKWARD = {
    "text": 'caf\u00e9 \u2603 "quoted" \\ back\nline\t\u0000nul',
    "big": 2**63 - 1,
    "neg": -(2**63),
    "float": 0.1,
    "nested": [{"a": [1, 2, {"b": None}]}, [], {}],
    "": "empty key",
}


@pytest.fixture
async def ds(store: Store) -> str:
    """A declared datasource."""
    await store.put_datasource(Datasource("wq", "wire reads"))
    return "wq"


async def assert_job_wire(store: Store, ds: str, job: str) -> None:
    record = await store.get_job(ds, job)
    assert record is not None
    found = await store.get_job_wire(ds, job)
    assert found is not None
    client, text = found
    assert client == record.client
    assert isinstance(text, bytes)
    assert orjson.loads(text) == record.to_wire()


async def test_job_wire_follows_every_change(store: Store, ds: str) -> None:
    assert await store.get_job_wire(ds, "none") is None
    assert await store.get_job_wire("undeclared", "none") is None
    await store.submit(ds, "j1", "alice", AWKWARD, 30)
    await assert_job_wire(store, ds, "j1")
    await store.update_status(ds, "j1", StatusUpdate(Status.ACCEPTED, progress=0.5))
    await assert_job_wire(store, ds, "j1")
    await store.cancel(ds, "j1", "alice")
    await assert_job_wire(store, ds, "j1")
    await store.update_status(
        ds,
        "j1",
        StatusUpdate(
            Status.FAILED, error="it broke: caf\u00e9", response=AWKWARD, has_response=True
        ),
    )
    await assert_job_wire(store, ds, "j1")
    record = await store.get_job(ds, "j1")
    assert record is not None and record.status is Status.FAILED


async def test_latest_and_since_wire_equal_the_entries(store: Store, ds: str) -> None:
    assert await store.latest_entry_wire(ds) is None
    assert await store.entries_since_wire(ds, 0) == []
    for i in range(30):
        await store.submit(ds, f"j{i:02}", f"c{i % 3}", {"i": i, "v": AWKWARD})
        if i % 4 == 0:
            await store.update_status(ds, f"j{i:02}", StatusUpdate(Status.ACCEPTED))
        if i % 5 == 0:
            await store.cancel(ds, f"j{i:02}", f"c{i % 3}")
    entries = await store.entries_since(ds, 0, limit=1000)
    assert len(entries) == 30 + 6
    for after, limit in ((0, 1000), (0, 7), (entries[10].seq, 5), (entries[-1].seq, 10)):
        wire = await store.entries_since_wire(ds, 0, after_seq=after, limit=limit)
        expected = await store.entries_since(ds, 0, after_seq=after, limit=limit)
        assert [seq for seq, _ in wire] == [e.seq for e in expected]
        assert [orjson.loads(text) for _, text in wire] == [e.stream_entry() for e in expected]
    # The timestamp bound and a page over the inline size go the same way.
    middle = entries[len(entries) // 2].timestamp
    wire = await store.entries_since_wire(ds, middle, limit=5000)
    assert [orjson.loads(t) for _, t in wire] == [
        e.stream_entry() for e in await store.entries_since(ds, middle, limit=5000)
    ]
    page = b"[" + b",".join(text for _, text in wire) + b"]"
    assert codec.loads(page) == [e.stream_entry() for e in entries if e.timestamp >= middle]
    latest = await store.latest_entry_wire(ds)
    assert latest is not None
    assert orjson.loads(latest) == entries[-1].stream_entry()


async def test_job_wire_follows_claims_expiries_and_purges(
    opener: Opener, clock: ManualClock
) -> None:
    """Changes made by leases, timers and retention (set-based writes on some backends) show in
    the next stored-text read, even right after a read of the same job."""
    store = await opener()
    await store.put_datasource(
        Datasource("lw", "leased", dispatch=Dispatch.LEASE, lease_seconds=30, max_attempts=3)
    )
    for job in ("a", "b"):
        await store.submit("lw", job, "app", {"n": job})
        await assert_job_wire(store, "lw", job)
    (claimed,) = await store.claim("lw", "w1", 1)
    await assert_job_wire(store, "lw", claimed.job)
    clock.advance(31_000)
    assert await store.fire_due() >= 1  # the lease expires: the job is offered again
    await assert_job_wire(store, "lw", claimed.job)
    record = await store.get_job("lw", claimed.job)
    assert record is not None and record.lease is None
    await store.cancel("lw", "b", "app")
    await assert_job_wire(store, "lw", "b")
    before = await store.get_job("lw", "b")
    assert before is not None and before.status is Status.CANCELLED
    clock.advance(1000)
    assert await store.purge(clock.now_ms()) == 1
    assert await store.get_job_wire("lw", "b") is None
