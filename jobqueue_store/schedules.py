"""Schedules and their runs: the records, the validation of a schedule body, and the rules.

A **schedule** is a job definition the store submits later, once (``at``) or repeatedly
(``cron``, 5 fields, in an IANA ``timezone``). Each submission is a **run**: an ordinary job of
the schedule's client with id ``<schedule>.<fire time ms>``. Fire times are computed by the
maintained cron library ``cronsim`` in the schedule's time zone (``zoneinfo``), so daylight-saving
edges behave as cronsim defines them.

The schedule's next fire time is its row's due time: the store's timer round
(:meth:`~jobqueue_store.storage.base.Store.fire_due`) picks the schedules whose ``next_run_at``
has passed, and :func:`decide_fire` says which runs to submit and what the schedule becomes, all
in the transaction that holds the schedule's committed row. The run ids are deterministic and
the schedule's ``next_run_at`` moves past them in the same commit, so each fire time gives one
run at most, across restarts and store processes.

Like :mod:`jobqueue_store.lifecycle`, nothing here reads a clock or the database: ``now`` is
passed in.
"""

from __future__ import annotations

import enum
import functools
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobqueue_store.errors import BadRequest, Conflict
from jobqueue_store.validation import MAX_TIMEOUT, whole_number

SCHEDULE_ID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,100}")
SCHEDULE_FIELDS = frozenset(
    {"schedule", "request", "at", "cron", "timezone", "catch_up", "timeout", "client"}
)
MAX_CATCH_UP = 1_000
"""With ``catch_up: "all"``, at most this many missed fire times give runs (the latest ones)."""
LATE_TOLERANCE_MS = 30_000
"""A fire time more than this late when its round runs counts as *missed* (the store was down):
``catch_up`` decides whether it gives a run."""
TEST_SECONDS_ENV = "JOBQUEUE_STORE_TEST_CRON_SECONDS"
"""Test only: when set to ``1``, a cron expression may have a sixth, leading seconds field, so
end-to-end tests need not wait minutes. Never set it in production."""


class CatchUp(enum.StrEnum):
    """What a schedule does with fire times missed while the store was down."""

    NONE = "none"
    ONE = "one"
    ALL = "all"


ScheduleState = Literal["active", "paused", "deleted"]
ScheduleAction = Literal["pause", "resume", "delete"]


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated ``POST /<DSID>/schedule/`` body (the client is decided by the service)."""

    schedule: str
    request: Any
    at: int | None = None
    cron: str | None = None
    timezone: str | None = None
    catch_up: CatchUp = CatchUp.ONE
    timeout: int | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule as stored and sent on the wire."""

    schedule: str
    client: str
    datasource_id: str
    request: Any
    at: int | None
    cron: str | None
    timezone: str | None
    catch_up: CatchUp
    timeout: int | None
    state: ScheduleState
    next_run_at: int | None
    last_run: str | None
    runs: int
    version: int
    created_at: int
    updated_at: int

    def to_wire(self) -> dict[str, Any]:
        """The schedule record: ``at`` for a one-off, ``cron`` and ``timezone`` for a
        recurring one; ``timeout`` only when set."""
        out: dict[str, Any] = {
            "schedule": self.schedule,
            "client": self.client,
            "datasource_id": self.datasource_id,
            "request": self.request,
        }
        if self.at is not None:
            out["at"] = self.at
        if self.cron is not None:
            out["cron"] = self.cron
            out["timezone"] = self.timezone
        out["catch_up"] = self.catch_up.value
        if self.timeout is not None:
            out["timeout"] = self.timeout
        out.update(
            state=self.state,
            next_run_at=self.next_run_at,
            last_run=self.last_run,
            runs=self.runs,
            version=self.version,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ScheduleRecord:
        """Rebuild a record from its wire form (the stores keep it as JSON)."""
        return cls(
            schedule=data["schedule"],
            client=data["client"],
            datasource_id=data["datasource_id"],
            request=data["request"],
            at=data.get("at"),
            cron=data.get("cron"),
            timezone=data.get("timezone"),
            catch_up=CatchUp(data.get("catch_up", "one")),
            timeout=data.get("timeout"),
            state=data["state"],
            next_run_at=data["next_run_at"],
            last_run=data["last_run"],
            runs=data["runs"],
            version=data["version"],
            created_at=data["created_at"],
            updated_at=data["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class ScheduleEvent:
    """A change of a schedule: one entry of the store-wide log (its own ``seq``), sent to the
    schedule's client's ``/sub/<DSID>/job`` sockets as a ``schedule`` notification."""

    seq: int
    datasource_id: str
    client: str
    timestamp: int
    schedule: ScheduleRecord
    type: Literal["schedule"] = "schedule"

    @property
    def job(self) -> str:
        """The schedule id (the hub routes by it; no job channel gets a schedule event)."""
        return self.schedule.schedule

    @property
    def in_request_stream(self) -> bool:
        """Never: drivers see the runs, not the schedule."""
        return False

    def notification(self) -> dict[str, Any]:
        """``{"type": "schedule", "schedule", "seq", "data": <schedule record>}``."""
        return {
            "datasource_id": self.datasource_id,
            "type": "schedule",
            "schedule": self.schedule.schedule,
            "client": self.client,
            "seq": self.seq,
            "data": self.schedule.to_wire(),
        }


@dataclass(frozen=True, slots=True)
class SchedulePage:
    """One page of a client's schedules, newest first."""

    schedules: list[ScheduleRecord]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Fire:
    """What a timer round does to a due schedule: submit ``runs`` (fire times, ms, oldest
    first) and store ``record``."""

    runs: list[int]
    record: ScheduleRecord


def run_id(schedule: str, fire_ms: int) -> str:
    """The id of the run for fire time ``fire_ms``."""
    return f"{schedule}.{fire_ms}"


# validation -------------------------------------------------------------------------------------
def _seconds_allowed() -> bool:
    return os.environ.get(TEST_SECONDS_ENV) == "1"


def check_cron(expr: Any) -> str:
    """``expr`` if it is a valid 5-field cron expression that fires at some time, else
    ``BadRequest`` naming it."""
    if not isinstance(expr, str):
        raise BadRequest(
            f'The "cron" value must be a 5-field cron expression text such as "*/5 * * * *", '
            f"not {expr!r}."
        )
    fields = expr.split()
    if len(fields) != 5 and not (len(fields) == 6 and _seconds_allowed()):
        raise BadRequest(
            f"The cron expression {expr!r} must have 5 fields (minute hour day-of-month month "
            f'day-of-week), e.g. "*/5 * * * *"; it has {len(fields)}.'
        )
    try:
        next(CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC)))
    except CronSimError as exc:
        raise BadRequest(f"The cron expression {expr!r} is not valid: {exc}.") from None
    except StopIteration:
        raise BadRequest(f"The cron expression {expr!r} never fires.") from None
    return expr


def check_timezone(name: Any) -> str:
    """``name`` if it is a known IANA time zone, else ``BadRequest`` naming it."""
    if not isinstance(name, str):
        raise BadRequest(f'The "timezone" must be an IANA time zone name text, not {name!r}.')
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/London' or 'UTC'."
        ) from None
    return name


def parse_at(value: Any) -> int:
    """An ``at`` as ms since the epoch: a whole number of ms, or an RFC 3339 time with an
    offset; else ``BadRequest``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise BadRequest(f'The "at" time must not be before 1970, not {value}.')
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            ms = int(moment.timestamp() * 1000)
            if ms < 0:
                raise BadRequest(f'The "at" time must not be before 1970, not {value!r}.')
            return ms
    raise BadRequest(
        f'The "at" value {value!r} is not a time: give milliseconds since the Unix epoch or an '
        'RFC 3339 time with its offset, such as "2026-12-24T18:00:00Z".'
    )


def schedule_submission(body: Any) -> ScheduleSpec:
    """Validate a ``POST /<DSID>/schedule/`` body."""
    if not isinstance(body, dict):
        raise BadRequest(
            'The body must be a JSON object {"schedule": "<id>", "request": <JSON>, and "at" or '
            '"cron"}.'
        )
    unknown = sorted(set(body) - SCHEDULE_FIELDS)
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {', '.join(map(repr, unknown))} in the schedule: allowed are "
            f"{', '.join(sorted(SCHEDULE_FIELDS))}."
        )
    sid = body.get("schedule")
    if not isinstance(sid, str) or not SCHEDULE_ID_RE.fullmatch(sid):
        raise BadRequest(
            f"The schedule id must be 1 to 100 characters of A-Z a-z 0-9 . _ ~ : -, not {sid!r}."
        )
    if "request" not in body:
        raise BadRequest('The schedule has no "request": give the JSON each run submits.')
    has_at, has_cron = body.get("at") is not None, body.get("cron") is not None
    if has_at and has_cron:
        raise BadRequest('Give either "at" (one run) or "cron" (recurring runs), not both.')
    if not has_at and not has_cron:
        raise BadRequest(
            'The schedule needs "at" (a time for one run) or "cron" (a 5-field cron expression).'
        )
    at = cron = zone = None
    if has_at:
        if body.get("timezone") is not None:
            raise BadRequest(
                '"timezone" applies to "cron" schedules; an "at" time carries its own offset.'
            )
        at = parse_at(body["at"])
    else:
        cron = check_cron(body["cron"])
        zone = check_timezone(body.get("timezone") if body.get("timezone") is not None else "UTC")
    catch_up = body.get("catch_up", "one")
    if catch_up not in ("none", "one", "all"):
        raise BadRequest(f'"catch_up" must be "none", "one" or "all", not {catch_up!r}.')
    timeout = None
    if body.get("timeout") is not None:
        timeout = whole_number(body, "timeout", 1, MAX_TIMEOUT, "seconds")
    client = body.get("client")
    if client is not None and not isinstance(client, str):
        raise BadRequest(f'The "client" must be a client id text, not {client!r}.')
    return ScheduleSpec(sid, body["request"], at, cron, zone, CatchUp(catch_up), timeout, client)


# fire times -------------------------------------------------------------------------------------
def _dt(ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def next_fire_after(cron: str, zone: str, after_ms: int) -> int | None:
    """The first fire time of ``cron`` in ``zone`` strictly after ``after_ms``."""
    try:
        return _ms(next(CronSim(cron, _dt(after_ms, zone))))
    except StopIteration:
        return None


def fire_times(cron: str, zone: str, after_ms: int, until_ms: int) -> list[int]:
    """Every fire time in ``(after_ms, until_ms]``, oldest first (tests and the rules)."""
    out: list[int] = []
    for moment in CronSim(cron, _dt(after_ms, zone)):
        ms = _ms(moment)
        if ms > until_ms:
            break
        out.append(ms)
    return out


def _latest_fire_times(cron: str, zone: str, since_ms: int, now: int, most: int) -> list[int]:
    """The latest ``most`` fire times in ``[since_ms, now]``, oldest first (walks backwards
    from ``now``, so a long outage costs no more than ``most`` steps)."""
    out: list[int] = []
    start = _dt(now, zone) + timedelta(milliseconds=1)  # reverse iteration excludes its start
    for moment in CronSim(cron, start, reverse=True):
        ms = _ms(moment)
        if ms < since_ms or len(out) >= most:
            break
        out.append(ms)
    out.reverse()
    return out


@functools.lru_cache(maxsize=4096)
def _two_fire_times(cron: str, zone: str, from_ms: int) -> tuple[int, int | None]:
    """The first two fire times at or after ``from_ms`` (cached: the many schedules that share
    an expression and a fire time are walked once per round)."""
    walk = CronSim(cron, _dt(from_ms - 1, zone))
    try:
        first = _ms(next(walk))
    except StopIteration:
        return from_ms, None
    try:
        return first, _ms(next(walk))
    except StopIteration:
        return first, None


def _due_fire_times(record: ScheduleRecord, now: int) -> tuple[list[int], int | None]:
    """The fire times of a due cron schedule to run at ``now`` (before ``catch_up: none``
    drops the late ones), and the first fire time after ``now``."""
    assert record.cron is not None and record.timezone is not None
    assert record.next_run_at is not None
    # The usual case, one fire time due: one walk from the stored next fire time.
    first, second = _two_fire_times(record.cron, record.timezone, record.next_run_at)
    if second is None:
        second = now + 1
    if first >= record.next_run_at and second > now:
        return ([first] if first <= now else []), second
    most = MAX_CATCH_UP if record.catch_up is CatchUp.ALL else 1
    due = _latest_fire_times(record.cron, record.timezone, record.next_run_at, now, most)
    return due, next_fire_after(record.cron, record.timezone, now)


# rules ------------------------------------------------------------------------------------------
def _definition(spec: ScheduleSpec, client: str) -> tuple[Any, ...]:
    return (client, spec.request, spec.at, spec.cron, spec.timezone, spec.catch_up, spec.timeout)


def _record_definition(rec: ScheduleRecord) -> tuple[Any, ...]:
    return (rec.client, rec.request, rec.at, rec.cron, rec.timezone, rec.catch_up, rec.timeout)


def decide_create(
    existing: ScheduleRecord | None, spec: ScheduleSpec, *, dsid: str, client: str, now: int
) -> tuple[ScheduleRecord, bool]:
    """``(record, created)`` for a create: a new schedule, or the stored one for an identical
    repeat; ``Conflict`` for another definition under a used id, or a deleted id."""
    if existing is not None:
        if existing.state == "deleted":
            raise Conflict(
                f"Schedule '{spec.schedule}' was deleted: a schedule id is never reused; "
                "choose another id."
            )
        if _record_definition(existing) != _definition(spec, client):
            raise Conflict(
                f"Schedule '{spec.schedule}' already exists with another definition: use "
                "another id, or delete it and create the new one under a new id."
            )
        return existing, False
    if spec.at is not None:
        next_run: int | None = spec.at
    else:
        assert spec.cron is not None and spec.timezone is not None
        next_run = next_fire_after(spec.cron, spec.timezone, now)
    record = ScheduleRecord(
        schedule=spec.schedule,
        client=client,
        datasource_id=dsid,
        request=spec.request,
        at=spec.at,
        cron=spec.cron,
        timezone=spec.timezone,
        catch_up=spec.catch_up,
        timeout=spec.timeout,
        state="active",
        next_run_at=next_run,
        last_run=None,
        runs=0,
        version=1,
        created_at=now,
        updated_at=now,
    )
    return record, True


def _changed(record: ScheduleRecord, now: int, **changes: Any) -> ScheduleRecord:
    return replace(
        record, version=record.version + 1, updated_at=max(now, record.updated_at), **changes
    )


def decide_pause(record: ScheduleRecord, now: int) -> ScheduleRecord | None:
    """Pause: no runs until resumed. ``None`` if already paused (nothing to write)."""
    if record.state == "deleted":
        raise Conflict(f"Schedule '{record.schedule}' is deleted: it cannot be paused.")
    if record.state == "paused":
        return None
    return _changed(record, now, state="paused", next_run_at=None)


def decide_resume(record: ScheduleRecord, now: int) -> ScheduleRecord | None:
    """Resume: fire times from now on (those that passed while paused give no run; a one-off
    not yet run fires at once if its time passed). ``None`` if already active."""
    if record.state == "deleted":
        raise Conflict(f"Schedule '{record.schedule}' is deleted: it cannot be resumed.")
    if record.state == "active":
        return None
    if record.at is not None:
        next_run = record.at if record.runs == 0 else None
    else:
        assert record.cron is not None and record.timezone is not None
        next_run = next_fire_after(record.cron, record.timezone, now)
    return _changed(record, now, state="active", next_run_at=next_run)


def decide_delete(record: ScheduleRecord, now: int) -> ScheduleRecord | None:
    """Soft delete: state ``deleted``, no further runs; ``None`` if already deleted."""
    if record.state == "deleted":
        return None
    return _changed(record, now, state="deleted", next_run_at=None)


def decide_fire(record: ScheduleRecord, now: int) -> Fire | None:
    """The runs a timer round at ``now`` submits for ``record`` and the schedule after them;
    ``None`` if nothing is due.

    A one-off fires its ``at`` once, however late. A cron schedule's due fire times are those
    in ``[next_run_at, now]``; the latest is *on time* if it is at most
    :data:`LATE_TOLERANCE_MS` old, every other is *missed*. ``catch_up``: ``none`` runs only an
    on-time fire time; ``one`` runs the latest; ``all`` runs each (the latest
    :data:`MAX_CATCH_UP`). ``next_run_at`` becomes the first fire time after ``now``.
    """
    if record.state != "active" or record.next_run_at is None or record.next_run_at > now:
        return None
    if record.at is not None:
        runs = [record.next_run_at]
        next_run: int | None = None
    else:
        assert record.cron is not None and record.timezone is not None
        due, next_run = _due_fire_times(record, now)
        if record.catch_up is CatchUp.NONE:
            due = [t for t in due if now - t <= LATE_TOLERANCE_MS]
        runs = due
    changes: dict[str, Any] = {"next_run_at": next_run}
    if runs:
        changes["last_run"] = run_id(record.schedule, runs[-1])
        changes["runs"] = record.runs + len(runs)
    return Fire(runs, _changed(record, now, **changes))
