"""Long-running jobs (pipelines): revisions, updates with rollback, stop and start.

Pure rules, called by both stores inside the transaction that holds the job's row, like those of
:mod:`jobqueue_store.lifecycle`:

- :func:`decide_revise`: a client's ``PUT`` of a new request makes a new revision (``update``
  entry); the same request as the current revision changes nothing. A ``failed``, ``complete``
  or ``cancelled`` job is reopened by it; a ``forbidden`` one is not.
- :func:`decide_desired`: ``stop`` and ``start`` set the job's ``desired_state`` (``stop`` /
  ``start`` entry); asking for what is already asked changes nothing.
- :func:`check_revision`: a driver's report naming an older revision changes only that
  revision's history (one ``status`` event whose data names the revision); a revision the job
  never had is refused.
- :func:`after_update`: a revision submitted with ``rollback`` and reported ``failed`` is followed,
  in the same write, by a new revision with the request of the last earlier revision that reached
  ``running`` (two events: the failure, then the ``update`` entry). With no such revision the job
  stays ``failed`` and its error says why.

The history of a job's revisions is the fold of its events (:func:`history`); nothing else is
stored for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jobqueue_store.errors import Conflict, Forbidden
from jobqueue_store.lifecycle import Outcome, same_request
from jobqueue_store.models import (
    DesiredState,
    Event,
    EventType,
    JobRecord,
    Status,
    StatusUpdate,
)

REOPENABLE = frozenset({Status.FAILED, Status.COMPLETE, Status.CANCELLED})
"""Terminal statuses that an update reopens (``forbidden`` stays final)."""


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of a job as ``GET .../revisions`` lists it.

    ``running_at``: when it first reached ``running`` (``None``: never), the mark that makes it
    a rollback target.
    """

    revision: int
    request: Any
    status: Status
    submitted_at: int
    updated_at: int
    error: str | None = None
    rollback: bool = False
    rollback_of: int | None = None
    running_at: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The revision as an item of ``{"revisions": [...]}``."""
        out: dict[str, Any] = {
            "revision": self.revision,
            "request": self.request,
            "status": self.status.value,
            "rollback": self.rollback,
            "rollback_of": self.rollback_of,
            "submitted_at": self.submitted_at,
            "updated_at": self.updated_at,
            "running_at": self.running_at,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


def update_entry_data(record: JobRecord, previous: int) -> dict[str, Any]:
    """The data of an ``update`` entry: the new revision's numbers and request (last, as in a
    ``request`` entry)."""
    data: dict[str, Any] = {
        "job": record.job,
        "client": record.client,
        "revision": record.revision,
        "previous_revision": previous,
    }
    if record.rollback_of is not None:
        data["rollback_of"] = record.rollback_of
    data["request"] = record.request
    return data


def _new_revision(
    existing: JobRecord, request: Any, *, rollback: bool, rollback_of: int | None, timestamp: int
) -> Outcome:
    record = replace(
        existing,
        status=Status.SUBMITTED,
        request=request,
        response=None,
        has_response=False,
        error=None,
        progress=None,
        cancel_requested=False,
        version=existing.version + 1,
        updated_at=max(timestamp, existing.updated_at),
        # A new revision is a new claim on a lease datasource, and has no deadline.
        lease=None,
        attempts=0,
        retry_at=None,
        deadline=None,
        revision=existing.revision + 1,
        desired_state="running",
        rollback=rollback,
        rollback_of=rollback_of,
    )
    return Outcome(record, "update", data=update_entry_data(record, existing.revision))


def decide_revise(
    existing: JobRecord,
    *,
    client: str | None,
    request: Any,
    rollback: bool,
    timestamp: int,
) -> Outcome:
    """A client updates ``existing``'s request (``client`` ``None``: an admin)."""
    if client is not None and existing.client != client:
        raise Forbidden(f"Job '{existing.job}' belongs to another client.")
    if existing.status is Status.FORBIDDEN:
        raise Conflict(
            f"Job '{existing.job}' is forbidden: the driver refused it, so it cannot be updated; "
            "submit a new job instead."
        )
    if same_request(existing.request, request):
        return Outcome(existing, None)
    return _new_revision(
        existing, request, rollback=rollback, rollback_of=None, timestamp=timestamp
    )


def decide_desired(
    existing: JobRecord, *, client: str | None, state: DesiredState, timestamp: int
) -> Outcome:
    """A client asks ``existing`` to stop (``state`` ``"stopped"``) or start (``"running"``)."""
    if client is not None and existing.client != client:
        raise Forbidden(f"Job '{existing.job}' belongs to another client.")
    verb = "stopped" if state == "stopped" else "started"
    if existing.terminal:
        raise Conflict(
            f"Job '{existing.job}' is {existing.status.value} and cannot be {verb}: update it "
            "with a new request to reopen it."
        )
    if existing.desired_state == state:
        return Outcome(existing, None)
    record = replace(
        existing,
        desired_state=state,
        version=existing.version + 1,
        updated_at=max(timestamp, existing.updated_at),
    )
    event: EventType = "stop" if state == "stopped" else "start"
    data = {"job": record.job, "client": record.client, "revision": record.revision}
    return Outcome(record, event, data=data)


def check_revision(existing: JobRecord, update: StatusUpdate, *, timestamp: int) -> Outcome | None:
    """An update naming a revision: ``None`` for the current one (decided as usual), the
    history-only change for an older one; a revision the job never had is a conflict."""
    n = update.revision
    if n is None or n == existing.revision:
        return None
    if n > existing.revision:
        raise Conflict(
            f"Job '{existing.job}' has no revision {n}: its current revision is "
            f"{existing.revision}."
        )
    record = replace(
        existing, version=existing.version + 1, updated_at=max(timestamp, existing.updated_at)
    )
    data: dict[str, Any] = {"revision": n, "status": update.status.value}
    if update.error is not None:
        data["error"] = update.error
    return Outcome(record, "status", data=data)


def needs_history(existing: JobRecord, update: StatusUpdate) -> bool:
    """Whether deciding ``update`` needs the job's revisions (a rollback may follow)."""
    return (
        existing.rollback
        and update.status is Status.FAILED
        and update.revision in (None, existing.revision)
        and not existing.terminal
    )


def refused_error(existing: JobRecord, error: str | None) -> str:
    """The error of a failed revision that could not roll back: the driver's, and why."""
    why = (
        f"revision {existing.revision} failed and was not rolled back: no earlier revision of "
        f"job '{existing.job}' ever reached running"
    )
    return why[0].upper() + why[1:] + "." if error is None else f"{error} ({why})"


def is_refused_repeat(existing: JobRecord, update: StatusUpdate) -> bool:
    """Whether ``update`` repeats the ``failed`` report whose rollback was refused."""
    return (
        existing.rollback
        and existing.status is Status.FAILED
        and update.status is Status.FAILED
        and existing.error == refused_error(existing, update.error)
        and existing.has_response == update.has_response
        and (not update.has_response or same_request(existing.response, update.response))
        and existing.progress == update.progress
    )


def rollback_target(revisions: Sequence[Revision], failed: int) -> Revision | None:
    """The last revision before ``failed`` that reached ``running``, or ``None``."""
    for rev in reversed(revisions):
        if rev.revision < failed and rev.running_at is not None:
            return rev
    return None


def after_update(
    existing: JobRecord,
    update: StatusUpdate,
    outcome: Outcome,
    revisions: Sequence[Revision] | None,
    *,
    timestamp: int,
) -> Outcome:
    """Attach the rollback to ``outcome`` when the current revision just failed with
    ``rollback`` set; with no revision to roll back to, the error says why."""
    record = outcome.record
    if not (
        outcome.event == "status"
        and needs_history(existing, update)
        and record.status is Status.FAILED
    ):
        return outcome
    if revisions is None:
        raise ValueError("a rollback decision needs the job's revisions")
    target = rollback_target(revisions, existing.revision)
    if target is None:
        return replace(outcome, record=replace(record, error=refused_error(existing, update.error)))
    then = _new_revision(
        record,
        target.request,
        rollback=False,
        rollback_of=existing.revision,
        timestamp=timestamp,
    )
    return replace(outcome, then=then)


def history(events: Iterable[Event]) -> list[Revision]:
    """The revisions of one job, oldest first: the fold of its events in ``seq`` order."""
    revs: dict[int, Revision] = {}
    for event in events:
        rec = event.record
        ts = event.timestamp
        if event.type == "status" and event.data is not None and "revision" in event.data:
            n = event.data["revision"]
            old = revs.get(n)
            if old is None:
                continue
            status = Status(event.data["status"])
            revs[n] = replace(
                old,
                status=status,
                error=event.data.get("error"),
                updated_at=ts,
                running_at=old.running_at
                if old.running_at is not None or status is not Status.RUNNING
                else ts,
            )
            continue
        n = rec.revision
        old = revs.get(n)
        running = ts if rec.status is Status.RUNNING else None
        if old is None:
            revs[n] = Revision(
                revision=n,
                request=rec.request,
                status=rec.status,
                submitted_at=rec.submitted_at if n == 0 else ts,
                updated_at=ts,
                error=rec.error,
                rollback=rec.rollback,
                rollback_of=rec.rollback_of,
                running_at=running,
            )
        else:
            revs[n] = replace(
                old,
                status=rec.status,
                error=rec.error,
                updated_at=ts,
                running_at=old.running_at if old.running_at is not None else running,
            )
    return [revs[n] for n in sorted(revs)]
