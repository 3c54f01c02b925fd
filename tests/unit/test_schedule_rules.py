"""The schedule rules and validation (jobqueue_store.schedules), as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobqueue_store.errors import BadRequest, Conflict
from jobqueue_store.schedules import (
    LATE_TOLERANCE_MS,
    TEST_SECONDS_ENV,
    CatchUp,
    ScheduleSpec,
    check_cron,
    decide_create,
    decide_delete,
    decide_fire,
    decide_pause,
    decide_resume,
    fire_times,
    next_fire_after,
    parse_at,
    schedule_submission,
)

T0 = int(datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000


def test_parse_at_accepts_ms_and_rfc3339_with_an_offset() -> None:
    assert parse_at(T0) == T0
    assert parse_at("2026-01-05T12:00:00Z") == T0
    assert parse_at("2026-01-05T13:00:00+01:00") == T0
    for bad in ("2026-01-05T12:00:00", "soon", 1.5, None, True, -1, "0002-01-01T00:00:04Z"):
        with pytest.raises(BadRequest):
            parse_at(bad)


def test_cron_must_have_five_fields_unless_the_test_switch_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert check_cron("*/5 * * * *") == "*/5 * * * *"
    with pytest.raises(BadRequest, match="5 fields"):
        check_cron("* * * * * *")
    monkeypatch.setenv(TEST_SECONDS_ENV, "1")
    assert check_cron("*/2 * * * * *") == "*/2 * * * * *"


def test_submission_defaults() -> None:
    spec = schedule_submission({"schedule": "a", "request": None, "cron": "0 * * * *"})
    assert spec == ScheduleSpec("a", None, cron="0 * * * *", timezone="UTC")
    assert spec.catch_up is CatchUp.ONE


def spec(**kw: object) -> ScheduleSpec:
    base: dict[str, object] = {"cron": "*/10 * * * *", "timezone": "UTC"}
    base.update(kw)
    return ScheduleSpec("s", {"r": 1}, **base)  # type: ignore[arg-type]


def test_create_repeat_conflict_and_deleted() -> None:
    rec, created = decide_create(None, spec(), dsid="d", client="c", now=T0)
    assert created and rec.next_run_at == T0 + 10 * MIN
    same, again = decide_create(rec, spec(), dsid="d", client="c", now=T0 + 1)
    assert same == rec and not again
    with pytest.raises(Conflict):
        decide_create(rec, spec(timeout=5), dsid="d", client="c", now=T0)
    gone = decide_delete(rec, T0)
    assert gone is not None and decide_delete(gone, T0) is None
    with pytest.raises(Conflict, match="never reused"):
        decide_create(gone, spec(), dsid="d", client="c", now=T0)
    with pytest.raises(Conflict):
        decide_pause(gone, T0)
    with pytest.raises(Conflict):
        decide_resume(gone, T0)


def test_fire_on_time_late_and_not_due() -> None:
    rec, _ = decide_create(None, spec(catch_up=CatchUp.NONE), dsid="d", client="c", now=T0)
    assert decide_fire(rec, T0 + 10 * MIN - 1) is None
    on_time = decide_fire(rec, T0 + 10 * MIN + LATE_TOLERANCE_MS)
    assert on_time is not None and on_time.runs == [T0 + 10 * MIN]
    assert on_time.record.next_run_at == T0 + 20 * MIN and on_time.record.runs == 1
    late = decide_fire(rec, T0 + 10 * MIN + LATE_TOLERANCE_MS + 1)
    assert late is not None and late.runs == [] and late.record.runs == 0
    assert late.record.version == 2  # the next fire time moved: a change


def test_fire_catch_up_one_and_all() -> None:
    for mode, count in ((CatchUp.ONE, 1), (CatchUp.ALL, 6)):
        rec, _ = decide_create(None, spec(catch_up=mode), dsid="d", client="c", now=T0)
        fire = decide_fire(rec, T0 + 65 * MIN)
        assert fire is not None
        assert fire.runs == fire_times("*/10 * * * *", "UTC", T0, T0 + 65 * MIN)[-count:]
        assert fire.record.last_run == f"s.{T0 + 60 * MIN}"
        assert fire.record.next_run_at == T0 + 70 * MIN


def test_pause_resume_skips_the_paused_fire_times() -> None:
    rec, _ = decide_create(None, spec(), dsid="d", client="c", now=T0)
    paused = decide_pause(rec, T0 + MIN)
    assert paused is not None and decide_pause(paused, T0) is None
    assert decide_fire(paused, T0 + 100 * MIN) is None
    resumed = decide_resume(paused, T0 + 100 * MIN)
    assert resumed is not None and resumed.next_run_at == T0 + 110 * MIN
    assert decide_resume(resumed, T0) is None


def test_one_off_fires_once_however_late() -> None:
    rec, _ = decide_create(None, ScheduleSpec("o", 1, at=T0), dsid="d", client="c", now=T0 + 5)
    fire = decide_fire(rec, T0 + 10**9)
    assert fire is not None and fire.runs == [T0] and fire.record.next_run_at is None
    assert decide_fire(fire.record, T0 + 10**10) is None


def test_next_fire_in_a_time_zone() -> None:
    # 09:00 in New York in January is 14:00 UTC
    assert next_fire_after("0 9 * * *", "America/New_York", T0) == T0 + 2 * 60 * MIN
