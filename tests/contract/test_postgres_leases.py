"""Several PostgreSQL store processes on one schema: two store objects (each its own pool and
writer, as two processes have) race claims and fire timers at once. No job is ever held by two
leases, and each due item fires exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from jobqueue_store.models import Datasource, Dispatch, JobRecord, Status
from jobqueue_store.storage.postgres import PostgresStore
from jobqueue_store.timers import ManualClock
from tests.conftest import PG_DSN, _drop_schema

JOBS = 300
LEASE = Datasource("lq", dispatch=Dispatch.LEASE, lease_seconds=30, max_attempts=5)


@pytest.fixture
def clock() -> ManualClock:
    """The clock of both stores."""
    return ManualClock()


@pytest.fixture
async def pair(pg_schema: str, clock: ManualClock) -> AsyncIterator[list[PostgresStore]]:
    """Two open stores on one schema, with the lease datasource ``lq`` declared."""
    stores = [PostgresStore(PG_DSN, schema=pg_schema, clock=clock) for _ in range(2)]
    for store in stores:
        await store.open()
    await stores[0].put_datasource(LEASE)
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()
        await _drop_schema(pg_schema)


async def submit_all(store: PostgresStore, n: int = JOBS, timeout: int | None = None) -> None:
    """Submit ``n`` jobs concurrently (they group-commit)."""
    await asyncio.gather(*(store.submit("lq", f"j{i:04d}", "app", i, timeout) for i in range(n)))


async def drain(store: PostgresStore, worker: str, out: list[tuple[str, JobRecord]]) -> None:
    """Claim until nothing is left, recording every claim."""
    while True:
        jobs = await store.claim("lq", worker, 7)
        if not jobs:
            return
        out.extend((worker, job) for job in jobs)


async def test_racing_claims_never_hold_a_job_twice(pair: list[PostgresStore]) -> None:
    await submit_all(pair[0])
    claims: list[tuple[str, JobRecord]] = []
    await asyncio.gather(
        *(drain(store, f"w{n}-{i}", claims) for n, store in enumerate(pair) for i in range(4))
    )
    per_job = Counter(job.job for _, job in claims)
    assert len(per_job) == JOBS and set(per_job.values()) == {1}, "each job claimed once"
    assert {worker[:2] for worker, _ in claims} == {"w0", "w1"}, "both stores claimed"
    for worker, job in claims:
        stored = await pair[1].get_job("lq", job.job)
        assert stored is not None and stored.lease is not None
        assert (stored.lease.id, stored.lease.worker) == (job.lease.id if job.lease else "", worker)
    events = await pair[0].events_after("lq", 0, limit=10 * JOBS)
    accepted = Counter(e.job for e in events if e.record.status is Status.ACCEPTED)
    assert set(accepted.values()) == {1}, "one claim event per job"


async def test_racing_timer_rounds_fire_each_due_item_once(
    pair: list[PostgresStore], clock: ManualClock
) -> None:
    await submit_all(pair[0])
    claims: list[tuple[str, JobRecord]] = []
    await drain(pair[1], "w", claims)
    clock.advance(30_000)  # every lease expires

    async def rounds(store: PostgresStore) -> int:
        fired = 0
        for _ in range(30):
            fired += await store.fire_due(limit=25)
        return fired

    fired = await asyncio.gather(*(rounds(store) for store in pair for _ in range(3)))
    assert sum(fired) == JOBS, fired
    assert sum(1 for f in fired if f) >= 2, "several rounds fired"
    assert await pair[0].fire_due() == 0
    events = await pair[0].events_after("lq", 0, limit=10 * JOBS)
    retried = Counter(e.job for e in events if e.record.status is Status.RETRYING)
    assert len(retried) == JOBS and set(retried.values()) == {1}, "each expiry fired once"


async def test_claims_racing_expiry_and_deadlines(
    pair: list[PostgresStore], clock: ManualClock
) -> None:
    """Claims on one store while both fire expiries and deadlines: every job ends up either
    held by exactly one lease or taken back once, and each deadline's cancel entry is single."""
    await submit_all(pair[0], 100, timeout=60)
    first: list[tuple[str, JobRecord]] = []
    await drain(pair[0], "early", first)
    clock.advance(60_000)  # leases expired and deadlines passed

    async def fire(store: PostgresStore) -> None:
        for _ in range(20):
            await store.fire_due(limit=10)

    late: list[tuple[str, JobRecord]] = []
    await asyncio.gather(fire(pair[0]), fire(pair[1]), drain(pair[1], "late", late))
    while await pair[0].fire_due():
        pass
    events = await pair[0].events_after("lq", 0, limit=10_000)
    cancels = Counter(e.job for e in events if e.type == "cancel")
    assert len(cancels) == 100 and set(cancels.values()) == {1}, "one cancel entry per deadline"
    for e in events:
        if e.type == "cancel":
            assert e.data is not None and e.data["reason"] == "timeout"
    for i in range(100):
        rec = await pair[1].get_job("lq", f"j{i:04d}")
        assert rec is not None and rec.status is Status.CANCELLED, rec
