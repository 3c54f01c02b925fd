"""The rules of long-running jobs (jobqueue_store.revisions) as pure functions, and the wire
shapes they produce checked against the schemas."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_store import errors
from jobqueue_store.lifecycle import decide_submit, decide_update
from jobqueue_store.models import Event, EventType, JobRecord, Status, StatusUpdate
from jobqueue_store.revisions import (
    Revision,
    decide_desired,
    decide_revise,
    history,
    needs_history,
    rollback_target,
)
from tests.wire import validate

T0 = 1_700_000_000_000


def _job(request: Any = "a") -> JobRecord:
    return decide_submit(
        None, datasource_id="ds", job="p1", client="alice", request=request, timestamp=T0
    ).record


def _event(seq: int, type_: EventType, rec: JobRecord, data: Any = None) -> Event:
    return Event(seq, rec.datasource_id, type_, rec.job, rec.client, T0 + seq, rec, data)


def test_revise_and_its_entry_match_the_schemas() -> None:
    out = decide_revise(_job(), client="alice", request="b", rollback=True, timestamp=T0 + 5)
    assert out.event == "update"
    validate("status_record", out.record.to_wire())
    entry = _event(2, "update", out.record, out.data).stream_entry()
    validate("stream_entry", entry)
    assert entry["data"] == {
        "job": "p1",
        "client": "alice",
        "request": "b",
        "revision": 1,
        "previous_revision": 0,
    }
    validate("notification", _event(2, "update", out.record, out.data).notification())
    validate("job_update", {"request": "b", "rollback": True})


def test_stop_entry_matches_the_schema_and_repeats_are_no_ops() -> None:
    out = decide_desired(_job(), client="alice", state="stopped", timestamp=T0 + 1)
    assert out.event == "stop"
    validate("stream_entry", _event(2, "stop", out.record, out.data).stream_entry())
    again = decide_desired(out.record, client="alice", state="stopped", timestamp=T0 + 2)
    assert again.event is None
    start = decide_desired(out.record, client="alice", state="running", timestamp=T0 + 3)
    assert start.event == "start" and start.record.desired_state == "running"


def test_bad_stream_entries_of_the_new_types_are_rejected() -> None:
    out = decide_revise(_job(), client="alice", request="b", rollback=False, timestamp=T0 + 5)
    entry = _event(2, "update", out.record, out.data).stream_entry()
    del entry["data"]["previous_revision"]
    with pytest.raises(AssertionError):
        validate("stream_entry", entry)
    stop = _event(2, "stop", out.record, {"job": "p1", "client": "alice"}).stream_entry()
    with pytest.raises(AssertionError):
        validate("stream_entry", stop)


def test_foreign_client_and_terminal_stop() -> None:
    with pytest.raises(errors.Forbidden):
        decide_revise(_job(), client="bob", request="b", rollback=False, timestamp=T0)
    done = decide_update(_job(), StatusUpdate(Status.COMPLETE), timestamp=T0 + 1).record
    with pytest.raises(errors.Conflict, match="cannot be stopped"):
        decide_desired(done, client="alice", state="stopped", timestamp=T0 + 2)


def test_rollback_needs_history_only_for_a_failure_with_rollback() -> None:
    rev = decide_revise(_job(), client="alice", request="b", rollback=True, timestamp=T0).record
    assert needs_history(rev, StatusUpdate(Status.FAILED))
    assert needs_history(rev, StatusUpdate(Status.FAILED, revision=1))
    assert not needs_history(rev, StatusUpdate(Status.FAILED, revision=0))
    assert not needs_history(rev, StatusUpdate(Status.RUNNING))
    with pytest.raises(ValueError):
        decide_update(rev, StatusUpdate(Status.FAILED), timestamp=T0 + 1)


def test_history_folds_events_and_validates() -> None:
    job = _job("a")
    running = decide_update(job, StatusUpdate(Status.RUNNING), timestamp=T0 + 1).record
    rev = decide_revise(running, client="alice", request="b", rollback=True, timestamp=T0 + 2)
    events = [
        _event(1, "request", job),
        _event(2, "status", running),
        _event(3, "update", rev.record, rev.data),
    ]
    revs = history(events)
    assert [(r.revision, r.status, r.request) for r in revs] == [
        (0, Status.RUNNING, "a"),
        (1, Status.SUBMITTED, "b"),
    ]
    target = rollback_target(revs, 1)
    assert target is not None and target.revision == 0
    assert rollback_target(revs, 0) is None
    out = decide_update(rev.record, StatusUpdate(Status.FAILED), timestamp=T0 + 4, history=revs)
    assert out.then is not None and out.then.record.request == "a"
    assert out.final.revision == 2 and out.final.rollback_of == 1
    validate("revisions", {"revisions": [r.to_wire() for r in revs]})


def test_revision_wire_shape() -> None:
    rev = Revision(1, {"x": 1}, Status.FAILED, T0, T0 + 1, error="boom", rollback=True)
    wire = rev.to_wire()
    assert wire == {
        "revision": 1,
        "request": {"x": 1},
        "status": "failed",
        "rollback": True,
        "rollback_of": None,
        "submitted_at": T0,
        "updated_at": T0 + 1,
        "running_at": None,
        "error": "boom",
    }
    validate("revisions", {"revisions": [wire]})
