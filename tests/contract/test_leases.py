"""Leases, redelivery, deadlines and the stream worker slot (storage/base.py), on every backend.

Time is a :class:`~jobqueue_store.timers.ManualClock` given to the store: tests move it and call
``fire_due`` instead of sleeping for a lease or a deadline.
"""

from __future__ import annotations

import asyncio

import pytest

from jobqueue_store import errors
from jobqueue_store.models import Datasource, Dispatch, JobRecord, Status, StatusUpdate
from jobqueue_store.storage.base import Store
from jobqueue_store.timers import ManualClock
from tests.contract.conftest import Opener

LEASE = Datasource("lq", "leased", dispatch=Dispatch.LEASE, lease_seconds=30, max_attempts=3)
STREAM = Datasource("sq", "streamed", lease_seconds=20)


@pytest.fixture
async def store(opener: Opener) -> Store:
    """A store on the manual clock with a lease datasource ``lq`` and a stream one ``sq``."""
    s = await opener()
    await s.put_datasource(LEASE)
    await s.put_datasource(STREAM)
    return s


async def submit_n(store: Store, n: int, dsid: str = "lq", prefix: str = "j") -> list[str]:
    """Submit ``n`` jobs; return their ids in submission order."""
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    for job in ids:
        await store.submit(dsid, job, "app", {"n": job})
    return ids


def held_by(record: JobRecord) -> str:
    """The lease id holding ``record`` (asserting there is one)."""
    assert record.lease is not None, record
    return record.lease.id


async def claim_one(store: Store, worker: str = "w1") -> JobRecord:
    """Claim exactly one job."""
    (job,) = await store.claim("lq", worker, 1)
    return job


# declaring --------------------------------------------------------------------------------------
async def test_settings_round_trip_and_survive_reopen(store: Store, opener: Opener) -> None:
    assert await store.get_datasource("lq") == LEASE
    timed = Datasource("tq", job_timeout=60, cancel_grace=5)
    await store.put_datasource(timed)
    await store.close()
    again = await opener()
    assert await again.get_datasource("lq") == LEASE
    assert await again.get_datasource("tq") == timed
    assert (await again.get_datasource("sq")) == STREAM
    assert {d.id: d.dispatch for d in await again.list_datasources()} == {
        "lq": Dispatch.LEASE,
        "sq": Dispatch.STREAM,
        "tq": Dispatch.STREAM,
    }


# claims -----------------------------------------------------------------------------------------
async def test_claim_takes_the_oldest_by_seq_each_under_its_own_lease(
    store: Store, clock: ManualClock
) -> None:
    ids = await submit_n(store, 5)
    first = await store.claim("lq", "w1", 2)
    assert [j.job for j in first] == ids[:2]
    for job in first:
        assert job.status is Status.ACCEPTED and job.version == 2 and job.attempts == 1
        assert job.lease is not None
        assert (job.lease.worker, job.lease.attempt) == ("w1", 1)
        assert job.lease.expires_at == clock.now_ms() + 30_000
        assert await store.get_job("lq", job.job) == job
    assert first[0].lease != first[1].lease
    second = await store.claim("lq", "w2", 10)
    assert [j.job for j in second] == ids[2:]
    assert await store.claim("lq", "w3", 10) == []
    # one status event per claimed job, after the five request entries
    events = await store.events_after("lq", 0)
    assert [e.type for e in events] == ["request"] * 5 + ["status"] * 5
    assert events[-1].record.lease is not None and events[-1].record.lease.worker == "w2"


async def test_claim_on_a_stream_datasource_is_a_conflict(store: Store) -> None:
    await store.submit("sq", "s1", "app", 1)
    with pytest.raises(errors.Conflict, match="stream datasource") as caught:
        await store.claim("sq", "w1", 1)
    assert caught.value.code == "conflict"
    with pytest.raises(errors.NotFound):
        await store.claim("nope", "w1", 1)


async def test_a_datasource_declared_again_with_another_dispatch_keeps_its_jobs_claimable(
    store: Store, opener: Opener
) -> None:
    """Jobs submitted while a datasource streamed are claimable once it is declared a lease
    datasource, oldest first, whether it switched in the same batch as the submits or later,
    after a restart; jobs submitted under leases stay claimable across a switch there and
    back."""
    await submit_n(store, 3, dsid="sq", prefix="s")
    await store.update_status("sq", "s001", StatusUpdate(status=Status.ACCEPTED))
    await asyncio.gather(
        store.submit("sq", "s003", "app", 3),
        store.put_datasource(Datasource("sq", "now leased", dispatch=Dispatch.LEASE)),
        store.submit("sq", "s004", "app", 4),
    )
    claimed = await store.claim("sq", "w1", 10)
    assert [j.job for j in claimed] == ["s000", "s002", "s003", "s004"]

    await submit_n(store, 2, prefix="x")
    await store.put_datasource(Datasource("lq", "streamed for a while"))
    with pytest.raises(errors.Conflict):
        await store.claim("lq", "w1", 1)
    await store.close()
    again = await opener()
    await again.put_datasource(LEASE)
    assert [j.job for j in await again.claim("lq", "w1", 10)] == ["x000", "x001"]


# updates under a lease --------------------------------------------------------------------------
async def test_every_update_needs_the_current_lease(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 1)
    job = await claim_one(store)
    lease = held_by(job)
    with pytest.raises(errors.LeaseLost, match='must carry the "lease"') as caught:
        await store.update_status("lq", job.job, StatusUpdate(Status.COMPLETE))
    assert (caught.value.code, caught.value.status) == ("lease_lost", 409)
    with pytest.raises(errors.LeaseLost, match="does not hold"):
        await store.update_status("lq", job.job, StatusUpdate(Status.COMPLETE, lease="bogus"))
    clock.advance(10_000)
    rec = await store.update_status("lq", job.job, StatusUpdate(Status.ACCEPTED, lease=lease))
    assert rec.version == job.version, "no change but the renewal: no new version"
    assert rec.lease is not None and rec.lease.expires_at == clock.now_ms() + 30_000
    rec = await store.update_status(
        "lq", job.job, StatusUpdate(Status.ACCEPTED, progress=0.5, lease=lease)
    )
    assert (rec.progress, rec.version) == (0.5, job.version + 1)
    clock.advance(30_000)  # expired, not yet fired: still lost
    with pytest.raises(errors.LeaseLost, match="expired"):
        await store.update_status("lq", job.job, StatusUpdate(Status.COMPLETE, lease=lease))


async def test_terminal_update_ends_the_lease_and_a_repeat_is_idempotent(store: Store) -> None:
    await submit_n(store, 1)
    job = await claim_one(store)
    done = StatusUpdate(Status.COMPLETE, response={"ok": 1}, has_response=True, lease=held_by(job))
    rec = await store.update_status("lq", job.job, done)
    assert rec.status is Status.COMPLETE and rec.lease is None and rec.response == {"ok": 1}
    assert await store.update_status("lq", job.job, done) == rec, "a driver's retry is 200"
    with pytest.raises(errors.Conflict):
        await store.update_status("lq", job.job, StatusUpdate(Status.FAILED, lease=held_by(job)))
    with pytest.raises(errors.LeaseLost):
        await store.heartbeat("lq", job.job, held_by(job))


async def test_heartbeat_renews_without_an_event(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 1)
    job = await claim_one(store)
    before = await store.last_seq()
    clock.advance(20_000)
    rec = await store.heartbeat("lq", job.job, held_by(job))
    assert rec.version == job.version and rec.lease is not None
    assert rec.lease.expires_at == clock.now_ms() + 30_000
    assert await store.last_seq() == before, "a heartbeat appends no event"
    clock.advance(20_000)  # past the first expiry, within the renewed one
    assert await store.fire_due() == 0
    assert (await store.get_job("lq", job.job)) == rec
    with pytest.raises(errors.LeaseLost):
        await store.heartbeat("lq", job.job, "someone-else")
    with pytest.raises(errors.NotFound):
        await store.heartbeat("lq", "nope", held_by(job))
    await store.submit("sq", "s1", "app", 1)
    with pytest.raises(errors.Conflict, match="stream datasource"):
        await store.heartbeat("sq", "s1", "x")


async def test_give_back_with_retry_in(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 1)
    job = await claim_one(store)
    rec = await store.update_status(
        "lq",
        job.job,
        StatusUpdate(Status.RETRYING, error="busy", lease=held_by(job), retry_in=5),
    )
    assert rec.status is Status.RETRYING and rec.lease is None and rec.error == "busy"
    assert rec.retry_at == clock.now_ms() + 5000
    assert await store.claim("lq", "w2", 1) == []
    clock.advance(5000)
    again = await claim_one(store, "w2")
    assert again.job == job.job and again.attempts == 2 and again.error is None
    assert again.lease is not None and again.lease.attempt == 2 and again.lease.id != held_by(job)


async def test_give_back_without_retry_in_backs_off(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 1)
    job = await claim_one(store)
    rec = await store.update_status(
        "lq", job.job, StatusUpdate(Status.RETRYING, lease=held_by(job))
    )
    assert rec.retry_at is not None
    assert clock.now_ms() + 500 <= rec.retry_at <= clock.now_ms() + 1000
    assert await store.claim("lq", "w1", 1) == []
    clock.advance(1000)
    assert (await claim_one(store)).attempts == 2


# expiry and redelivery --------------------------------------------------------------------------
async def test_an_expired_lease_is_taken_back_once(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 2)
    job = await claim_one(store, "worker-7")
    assert await store.fire_due() == 0
    clock.advance(30_000)
    assert await store.fire_due() == 1
    assert await store.fire_due() == 0, "fired once"
    rec = await store.get_job("lq", job.job)
    assert rec is not None
    assert rec.status is Status.RETRYING and rec.lease is None and rec.version == job.version + 1
    assert rec.error is not None and "worker-7" in rec.error and "expired" in rec.error
    assert rec.retry_at is not None and rec.retry_at > clock.now_ms()
    last = (await store.events_after("lq", 0))[-1]
    assert (last.type, last.job, last.record) == ("status", job.job, rec)
    # backoff: the other job is claimable, the taken-back one only after its retry time
    other = await claim_one(store, "w2")
    assert other.job != job.job
    assert await store.claim("lq", "w2", 5) == []
    clock.advance(1000)
    back = await claim_one(store, "w3")
    assert (back.job, back.attempts) == (job.job, 2)
    with pytest.raises(errors.LeaseLost):
        await store.update_status("lq", job.job, StatusUpdate(Status.COMPLETE, lease=held_by(job)))


async def test_an_update_after_the_lease_expired_is_refused_after_earlier_updates(
    store: Store, clock: ManualClock
) -> None:
    """A driver's updates under its lease, then the lease expires: the next update under it is
    refused, however recently the job was written (the SQLite writer keeps the rows of jobs
    being updated; taking the lease back must not leave it a stale one)."""
    await submit_n(store, 1)
    job = await claim_one(store, "worker-1")
    lease = held_by(job)
    for progress in (0.25, 0.5):
        rec = await store.update_status(
            "lq", job.job, StatusUpdate(Status.ACCEPTED, progress=progress, lease=lease)
        )
        assert rec.progress == progress and held_by(rec) == lease
    clock.advance(30_000)
    assert await store.fire_due() == 1
    with pytest.raises(errors.LeaseLost):
        await store.update_status(
            "lq", job.job, StatusUpdate(Status.ACCEPTED, progress=0.75, lease=lease)
        )
    clock.advance(1000)  # past the retry back-off
    again = await claim_one(store, "worker-2")
    done = await store.update_status(
        "lq", job.job, StatusUpdate(Status.COMPLETE, lease=held_by(again))
    )
    assert done.status is Status.COMPLETE and done.attempts == 2


async def test_max_attempts_fails_the_job(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 1)
    for attempt in range(1, 4):
        job = await claim_one(store)
        assert job.attempts == attempt
        clock.advance(30_000)
        assert await store.fire_due() == 1
        clock.advance(300_000)
    rec = await store.get_job("lq", job.job)
    assert rec is not None and rec.status is Status.FAILED
    assert rec.error is not None and "claimed 3 times" in rec.error and "max_attempts" in rec.error
    assert await store.claim("lq", "w1", 1) == []
    assert await store.fire_due() == 0


async def test_giving_back_the_last_attempt_fails_the_job(store: Store, clock: ManualClock) -> None:
    await submit_n(store, 1)
    for _ in range(3):
        job = await claim_one(store)
        rec = await store.update_status(
            "lq", job.job, StatusUpdate(Status.RETRYING, lease=held_by(job), retry_in=0)
        )
    assert rec.status is Status.FAILED and rec.error is not None and "gave it back" in rec.error


# cancel -----------------------------------------------------------------------------------------
async def test_cancel_of_an_unheld_job_ends_it_at_once(store: Store) -> None:
    await submit_n(store, 1)
    rec = await store.cancel("lq", "j000", "app")
    assert rec.status is Status.CANCELLED and rec.cancel_requested and rec.version == 2
    last = (await store.events_after("lq", 0))[-1]
    assert (last.type, last.data) == ("cancel", {"job": "j000", "client": "app"})
    assert await store.claim("lq", "w1", 1) == []
    assert await store.cancel("lq", "j000", "app") == rec


async def test_cancel_of_a_held_job_is_seen_by_its_holder(store: Store) -> None:
    await submit_n(store, 1)
    job = await claim_one(store)
    rec = await store.cancel("lq", job.job, "app")
    assert rec.status is Status.ACCEPTED and rec.cancel_requested and rec.lease == job.lease
    seen = await store.heartbeat("lq", job.job, held_by(job))
    assert seen.cancel_requested
    done = await store.update_status(
        "lq", job.job, StatusUpdate(Status.CANCELLED, lease=held_by(job))
    )
    assert done.status is Status.CANCELLED


async def test_a_cancelled_job_whose_lease_expires_ends_cancelled(
    store: Store, clock: ManualClock
) -> None:
    await submit_n(store, 1)
    job = await claim_one(store, "w9")
    await store.cancel("lq", job.job, "app")
    clock.advance(30_000)
    assert await store.fire_due() == 1
    rec = await store.get_job("lq", job.job)
    assert rec is not None and rec.status is Status.CANCELLED
    assert rec.error is not None and "w9" in rec.error


# deadlines --------------------------------------------------------------------------------------
async def test_deadline_requests_cancel_then_ends_it_after_the_grace(
    store: Store, clock: ManualClock
) -> None:
    rec, _ = await store.submit("sq", "d1", "app", 1, timeout=5)
    assert rec.deadline == rec.submitted_at + 5000
    await store.update_status("sq", "d1", StatusUpdate(Status.ACCEPTED))
    clock.advance(4999)
    assert await store.fire_due() == 0
    clock.advance(1)
    assert await store.fire_due() == 1
    entry = await store.latest_entry("sq")
    assert entry is not None and entry.type == "cancel" and entry.job == "d1"
    assert entry.data == {"job": "d1", "client": "app", "reason": "timeout"}
    assert entry.record.cancel_requested and entry.record.status is Status.ACCEPTED
    assert await store.fire_due() == 0
    clock.advance(9999)
    assert await store.fire_due() == 0
    clock.advance(1)
    assert await store.fire_due() == 1
    done = await store.get_job("sq", "d1")
    assert done is not None and done.status is Status.CANCELLED
    assert done.error is not None and "deadline" in done.error and "10 s grace" in done.error
    assert await store.fire_due() == 0


async def test_datasource_job_timeout_and_a_job_ending_in_time(
    store: Store, clock: ManualClock
) -> None:
    await store.put_datasource(Datasource("tq", job_timeout=60, cancel_grace=0))
    rec, _ = await store.submit("tq", "t1", "app", 1)
    assert rec.deadline == rec.submitted_at + 60_000
    own, _ = await store.submit("tq", "t2", "app", 1, timeout=1)
    assert own.deadline == own.submitted_at + 1000
    await store.update_status("tq", "t1", StatusUpdate(Status.COMPLETE))
    clock.advance(60_000)
    assert await store.fire_due() == 2, "t2: cancel entry, then cancelled (no grace)"
    t1 = await store.get_job("tq", "t1")
    t2 = await store.get_job("tq", "t2")
    assert t1 is not None and t1.status is Status.COMPLETE
    assert t2 is not None and t2.status is Status.CANCELLED


async def test_deadline_of_an_unheld_lease_job_cancels_at_once(
    store: Store, clock: ManualClock
) -> None:
    await store.submit("lq", "d1", "app", 1, timeout=2)
    clock.advance(2000)
    assert await store.fire_due() == 1
    rec = await store.get_job("lq", "d1")
    assert rec is not None and rec.status is Status.CANCELLED and rec.cancel_requested
    assert rec.error is not None and "deadline" in rec.error
    entry = await store.latest_entry("lq")
    assert entry is not None and entry.data is not None and entry.data["reason"] == "timeout"


async def test_due_items_fire_once_after_a_restart(
    store: Store, clock: ManualClock, opener: Opener
) -> None:
    await submit_n(store, 3)
    await store.submit("sq", "d1", "app", 1, timeout=30)
    held = await store.claim("lq", "w1", 2)
    await store.close()
    clock.advance(31_000)  # while the store is down: two leases expire, one deadline passes
    again = await opener()
    assert await again.fire_due() == 3
    assert await again.fire_due() == 0
    for job in held:
        rec = await again.get_job("lq", job.job)
        assert rec is not None and rec.status is Status.RETRYING
    d1 = await again.get_job("sq", "d1")
    assert d1 is not None and d1.cancel_requested
    await again.close()
    clock.advance(10_000)
    third = await opener()
    assert await third.fire_due() == 1  # the grace ended while down
    d1 = await third.get_job("sq", "d1")
    assert d1 is not None and d1.status is Status.CANCELLED


# the stream worker slot -------------------------------------------------------------------------
async def test_worker_slot_take_refuse_renew_lapse(store: Store, clock: ManualClock) -> None:
    slot = await store.take_slot("sq", "first")
    assert (slot.worker, slot.resume, slot.expires_at) == ("first", None, clock.now_ms() + 20_000)
    (info,) = await store.workers("sq")
    assert (info.worker, info.since, info.last_seen) == ("first", clock.now_ms(), clock.now_ms())
    clock.advance(5000)
    with pytest.raises(errors.SlotTaken, match="'first'") as caught:
        await store.take_slot("sq", "second")
    assert (caught.value.code, caught.value.status) == ("slot_taken", 409)
    assert "last seen" in caught.value.message
    renewed = await store.renew_slot("sq", slot.id, 42)
    assert (renewed.id, renewed.resume) == (slot.id, 42)
    assert renewed.expires_at == clock.now_ms() + 20_000
    assert (await store.renew_slot("sq", slot.id, None)).resume == 42, "kept"
    with pytest.raises(errors.LeaseLost):
        await store.renew_slot("sq", "wrong", 1)
    (info,) = await store.workers("sq")
    assert (info.last_seen, info.resume) == (clock.now_ms(), 42)
    clock.advance(20_000)  # lapsed
    assert await store.workers("sq") == []
    with pytest.raises(errors.LeaseLost):
        await store.renew_slot("sq", slot.id, 43)
    second = await store.take_slot("sq", "second")
    assert (second.worker, second.resume) == ("second", 42)
    await store.release_slot("sq", second.id)
    with pytest.raises(errors.LeaseLost):
        await store.release_slot("sq", second.id)
    assert await store.workers("sq") == []
    third = await store.take_slot("sq", "third")
    assert third.resume == 42


async def test_worker_slot_survives_reopen(store: Store, opener: Opener) -> None:
    slot = await store.take_slot("sq", "first")
    await store.renew_slot("sq", slot.id, 7)
    await store.close()
    again = await opener()
    with pytest.raises(errors.SlotTaken):
        await again.take_slot("sq", "second")
    assert (await again.renew_slot("sq", slot.id, None)).resume == 7


async def test_no_worker_slot_on_a_lease_datasource(store: Store) -> None:
    with pytest.raises(errors.Conflict, match="lease datasource") as caught:
        await store.take_slot("lq", "w")
    assert caught.value.code == "conflict"
    with pytest.raises(errors.NotFound):
        await store.take_slot("nope", "w")


async def test_lease_workers_are_listed(store: Store, clock: ManualClock) -> None:
    assert await store.workers("lq") == []
    await store.claim("lq", "b", 1)
    start = clock.now_ms()
    clock.advance(1000)
    await submit_n(store, 1)
    job = await claim_one(store, "a")
    clock.advance(1000)
    await store.heartbeat("lq", job.job, held_by(job))
    listed = {w.worker: (w.since, w.last_seen) for w in await store.workers("lq")}
    assert listed == {"a": (start + 1000, start + 2000), "b": (start, start)}
    clock.advance(30_000 + 60_000)
    assert [w.worker for w in await store.workers("lq")] == ["a"]
    clock.advance(2000)
    assert await store.workers("lq") == []
    await store.claim("lq", "b", 1)
    (b,) = await store.workers("lq")
    assert b.since == clock.now_ms(), "a new run"
