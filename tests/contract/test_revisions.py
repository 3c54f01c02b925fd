"""Long-running jobs on every backend: revisions, updates with rollback, stop and start.

The rules are :mod:`jobqueue_store.revisions`; here each one is checked through the store
interface, with the events it appends (type, data, order) and the revisions list they fold into.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jobqueue_store import errors
from jobqueue_store.models import Datasource, Dispatch, Event, Status, StatusUpdate
from jobqueue_store.revisions import history
from jobqueue_store.storage.base import Store
from tests.contract.conftest import Reopen
from tests.contract.test_store import collect, settled


@pytest.fixture
async def ds(store: Store) -> str:
    """A declared stream datasource."""
    await store.put_datasource(Datasource("pipes", "pipelines"))
    return "pipes"


def up(status: Status, revision: int | None = None, **kw: Any) -> StatusUpdate:
    """A driver's update for ``revision``."""
    return StatusUpdate(status, revision=revision, **kw)


async def started(store: Store, ds: str, job: str = "p1", request: Any = None) -> None:
    """Submit ``job`` and report revision 0 ``running``."""
    await store.submit(ds, job, "alice", request if request is not None else {"n": 0})
    await store.update_status(ds, job, up(Status.RUNNING, 0))


async def revisions_of(store: Store, ds: str, job: str) -> list[dict[str, Any]]:
    return [r.to_wire() for r in history(await store.job_events(ds, job))]


async def test_update_makes_a_new_revision_with_an_update_entry(store: Store, ds: str) -> None:
    seen = collect(store)
    await started(store, ds)
    record, revised = await store.revise(ds, "p1", "alice", {"n": 1}, False)
    assert revised
    assert record.revision == 1
    assert record.status is Status.SUBMITTED
    assert record.request == {"n": 1}
    assert record.desired_state == "running"
    wire = record.to_wire()
    assert wire["revision"] == 1 and "rollback" not in wire
    events = await settled(seen, 3)
    assert [e.type for e in events] == ["request", "status", "update"]
    assert events[2].data == {
        "job": "p1",
        "client": "alice",
        "request": {"n": 1},
        "revision": 1,
        "previous_revision": 0,
    }
    assert events[2].stream_entry()["type"] == "update"
    latest = await store.latest_entry(ds)
    assert latest is not None and latest.type == "update" and latest.seq == events[2].seq
    since = await store.entries_since(ds, 0)
    assert [e.type for e in since] == ["request", "update"]


async def test_a_new_job_is_revision_0_and_same_request_changes_nothing(
    store: Store, ds: str
) -> None:
    record, _ = await store.submit(ds, "p1", "alice", {"n": 0})
    assert record.revision == 0 and record.to_wire()["revision"] == 0
    assert record.to_wire()["desired_state"] == "running"
    before = await store.last_seq()
    again, revised = await store.revise(ds, "p1", "alice", {"n": 0}, True)
    assert not revised
    assert again == record
    assert await store.last_seq() == before


async def test_update_of_unknown_or_foreign_job(store: Store, ds: str) -> None:
    await store.submit(ds, "p1", "alice", 1)
    with pytest.raises(errors.NotFound):
        await store.revise(ds, "nope", "alice", 2, False)
    with pytest.raises(errors.Forbidden):
        await store.revise(ds, "p1", "bob", 2, False)
    with pytest.raises(errors.Forbidden):
        await store.set_desired(ds, "p1", "bob", "stopped")
    with pytest.raises(errors.NotFound):
        await store.revise("nods", "p1", "alice", 2, False)
    # an admin (client None) may update any job
    record, revised = await store.revise(ds, "p1", None, 2, False)
    assert revised and record.revision == 1


@pytest.mark.parametrize("end", [Status.FAILED, Status.COMPLETE, Status.CANCELLED])
async def test_update_reopens_a_finished_job(store: Store, ds: str, end: Status) -> None:
    await store.submit(ds, "p1", "alice", 1)
    await store.cancel(ds, "p1", "alice")
    ended = await store.update_status(ds, "p1", up(end, error="x", response={"r": 1}))
    assert ended.terminal
    record, revised = await store.revise(ds, "p1", "alice", 2, False)
    assert revised
    assert record.status is Status.SUBMITTED
    assert not record.cancel_requested
    assert record.error is None and not record.has_response
    assert record.revision == 1
    # the reopened job is live again: the driver reports on it
    running = await store.update_status(ds, "p1", up(Status.RUNNING, 1))
    assert running.status is Status.RUNNING


async def test_forbidden_job_is_not_reopened(store: Store, ds: str) -> None:
    await store.submit(ds, "p1", "alice", 1)
    await store.update_status(ds, "p1", up(Status.FORBIDDEN))
    with pytest.raises(errors.Conflict, match="forbidden"):
        await store.revise(ds, "p1", "alice", 2, False)


async def test_older_revision_update_changes_only_its_history(store: Store, ds: str) -> None:
    seen = collect(store)
    await started(store, ds)
    current, _ = await store.revise(ds, "p1", "alice", {"n": 1}, False)
    retired = await store.update_status(ds, "p1", up(Status.STOPPED, 0))
    assert retired.status is Status.SUBMITTED
    assert retired.revision == 1
    assert retired.version == current.version + 1
    events = await settled(seen, 4)
    assert events[-1].type == "status"
    assert events[-1].data == {"revision": 0, "status": "stopped"}
    revs = await revisions_of(store, ds, "p1")
    assert [(r["revision"], r["status"]) for r in revs] == [(0, "stopped"), (1, "submitted")]
    assert revs[0]["running_at"] is not None and revs[1]["running_at"] is None
    # an older revision may still report on a finished job: the job stays as it is
    await store.update_status(ds, "p1", up(Status.FAILED, 1, error="boom"))
    after = await store.update_status(ds, "p1", up(Status.CANCELLED, 0))
    assert after.status is Status.FAILED and after.revision == 1


async def test_a_revision_the_job_never_had_is_a_conflict(store: Store, ds: str) -> None:
    await started(store, ds)
    with pytest.raises(errors.Conflict, match="no revision 3"):
        await store.update_status(ds, "p1", up(Status.RUNNING, 3))


async def test_stop_and_start_set_desired_state_with_entries(store: Store, ds: str) -> None:
    seen = collect(store)
    await started(store, ds)
    stopped = await store.set_desired(ds, "p1", "alice", "stopped")
    assert stopped.desired_state == "stopped"
    assert stopped.status is Status.RUNNING  # until the driver reports it
    again = await store.set_desired(ds, "p1", "alice", "stopped")
    assert again == stopped  # asked already: nothing appended
    reported = await store.update_status(ds, "p1", up(Status.STOPPED, 0))
    assert reported.status is Status.STOPPED and not reported.terminal
    resumed = await store.set_desired(ds, "p1", "alice", "running")
    assert resumed.desired_state == "running"
    await store.update_status(ds, "p1", up(Status.RUNNING, 0))
    events = await settled(seen, 6)
    assert [e.type for e in events] == ["request", "status", "stop", "status", "start", "status"]
    assert events[2].data == {"job": "p1", "client": "alice", "revision": 0}
    assert events[4].data == {"job": "p1", "client": "alice", "revision": 0}
    assert await store.count_unfinished(ds, "alice") == 1


async def test_stop_or_start_of_a_finished_job_is_a_conflict(store: Store, ds: str) -> None:
    await store.submit(ds, "p1", "alice", 1)
    await store.update_status(ds, "p1", up(Status.COMPLETE))
    with pytest.raises(errors.Conflict, match="complete and cannot be stopped"):
        await store.set_desired(ds, "p1", "alice", "stopped")
    with pytest.raises(errors.Conflict, match="cannot be started"):
        await store.set_desired(ds, "p1", "alice", "running")
    with pytest.raises(errors.NotFound):
        await store.set_desired(ds, "nope", "alice", "stopped")


async def test_an_update_clears_the_stop_and_the_cancel_request(store: Store, ds: str) -> None:
    await started(store, ds)
    await store.set_desired(ds, "p1", "alice", "stopped")
    await store.cancel(ds, "p1", "alice")
    record, _ = await store.revise(ds, "p1", "alice", {"n": 1}, False)
    assert record.desired_state == "running"
    assert not record.cancel_requested


async def test_rollback_sequence(store: Store, ds: str) -> None:
    """Revision 0 running; revision 1 submitted with rollback; 1 failed; revision 2 created from
    revision 0's request, submitted, then running."""
    seen = collect(store)
    await started(store, ds, request={"v": "good"})
    one, _ = await store.revise(ds, "p1", "alice", {"v": "bad"}, True)
    assert one.rollback and one.to_wire()["rollback"] is True
    final = await store.update_status(ds, "p1", up(Status.FAILED, 1, error="bad config"))
    assert final.revision == 2
    assert final.status is Status.SUBMITTED
    assert final.request == {"v": "good"}
    assert final.rollback_of == 1 and not final.rollback
    assert final.to_wire()["rollback_of"] == 1
    running = await store.update_status(ds, "p1", up(Status.RUNNING, 2))
    assert running.status is Status.RUNNING
    events = await settled(seen, 6)
    assert [e.type for e in events] == ["request", "status", "update", "status", "update", "status"]
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    failed, rolled = events[3], events[4]
    assert failed.record.status is Status.FAILED and failed.record.revision == 1
    assert failed.record.error == "bad config"
    assert rolled.record.revision == 2 and rolled.record.status is Status.SUBMITTED
    assert rolled.data == {
        "job": "p1",
        "client": "alice",
        "request": {"v": "good"},
        "revision": 2,
        "previous_revision": 1,
        "rollback_of": 1,
    }
    assert rolled.record.version == failed.record.version + 1
    assert await store.get_job(ds, "p1") == running
    revs = await revisions_of(store, ds, "p1")
    assert [(r["revision"], r["status"], r["request"], r["rollback_of"]) for r in revs] == [
        (0, "running", {"v": "good"}, None),
        (1, "failed", {"v": "bad"}, None),
        (2, "running", {"v": "good"}, 1),
    ]
    assert revs[1]["error"] == "bad config" and revs[1]["rollback"] is True


async def test_rollback_goes_to_the_last_revision_that_ran(store: Store, ds: str) -> None:
    await started(store, ds, request="a")
    await store.revise(ds, "p1", "alice", "b", False)
    await store.update_status(ds, "p1", up(Status.RUNNING, 1))
    await store.revise(ds, "p1", "alice", "c", False)  # never runs
    await store.revise(ds, "p1", "alice", "d", True)
    final = await store.update_status(ds, "p1", up(Status.FAILED, 3))
    assert (final.revision, final.request, final.rollback_of) == (4, "b", 3)


async def test_rollback_sees_a_run_reported_just_before_in_the_same_batch(
    store: Store, ds: str
) -> None:
    """An older revision's ``running`` and the failure that rolls back, sent together (one
    write batch on SQLite): the rollback finds the revision that ran in the history, as if
    the two reports had come one after the other."""
    await started(store, ds, request="a")
    await store.revise(ds, "p1", "alice", "b", False)
    await store.revise(ds, "p1", "alice", "c", True)
    ran, final = await asyncio.gather(
        store.update_status(ds, "p1", up(Status.RUNNING, 1)),
        store.update_status(ds, "p1", up(Status.FAILED, 2)),
    )
    assert ran.revision == 2
    assert (final.revision, final.request, final.rollback_of) == (3, "b", 2)


async def test_rollback_with_no_revision_that_ran_leaves_the_job_failed(
    store: Store, ds: str
) -> None:
    await store.submit(ds, "p1", "alice", "a")
    await store.revise(ds, "p1", "alice", "b", True)
    failed = await store.update_status(ds, "p1", up(Status.FAILED, 1, error="boom"))
    assert failed.status is Status.FAILED and failed.revision == 1
    assert failed.error is not None
    assert failed.error.startswith("boom (") and "ever reached running" in failed.error
    # the driver's retry of the same report is an idempotent repeat
    again = await store.update_status(ds, "p1", up(Status.FAILED, 1, error="boom"))
    assert again == failed
    with pytest.raises(errors.Conflict):
        await store.update_status(ds, "p1", up(Status.COMPLETE, 1))


async def test_without_rollback_a_failure_stays(store: Store, ds: str) -> None:
    await started(store, ds)
    await store.revise(ds, "p1", "alice", {"n": 1}, False)
    failed = await store.update_status(ds, "p1", up(Status.FAILED, 1, error="boom"))
    assert failed.status is Status.FAILED and failed.revision == 1 and failed.error == "boom"


async def test_rollback_sees_the_same_batch(store: Store, ds: str) -> None:
    """The update and the failure queued together: the failure sees the revision just made."""
    import asyncio

    await started(store, ds, request="a")
    revised, failed = await asyncio.gather(
        store.revise(ds, "p1", "alice", "b", True),
        store.update_status(ds, "p1", up(Status.FAILED, 1)),
    )
    assert revised[0].revision == 1
    assert (failed.revision, failed.request, failed.rollback_of) == (2, "a", 1)


async def test_revisions_survive_a_restart(store: Store, ds: str, reopen: Reopen) -> None:
    await started(store, ds, request="a")
    await store.revise(ds, "p1", "alice", "b", True)
    await store.set_desired(ds, "p1", "alice", "stopped")
    before = await store.get_job(ds, "p1")
    revs = await revisions_of(store, ds, "p1")
    again = await reopen()
    assert await again.get_job(ds, "p1") == before
    assert await revisions_of(again, ds, "p1") == revs
    final = await again.update_status(ds, "p1", up(Status.FAILED, 1))
    assert (final.revision, final.request) == (2, "a")


async def test_a_new_revision_is_a_new_claim_and_stop_releases_nothing(
    store: Store, tmp_path: Path
) -> None:
    await store.put_datasource(Datasource("lq", "leased", dispatch=Dispatch.LEASE))
    await store.submit("lq", "p1", "alice", "a")
    [claimed] = await store.claim("lq", "w1", 1)
    assert claimed.lease is not None
    lease = claimed.lease.id
    await store.update_status("lq", "p1", StatusUpdate(Status.RUNNING, lease=lease, revision=0))
    stopped = await store.set_desired("lq", "p1", "alice", "stopped")
    assert stopped.lease is not None and stopped.lease.id == lease  # a stop releases nothing
    held = await store.heartbeat("lq", "p1", lease)
    assert held.desired_state == "stopped"
    record, _ = await store.revise("lq", "p1", "alice", "b", False)
    assert record.lease is None and record.status is Status.SUBMITTED
    with pytest.raises(errors.LeaseLost):
        await store.update_status("lq", "p1", StatusUpdate(Status.RUNNING, lease=lease))
    # retiring the old revision needs no lease
    await store.update_status("lq", "p1", StatusUpdate(Status.STOPPED, revision=0))
    [again] = await store.claim("lq", "w2", 1)
    assert again.revision == 1 and again.lease is not None and again.lease.worker == "w2"


async def test_a_new_revision_has_no_deadline(store: Store) -> None:
    await store.put_datasource(Datasource("dl", "deadlines", job_timeout=60))
    record, _ = await store.submit("dl", "p1", "alice", "a")
    assert record.deadline is not None
    revised, _ = await store.revise("dl", "p1", "alice", "b", False)
    assert revised.deadline is None


async def test_events_fold_into_the_record(store: Store, ds: str) -> None:
    """Every event's record is the job's record after it: the last one is the current record."""
    await started(store, ds, request="a")
    await store.revise(ds, "p1", "alice", "b", True)
    await store.update_status(ds, "p1", up(Status.FAILED, 1))
    await store.set_desired(ds, "p1", "alice", "stopped")
    events: list[Event] = await store.job_events(ds, "p1")
    assert events[-1].record == await store.get_job(ds, "p1")
    assert [e.record.version for e in events] == list(range(1, len(events) + 1))
