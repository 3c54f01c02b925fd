"""Schedules and their runs (storage/base.py), on every backend, on a manual clock.

The expected fire times come from the cron library itself (``schedules.fire_times``, cronsim):
the store must create exactly one run for each, whatever the steps the clock takes, across a
restart, and across two PostgreSQL store objects racing timer rounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from jobqueue_store import errors
from jobqueue_store.models import Datasource, Dispatch, Event, Status
from jobqueue_store.schedules import (
    CatchUp,
    ScheduleEvent,
    ScheduleSpec,
    fire_times,
    run_id,
)
from jobqueue_store.storage.base import Store
from jobqueue_store.timers import ManualClock
from tests.contract.conftest import Opener

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
START = int(datetime(2026, 3, 23, 0, 0, 7, tzinfo=UTC).timestamp() * 1000)  # a Monday
STREAM = Datasource("sq", "streamed")
LEASE = Datasource("lq", "leased", dispatch=Dispatch.LEASE, job_timeout=600)


@pytest.fixture
def clock() -> ManualClock:
    """The stores' clock, at a fixed Monday."""
    return ManualClock(START)


@pytest.fixture
async def store(opener: Opener) -> Store:
    """A store with a stream datasource ``sq`` and a lease datasource ``lq``."""
    s = await opener()
    await s.put_datasource(STREAM)
    await s.put_datasource(LEASE)
    return s


def cron(sid: str, expr: str, zone: str = "UTC", catch_up: str = "one", **kw: Any) -> ScheduleSpec:
    return ScheduleSpec(
        sid, {"run": sid}, cron=expr, timezone=zone, catch_up=CatchUp(catch_up), **kw
    )


async def all_runs(store: Store, dsid: str, sid: str) -> list[Any]:
    runs = []
    cursor = None
    while True:
        page = await store.list_runs(dsid, sid, limit=50, cursor=cursor)
        runs.extend(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return runs


async def fire_all(store: Store) -> int:
    total = 0
    while True:
        fired = await store.fire_due(500)
        total += fired
        if fired < 500:
            return total


async def walk(store: Store, clock: ManualClock, until: int, step: int) -> None:
    """Advance ``clock`` to ``until`` in ``step``s, firing at each."""
    while clock.now_ms() < until:
        clock.advance(min(step, until - clock.now_ms()))
        await fire_all(store)


async def test_a_cron_schedule_runs_exactly_at_the_cron_librarys_times_over_a_week(
    store: Store, clock: ManualClock
) -> None:
    spec = cron("weekdays", "15 9-17 * * 1-5", "Europe/London")
    record, created = await store.create_schedule("sq", spec, "app")
    assert created and record.state == "active" and record.version == 1
    expected = fire_times("15 9-17 * * 1-5", "Europe/London", START, START + 7 * DAY)
    assert record.next_run_at == expected[0]
    await walk(store, clock, START + 7 * DAY, 7 * MINUTE)
    runs = await all_runs(store, "sq", "weekdays")
    assert sorted(r.scheduled_for for r in runs) == expected
    assert len(expected) == 45
    newest_first = [r.scheduled_for for r in runs]
    assert newest_first == sorted(newest_first, reverse=True)
    for run in runs:
        assert run.job == run_id("weekdays", run.scheduled_for)
        assert run.schedule == "weekdays" and run.client == "app"
        assert run.request == {"run": "weekdays"} and run.status is Status.SUBMITTED
        # created by the round that first saw the fire time: at most one step late
        assert 0 <= run.submitted_at - run.scheduled_for < 7 * MINUTE
    after = await store.get_schedule("sq", "weekdays")
    assert after is not None
    assert after.runs == 45 and after.last_run == run_id("weekdays", expected[-1])
    assert (
        after.next_run_at
        == fire_times("15 9-17 * * 1-5", "Europe/London", START + 7 * DAY, START + 14 * DAY)[0]
    )


@pytest.mark.parametrize(("catch_up", "missed_runs"), [("none", 0), ("one", 1), ("all", 5)])
async def test_catch_up_after_an_outage(
    store: Store, clock: ManualClock, catch_up: str, missed_runs: int
) -> None:
    await store.create_schedule("sq", cron("hourly", "0 * * * *", catch_up=catch_up), "app")
    # The store is down from START until 5 h 10 min later: 5 fire times pass unfired.
    clock.advance(5 * HOUR + 10 * MINUTE)
    await fire_all(store)
    runs = await all_runs(store, "sq", "hourly")
    hours = fire_times("0 * * * *", "UTC", START, clock.now_ms())
    assert len(hours) == 5
    assert sorted(r.scheduled_for for r in runs) == hours[len(hours) - missed_runs :]
    # From then on, each fire time on time gives its run, whatever catch_up says.
    await walk(store, clock, START + 7 * HOUR, MINUTE)
    runs = await all_runs(store, "sq", "hourly")
    assert sorted(r.scheduled_for for r in runs)[-2:] == fire_times(
        "0 * * * *", "UTC", START + 5 * HOUR, START + 7 * HOUR
    )
    assert len(runs) == missed_runs + 2


async def test_catch_up_all_gives_at_most_1000_runs(store: Store, clock: ManualClock) -> None:
    await store.create_schedule("sq", cron("often", "* * * * *", catch_up="all"), "app")
    clock.advance(1500 * MINUTE)
    await fire_all(store)
    runs = await all_runs(store, "sq", "often")
    assert len(runs) == 1000
    assert (
        max(r.scheduled_for for r in runs)
        == fire_times("* * * * *", "UTC", clock.now_ms() - MINUTE, clock.now_ms())[-1]
    )


@pytest.mark.parametrize(
    ("day", "expr"),
    [
        ((2026, 3, 27), "30 2 * * *"),  # spring forward on Sunday 29 March
        ((2026, 10, 23), "30 2 * * *"),  # fall back on Sunday 25 October
        ((2026, 3, 27), "30 1 * * *"),  # 01:30 does not exist on 29 March
        ((2026, 10, 23), "30 1 * * *"),  # 01:30 happens twice on 25 October
    ],
)
async def test_daylight_saving_edges_in_london_follow_the_cron_library(
    opener: Opener, clock: ManualClock, day: tuple[int, int, int], expr: str
) -> None:
    start = int(datetime(*day, tzinfo=UTC).timestamp() * 1000)
    clock.advance(start - clock.now_ms())
    store = await opener()
    await store.put_datasource(STREAM)
    await store.create_schedule("sq", cron("dst", expr, "Europe/London"), "app")
    await walk(store, clock, start + 5 * DAY, 10 * MINUTE)
    runs = sorted(r.scheduled_for for r in await all_runs(store, "sq", "dst"))
    assert runs == fire_times(expr, "Europe/London", start, start + 5 * DAY)
    local = [
        datetime.fromtimestamp(t / 1000, UTC).strftime("%m-%d %H:%M") for t in runs
    ]  # in UTC: BST is UTC+1
    if expr == "30 2 * * *" and day[1] == 3:
        assert local == ["03-27 02:30", "03-28 02:30", "03-29 01:30", "03-30 01:30", "03-31 01:30"]
    if expr == "30 2 * * *" and day[1] == 10:
        assert local == ["10-23 01:30", "10-24 01:30", "10-25 02:30", "10-26 02:30", "10-27 02:30"]
    if expr == "30 1 * * *" and day[1] == 3:  # 01:30 skipped: cronsim fires at 02:00 BST
        assert local == ["03-27 01:30", "03-28 01:30", "03-29 01:00", "03-30 00:30", "03-31 00:30"]
    if expr == "30 1 * * *" and day[1] == 10:  # 01:30 twice: cronsim fires at the first (BST)
        assert local == ["10-23 00:30", "10-24 00:30", "10-25 00:30", "10-26 01:30", "10-27 01:30"]


async def test_a_one_off_runs_once_at_its_time_and_a_past_one_at_once(
    store: Store, clock: ManualClock
) -> None:
    later = START + HOUR
    rec, _ = await store.create_schedule("sq", ScheduleSpec("later", [1], at=later), "app")
    assert rec.next_run_at == later and rec.at == later
    past, _ = await store.create_schedule(
        "lq", ScheduleSpec("past", {"x": 1}, at=START - DAY, timeout=60), "app"
    )
    assert past.next_run_at == START - DAY  # an at in the past is due at once
    assert await fire_all(store) >= 2  # the past one: its run and its schedule event
    (run,) = await all_runs(store, "lq", "past")
    assert run.job == f"past.{START - DAY}" and run.scheduled_for == START - DAY
    # a run honours the run's timeout (deadline) like any submit
    assert run.deadline == run.submitted_at + 60_000
    assert await all_runs(store, "sq", "later") == []
    await walk(store, clock, START + 3 * HOUR, 10 * MINUTE)
    (run,) = await all_runs(store, "sq", "later")
    assert run.scheduled_for == later
    done = await store.get_schedule("sq", "later")
    assert done is not None and done.state == "active" and done.next_run_at is None
    assert done.runs == 1 and done.last_run == f"later.{later}"


async def test_runs_are_ordinary_jobs_on_a_lease_datasource(
    store: Store, clock: ManualClock
) -> None:
    await store.create_schedule("lq", cron("leased", "*/10 * * * *"), "app")
    clock.advance(10 * MINUTE)
    await fire_all(store)
    (run,) = await all_runs(store, "lq", "leased")
    assert run.deadline == run.submitted_at + 600_000  # the datasource's job_timeout
    (claimed,) = await store.claim("lq", "w1", 5)
    assert claimed.job == run.job and claimed.schedule == "leased"
    assert claimed.scheduled_for == run.scheduled_for


async def test_same_id_rules_as_a_job(store: Store) -> None:
    spec = cron("s1", "0 * * * *")
    first, created = await store.create_schedule("sq", spec, "app")
    again, created_again = await store.create_schedule("sq", spec, "app")
    assert created and not created_again and again == first
    with pytest.raises(errors.Conflict):
        await store.create_schedule("sq", cron("s1", "5 * * * *"), "app")
    with pytest.raises(errors.Conflict):
        await store.create_schedule("sq", spec, "other")
    with pytest.raises(errors.NotFound):
        await store.create_schedule("nope", spec, "app")


async def test_soft_delete_keeps_record_and_runs_and_stops_firing(
    store: Store, clock: ManualClock
) -> None:
    await store.create_schedule("sq", cron("gone", "*/5 * * * *"), "app")
    await walk(store, clock, START + 16 * MINUTE, MINUTE)
    assert len(await all_runs(store, "sq", "gone")) == 3
    deleted = await store.change_schedule("sq", "gone", "delete")
    assert deleted.state == "deleted" and deleted.next_run_at is None and deleted.runs == 3
    again = await store.change_schedule("sq", "gone", "delete")
    assert again == deleted  # idempotent: no new version
    await walk(store, clock, START + 2 * HOUR, 5 * MINUTE)
    assert len(await all_runs(store, "sq", "gone")) == 3
    kept = await store.get_schedule("sq", "gone")
    assert kept == deleted
    with pytest.raises(errors.Conflict, match="never reused"):
        await store.create_schedule("sq", cron("gone", "*/5 * * * *"), "app")
    with pytest.raises(errors.Conflict, match="deleted"):
        await store.change_schedule("sq", "gone", "pause")
    with pytest.raises(errors.Conflict, match="deleted"):
        await store.change_schedule("sq", "gone", "resume")
    page = await store.list_schedules("sq", "app")
    assert [s.schedule for s in page.schedules] == ["gone"]


async def test_pause_and_resume(store: Store, clock: ManualClock) -> None:
    await store.create_schedule("sq", cron("p", "0 * * * *"), "app")
    paused = await store.change_schedule("sq", "p", "pause")
    assert paused.state == "paused" and paused.next_run_at is None and paused.version == 2
    assert await store.change_schedule("sq", "p", "pause") == paused
    await walk(store, clock, START + 3 * HOUR, 10 * MINUTE)
    assert await all_runs(store, "sq", "p") == []
    resumed = await store.change_schedule("sq", "p", "resume")
    assert resumed.state == "active" and resumed.version == 3
    assert resumed.next_run_at == fire_times("0 * * * *", "UTC", clock.now_ms(), START + DAY)[0]
    await walk(store, clock, START + 4 * HOUR + MINUTE, 10 * MINUTE)
    assert len(await all_runs(store, "sq", "p")) == 1
    with pytest.raises(errors.NotFound):
        await store.change_schedule("sq", "missing", "pause")


async def test_each_change_is_one_event_in_the_store_wide_log(
    store: Store, clock: ManualClock
) -> None:
    seen: list[Event | ScheduleEvent] = []

    def listen(events: Sequence[Event | ScheduleEvent]) -> None:
        seen.extend(events)

    store.set_listener(listen)
    await store.submit("sq", "plain", "app", 1)
    await store.create_schedule("sq", cron("ev", "*/30 * * * *"), "app")
    clock.advance(30 * MINUTE)
    await fire_all(store)
    await store.change_schedule("sq", "ev", "pause")
    for _ in range(50):
        if len(seen) >= 5:
            break
        await asyncio.sleep(0.05)  # the PostgreSQL publisher reads the log after commit
    kinds = [(e.type, e.job) for e in seen]
    assert kinds == [
        ("request", "plain"),
        ("schedule", "ev"),
        ("request", run_id("ev", START - 7_000 + 30 * MINUTE)),
        ("schedule", "ev"),
        ("schedule", "ev"),
    ]
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    notes = [e for e in seen if isinstance(e, ScheduleEvent)]
    assert [n.schedule.version for n in notes] == [1, 2, 3]
    assert notes[-1].notification()["data"]["state"] == "paused"
    assert await store.last_seq() == seqs[-1]
    replay = await store.schedule_events_after("sq", "app", 0, seqs[-1])
    assert [e.seq for e in replay] == [n.seq for n in notes]
    assert await store.schedule_events_after("sq", "other", 0, seqs[-1]) == []
    # a job event after them takes a larger seq
    _, created = await store.submit("sq", "after", "app", 2)
    assert created
    (last,) = await store.events_after("sq", seqs[-1])
    assert last.seq > seqs[-1]


async def test_a_run_is_created_once_across_a_restart(opener: Opener, clock: ManualClock) -> None:
    first = await opener()
    await first.put_datasource(STREAM)
    await first.create_schedule("sq", cron("r", "*/15 * * * *", catch_up="all"), "app")
    clock.advance(15 * MINUTE)
    await fire_all(first)
    await first.close()
    # down over three fire times; a second process's round after the restart fires them once
    clock.advance(45 * MINUTE)
    second = await opener()
    await asyncio.gather(fire_all(second), fire_all(second))
    await fire_all(second)
    runs = sorted(r.scheduled_for for r in await all_runs(second, "sq", "r"))
    assert runs == fire_times("*/15 * * * *", "UTC", START, clock.now_ms())
    assert len(runs) == 4


async def test_paging_schedules(store: Store) -> None:
    for i in range(5):
        await store.create_schedule("sq", cron(f"s{i}", "0 0 * * *"), "app")
    await store.create_schedule("sq", cron("theirs", "0 0 * * *"), "other")
    page = await store.list_schedules("sq", "app", limit=3)
    assert [s.schedule for s in page.schedules] == ["s4", "s3", "s2"]
    assert page.next_cursor is not None
    rest = await store.list_schedules("sq", "app", limit=3, cursor=page.next_cursor)
    assert [s.schedule for s in rest.schedules] == ["s1", "s0"] and rest.next_cursor is None
    everyone = await store.list_schedules("sq", None, limit=10)
    assert len(everyone.schedules) == 6
    with pytest.raises(errors.BadRequest):
        await store.list_schedules("sq", "app", cursor="nope")


async def test_two_postgresql_store_processes_fire_each_time_once(
    backend: str, opener: Opener, clock: ManualClock
) -> None:
    if backend != "postgres":
        pytest.skip("several store processes share only a PostgreSQL database")
    pair = [await opener(), await opener()]
    await pair[0].put_datasource(STREAM)
    for i in range(20):
        await pair[i % 2].create_schedule(
            "sq", cron(f"race{i}", "*/5 * * * *", catch_up="all"), "app"
        )
    for _ in range(12):
        clock.advance(5 * MINUTE)
        await asyncio.gather(*(fire_all(s) for s in pair for _ in range(2)))
    # one outage of both, then both race the catch-up
    clock.advance(30 * MINUTE)
    await asyncio.gather(*(fire_all(s) for s in pair for _ in range(2)))
    expected = fire_times("*/5 * * * *", "UTC", START, clock.now_ms())
    assert len(expected) == 18
    for i in range(20):
        runs = [r.scheduled_for for r in await all_runs(pair[1], "sq", f"race{i}")]
        assert sorted(runs) == expected
        record = await pair[0].get_schedule("sq", f"race{i}")
        assert record is not None and record.runs == 18


async def test_schedule_and_job_events_share_one_sequence_across_a_restart(
    opener: Opener, clock: ManualClock
) -> None:
    first = await opener()
    await first.put_datasource(STREAM)
    seen: list[Event | ScheduleEvent] = []
    first.set_listener(seen.extend)
    for i in range(30):
        await asyncio.gather(
            first.create_schedule("sq", cron(f"q{i}", "0 0 * * *"), "app"),
            first.submit("sq", f"j{i}", "app", i),
        )
    for _ in range(50):
        if len(seen) >= 60:
            break
        await asyncio.sleep(0.05)
    seqs = [e.seq for e in seen]
    assert len(seqs) == 60 and seqs == sorted(set(seqs))
    assert await first.last_seq() == seqs[-1]
    await first.close()
    second = await opener()
    await second.submit("sq", "after-restart", "app", 0)
    await second.create_schedule("sq", cron("after", "0 0 * * *"), "app")
    (job_event,) = await second.events_after("sq", seqs[-1])
    (sched_event,) = await second.schedule_events_after("sq", "app", seqs[-1], 2**62)
    assert seqs[-1] < job_event.seq < sched_event.seq


async def test_retention_purges_old_schedule_events_and_keeps_the_schedules(
    store: Store, clock: ManualClock
) -> None:
    await store.create_schedule("sq", cron("kept", "*/10 * * * *"), "app")
    await walk(store, clock, START + HOUR, 5 * MINUTE)
    events = await store.schedule_events_after("sq", "app", 0, 2**62)
    assert len(events) == 7  # created, then 6 fire rounds
    cutoff = events[4].timestamp
    older = [e for e in events if e.timestamp < cutoff]
    purged = await store.purge(cutoff, limit=2)
    assert purged == 2  # bounded by the limit: the caller loops while it returns the limit
    assert await store.purge(cutoff, limit=100) == len(older) - 2
    assert await store.purge(cutoff, limit=100) == 0
    left = await store.schedule_events_after("sq", "app", 0, 2**62)
    assert [e.seq for e in left] == [e.seq for e in events if e.timestamp >= cutoff]
    assert await store.purged_through() == max(e.seq for e in older)
    record = await store.get_schedule("sq", "kept")
    assert record is not None and record.runs == 6
    assert len(await all_runs(store, "sq", "kept")) == 6  # runs not terminal: kept
