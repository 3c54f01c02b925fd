"""The pure rules of leases, deadlines and the worker slot (jobqueue_store.leases), and the timer
loop (jobqueue_store.timers), without a store."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from jobqueue_store import errors, leases
from jobqueue_store.lifecycle import decide_submit
from jobqueue_store.models import Datasource, Dispatch, JobRecord, SlotLease, Status, StatusUpdate
from jobqueue_store.timers import ManualClock, TimerLoop

T0 = 1_700_000_000_000
LEASED = Datasource("lq", dispatch=Dispatch.LEASE, lease_seconds=10, max_attempts=2)
STREAM = Datasource("sq", cancel_grace=5)


def job(timeout: int | None = None, ds: Datasource = LEASED) -> JobRecord:
    """A freshly submitted job at ``T0``."""
    return decide_submit(
        None,
        datasource_id=ds.id,
        job="j",
        client="app",
        request=1,
        timestamp=T0,
        timeout=timeout,
        datasource=ds,
    ).record


def claimed(record: JobRecord, now: int = T0) -> JobRecord:
    """``record`` claimed by w1 at ``now``."""
    outcome = leases.decide_claim(record, LEASED, worker="w1", lease_id="L", now=now)
    assert outcome is not None
    return outcome.record


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        (1, 500, 1000),
        (2, 1000, 2000),
        (3, 2000, 4000),
        (9, 128_000, 256_000),
        (10, 150_000, 300_000),
        (60, 150_000, 300_000),
    ],
)
def test_backoff_is_exponential_with_jitter_and_capped(attempts: int, low: int, high: int) -> None:
    assert leases.backoff_ms(attempts, 0.0) == low
    assert low <= leases.backoff_ms(attempts, 0.5) <= high
    assert leases.backoff_ms(attempts, 0.999999) <= high


def test_claimable_and_claim() -> None:
    rec = job()
    assert leases.claimable(rec, T0)
    held = claimed(rec)
    assert held.lease is not None and held.lease.expires_at == T0 + 10_000
    assert (held.status, held.attempts, held.version) == (Status.ACCEPTED, 1, 2)
    assert not leases.claimable(held, T0 + 60_000), "held until the timer takes it back"
    assert leases.decide_claim(held, LEASED, worker="w2", lease_id="M", now=T0) is None
    later = replace(rec, status=Status.RETRYING, retry_at=T0 + 5)
    assert not leases.claimable(later, T0 + 4) and leases.claimable(later, T0 + 5)
    assert not leases.claimable(replace(rec, cancel_requested=True), T0)


def test_next_due() -> None:
    assert leases.next_due(job(), LEASED) is None
    assert leases.next_due(claimed(job()), LEASED) == T0 + 10_000
    timed = claimed(job(timeout=3))
    assert leases.next_due(timed, LEASED) == T0 + 3000, "the earlier of deadline and expiry"
    asked = replace(job(timeout=3, ds=STREAM), cancel_requested=True)
    assert leases.next_due(asked, STREAM) == T0 + 3000 + 5000, "then the grace's end"
    assert leases.next_due(replace(asked, status=Status.COMPLETE), STREAM) is None


def test_fire_order_expiry_then_deadline() -> None:
    rec = claimed(job(timeout=10))
    first = leases.decide_fire(rec, LEASED, now=T0 + 10_000, rand=0.0)
    assert first is not None and first.event == "status"
    assert first.record.status is Status.RETRYING and first.record.lease is None
    second = leases.decide_fire(first.record, LEASED, now=T0 + 10_000, rand=0.0)
    assert second is not None and (second.event, second.reason) == ("cancel", "timeout")
    assert second.record.status is Status.CANCELLED, "unheld on a lease datasource: at once"
    assert leases.decide_fire(second.record, LEASED, now=T0 + 99_000, rand=0.0) is None


def test_lease_update_rules() -> None:
    held = claimed(job())
    with pytest.raises(errors.LeaseLost):
        leases.decide_leased_update(held, StatusUpdate(Status.COMPLETE), LEASED, now=T0, rand=0)
    renew = leases.decide_leased_update(
        held, StatusUpdate(Status.ACCEPTED, lease="L"), LEASED, now=T0 + 5000, rand=0
    )
    assert renew.event is None and renew.touched
    assert renew.record.lease is not None and renew.record.lease.expires_at == T0 + 15_000
    with pytest.raises(errors.LeaseLost, match="expired"):
        leases.decide_leased_update(
            held, StatusUpdate(Status.ACCEPTED, lease="L"), LEASED, now=T0 + 10_000, rand=0
        )
    second = claimed(
        leases.decide_leased_update(
            held, StatusUpdate(Status.RETRYING, lease="L", retry_in=0), LEASED, now=T0, rand=0
        ).record
    )
    last = leases.decide_leased_update(
        second, StatusUpdate(Status.RETRYING, lease="L", error="oops"), LEASED, now=T0, rand=0
    )
    assert last.record.status is Status.FAILED
    assert last.record.error is not None and "oops" in last.record.error


def test_slot_rules() -> None:
    slot = leases.decide_take_slot(None, None, STREAM, worker="a", lease_id="S", now=T0)
    assert slot == SlotLease("S", "a", T0 + 30_000, None)
    with pytest.raises(errors.SlotTaken, match="'a'"):
        leases.decide_take_slot(slot, T0, STREAM, worker="b", lease_id="T", now=T0 + 29_999)
    kept = replace(slot, resume=9)
    taken = leases.decide_take_slot(kept, T0, STREAM, worker="b", lease_id="T", now=T0 + 30_000)
    assert (taken.worker, taken.resume) == ("b", 9)
    with pytest.raises(errors.LeaseLost):
        leases.decide_renew_slot(taken, STREAM, lease="S", resume=1, now=T0 + 30_000)
    with pytest.raises(errors.Conflict, match="lease datasource"):
        leases.require_stream_dispatch(LEASED)


class CountingFirer:
    """A store stand-in that has ``due`` items and fires at most ``limit`` per call."""

    def __init__(self, due: int) -> None:
        self.due = due
        self.calls = 0

    async def fire_due(self, limit: int = 500) -> int:
        self.calls += 1
        fired = min(limit, self.due)
        self.due -= fired
        return fired


async def test_timer_loop_rounds_until_a_short_batch() -> None:
    firer = CountingFirer(25)
    loop = TimerLoop(firer, interval=0.01, batch=10)
    assert await loop.run_once() == 25
    assert firer.calls == 3 and loop.fired == 25
    firer.due = 4
    loop.start()
    for _ in range(200):
        if firer.due == 0:
            break
        await asyncio.sleep(0.01)
    await loop.stop()
    assert firer.due == 0 and loop.fired == 29
    with pytest.raises(ValueError):
        TimerLoop(firer, interval=0)


def test_manual_clock() -> None:
    clock = ManualClock(T0)
    assert clock.advance(5) == T0 + 5 == clock.now_ms()
    with pytest.raises(ValueError):
        clock.advance(-1)
