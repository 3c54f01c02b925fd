"""``models.evolve`` changes a record as ``dataclasses.replace`` does."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace

import pytest

from jobqueue_store.models import JobRecord, Lease, Status, evolve


def _every_field_set() -> JobRecord:
    return JobRecord(
        datasource_id="ds",
        job="j1",
        client="app",
        status=Status.RUNNING,
        request={"n": 1},
        cancel_requested=True,
        version=7,
        submitted_at=1_000,
        updated_at=2_000,
        response={"ok": True},
        has_response=True,
        error="late",
        progress=0.5,
        lease=Lease("l1", "w1", 2, 3_000),
        attempts=2,
        retry_at=4_000,
        deadline=5_000,
        revision=3,
        desired_state="stopped",
        rollback=True,
        rollback_of=2,
        schedule="s1",
        scheduled_for=6_000,
    )


def test_every_field_is_kept_or_changed_as_replace_does() -> None:
    record = _every_field_set()
    for f in fields(JobRecord):
        if f.init and f.default is not MISSING:
            # No field is left at its default: a field added to JobRecord must be added above.
            assert getattr(record, f.name) != f.default, f.name
    record.wire_bytes()  # encoded and kept
    changes = {"status": Status.COMPLETE, "progress": None, "version": 8, "updated_at": 2_500}
    new = evolve(record, **changes)
    assert new == replace(record, **changes)  # type: ignore[arg-type]
    assert new.wire_bytes() == replace(record, **changes).wire_bytes()  # type: ignore[arg-type]
    assert new.wire_bytes() != record.wire_bytes()
    assert evolve(record) == record and evolve(record) is not record


def test_no_unknown_field_and_not_the_kept_encoding() -> None:
    record = _every_field_set()
    with pytest.raises(AttributeError):
        evolve(record, colour="red")
    with pytest.raises(TypeError):
        evolve(record, _wire=b"{}")
