"""The rules of leases, redelivery, deadlines and the stream worker slot, as pure functions.

Like :mod:`jobqueue_store.lifecycle`, each function is called by a store inside the transaction
that holds the job's (or slot's) committed row and returns what the write does; nothing here reads
a clock, a random number generator or the database: the store passes ``now`` (ms) and ``rand``
(a float in ``[0, 1)``, for the jitter) in.

A job of a lease datasource is **claimable** when it is ``submitted`` or ``retrying``, no lease
holds it, no cancellation was requested and its ``retry_at`` (if any) has passed. A claim gives it
a new lease and counts an attempt; every accepted update under that lease renews it. A lease that
ends without a terminal status (given back with ``retrying``, or expired) makes the job claimable
again after a delay, unless it was the ``max_attempts``-th claim: then the job ``failed``.

Due times (see :mod:`jobqueue_store.timers`): :func:`next_due` says when :func:`decide_fire` has
something to do for a record; the stores keep it in an indexed column.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime

from jobqueue_store.errors import BadRequest, Conflict, LeaseLost, SlotTaken
from jobqueue_store.lifecycle import Outcome, changes_anything
from jobqueue_store.models import (
    Datasource,
    JobRecord,
    Lease,
    SlotLease,
    Status,
    StatusUpdate,
)

BACKOFF_BASE_MS = 1_000
BACKOFF_CAP_MS = 300_000
CLAIMABLE = frozenset({Status.SUBMITTED, Status.RETRYING})


def new_lease_id() -> str:
    """A fresh, unguessable lease id."""
    return secrets.token_urlsafe(12)


def iso(ms: int) -> str:
    """``ms`` since the epoch as an RFC 3339 UTC time, for sentences."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def backoff_ms(attempts: int, rand: float) -> int:
    """The delay before a job claimed ``attempts`` times may be claimed again: exponential
    (1 s, 2 s, 4 s, ...) capped at 5 minutes, with "equal jitter" (between half and all of it)."""
    exp: int = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** max(0, min(attempts - 1, 30)))
    return exp // 2 + int(exp / 2 * rand)


def deadline_for(submitted_at: int, timeout: int | None, datasource: Datasource) -> int | None:
    """A new job's deadline: its own ``timeout``, else the datasource's ``job_timeout``."""
    seconds = timeout if timeout is not None else datasource.job_timeout
    return None if seconds is None else submitted_at + seconds * 1000


def held(record: JobRecord, now: int) -> bool:
    """Whether an unexpired lease holds the job at ``now``."""
    return record.lease is not None and record.lease.expires_at > now


def claimable(record: JobRecord, now: int) -> bool:
    """Whether a claim at ``now`` may take the job."""
    return (
        record.status in CLAIMABLE
        and record.lease is None
        and not record.cancel_requested
        and (record.retry_at is None or record.retry_at <= now)
    )


def next_due(record: JobRecord, datasource: Datasource | None) -> int | None:
    """When :func:`decide_fire` next has something to do for ``record`` (``None``: never)."""
    if record.terminal:
        return None
    due: list[int] = []
    if record.lease is not None:
        due.append(record.lease.expires_at)
    if record.deadline is not None:
        grace = 0 if datasource is None else datasource.cancel_grace
        due.append(record.deadline + grace * 1000 if record.cancel_requested else record.deadline)
    return min(due) if due else None


# claims -----------------------------------------------------------------------------------------
def require_lease_dispatch(datasource: Datasource) -> None:
    """Refuse a claim on a stream datasource (409)."""
    if not datasource.leased:
        raise Conflict(
            f"Datasource '{datasource.id}' is a stream datasource: its one driver follows the "
            "request stream. Claims are for lease datasources: declare it with "
            '"dispatch": "lease" to let several workers claim its jobs.'
        )


def decide_claim(
    record: JobRecord, datasource: Datasource, *, worker: str, lease_id: str, now: int
) -> Outcome | None:
    """``worker`` claims ``record``: ``accepted`` under a new lease, one more attempt. ``None``
    if the job is not claimable now."""
    if not claimable(record, now):
        return None
    attempt = record.attempts + 1
    new = replace(
        record,
        status=Status.ACCEPTED,
        response=None,
        has_response=False,
        error=None,
        progress=None,
        lease=Lease(lease_id, worker, attempt, now + datasource.lease_seconds * 1000),
        attempts=attempt,
        retry_at=None,
        version=record.version + 1,
        updated_at=max(now, record.updated_at),
    )
    return Outcome(new, "status")


def check_lease(record: JobRecord, lease: str | None, now: int) -> Lease:
    """The job's current lease if ``lease`` names it and it has not expired; else
    :class:`~jobqueue_store.errors.LeaseLost`."""
    if lease is None:
        raise LeaseLost(
            f"Datasource '{record.datasource_id}' is a lease datasource: an update of job "
            f"'{record.job}' must carry the \"lease\" id its claim returned."
        )
    current = record.lease
    if current is None or current.id != lease:
        raise LeaseLost(
            f"Lease '{lease}' does not hold job '{record.job}' (it expired, was given back or "
            "belongs to an earlier claim): stop working on this job."
        )
    if current.expires_at <= now:
        raise LeaseLost(
            f"Lease '{lease}' on job '{record.job}' expired at {iso(current.expires_at)}: stop "
            "working on this job; renew leases sooner (heartbeat at a third of the lease)."
        )
    return current


def decide_heartbeat(record: JobRecord, datasource: Datasource, *, lease: str, now: int) -> Outcome:
    """The holder renews its lease: a new expiry, no event, ``version`` unchanged."""
    if record.terminal:
        raise LeaseLost(
            f"Job '{record.job}' is already {record.status.value}: no lease holds it any more."
        )
    current = check_lease(record, lease, now)
    renewed = replace(current, expires_at=now + datasource.lease_seconds * 1000)
    return Outcome(replace(record, lease=renewed), None, touched=True)


def decide_leased_update(
    existing: JobRecord, update: StatusUpdate, datasource: Datasource, *, now: int, rand: float
) -> Outcome:
    """A status update on a lease datasource, under the lease it carries."""
    if existing.terminal:
        if update.lease is None:
            check_lease(existing, None, now)  # raises: the lease is missing
        if changes_anything(existing, update):
            raise Conflict(
                f"Job '{existing.job}' is already {existing.status.value}: a terminal status is "
                "final."
            )
        return Outcome(existing, None)
    current = check_lease(existing, update.lease, now)
    ts = max(now, existing.updated_at)
    if update.status.terminal:
        record = _set(existing, update, ts, lease=None, retry_at=None)
        return Outcome(record, "status")
    if update.status is Status.RETRYING:
        if update.retry_in is not None:
            retry_at = now + round(update.retry_in * 1000)
        else:
            retry_at = now + backoff_ms(existing.attempts, rand)
        if existing.attempts >= datasource.max_attempts:
            reason = f"worker '{current.worker}' gave it back" + (
                f" ({update.error})" if update.error else ""
            )
            return Outcome(_exhausted(existing, datasource, ts, reason), "status")
        record = _set(existing, update, ts, lease=None, retry_at=retry_at)
        return Outcome(record, "status")
    renewed = replace(current, expires_at=now + datasource.lease_seconds * 1000)
    if not changes_anything(existing, update):
        return Outcome(replace(existing, lease=renewed), None, touched=True)
    return Outcome(_set(existing, update, ts, lease=renewed, retry_at=None), "status")


def _set(
    existing: JobRecord, update: StatusUpdate, ts: int, *, lease: Lease | None, retry_at: int | None
) -> JobRecord:
    return replace(
        existing,
        status=update.status,
        response=update.response if update.has_response else None,
        has_response=update.has_response,
        error=update.error,
        progress=update.progress,
        lease=lease,
        retry_at=retry_at,
        version=existing.version + 1,
        updated_at=ts,
    )


def _exhausted(record: JobRecord, datasource: Datasource, ts: int, reason: str) -> JobRecord:
    return replace(
        record,
        status=Status.FAILED,
        response=None,
        has_response=False,
        progress=None,
        error=(
            f"The job was claimed {record.attempts} times, the datasource's max_attempts, "
            f"without ending: {reason}."
        ),
        lease=None,
        retry_at=None,
        version=record.version + 1,
        updated_at=ts,
    )


def check_stream_update(datasource: Datasource, update: StatusUpdate) -> None:
    """Refuse lease fields in an update on a stream datasource (400)."""
    if update.lease is not None or update.retry_in is not None:
        raise BadRequest(
            f"Datasource '{datasource.id}' is a stream datasource: its updates carry no "
            '"lease" or "retry_in" (those are for jobs claimed on a lease datasource).'
        )


# cancel -----------------------------------------------------------------------------------------
def decide_leased_cancel(record: JobRecord, *, now: int) -> Outcome | None:
    """A cancel request for a job of a lease datasource that no lease holds: it ends
    ``cancelled`` at once (one ``cancel`` event). ``None``: a lease holds it (the usual
    ``cancel_requested`` applies)."""
    if record.terminal or held(record, now):
        return None
    new = replace(
        record,
        status=Status.CANCELLED,
        cancel_requested=True,
        response=None,
        has_response=False,
        progress=None,
        error="Cancelled at the client's request before a worker ran it.",
        lease=None,
        retry_at=None,
        version=record.version + 1,
        updated_at=max(now, record.updated_at),
    )
    return Outcome(new, "cancel")


# timers -----------------------------------------------------------------------------------------
def decide_fire(
    record: JobRecord, datasource: Datasource, *, now: int, rand: float
) -> Outcome | None:
    """What a due time of ``record`` does at ``now``: one change (one event), or ``None``.

    - An expired lease: the store takes the job back (``retrying``, claimable after a backoff),
      or ends it ``failed`` after ``max_attempts`` claims, or ``cancelled`` if a cancellation
      was requested meanwhile.
    - A passed deadline: a ``cancel`` entry with reason ``timeout`` (a lease job that no worker
      holds ends ``cancelled`` at once); ``cancel_grace`` seconds later, ``cancelled``.
    """
    if record.terminal:
        return None
    ts = max(now, record.updated_at)
    lease = record.lease
    if lease is not None and lease.expires_at <= now:
        who = f"the lease of worker '{lease.worker}' expired at {iso(lease.expires_at)}"
        if record.cancel_requested:
            new = _ended(
                record, ts, Status.CANCELLED, f"Cancelled: {who} after cancellation was requested."
            )
        elif record.attempts >= datasource.max_attempts:
            new = _exhausted(record, datasource, ts, who)
        else:
            new = replace(
                record,
                status=Status.RETRYING,
                response=None,
                has_response=False,
                progress=None,
                error=(
                    f"The lease of worker '{lease.worker}' expired at {iso(lease.expires_at)} "
                    "(it stopped renewing it: crashed, stuck or cut off); the job will be "
                    f"retried (attempt {record.attempts} of {datasource.max_attempts} ended)."
                ),
                lease=None,
                retry_at=now + backoff_ms(record.attempts, rand),
                version=record.version + 1,
                updated_at=ts,
            )
        return Outcome(new, "status")
    deadline = record.deadline
    if deadline is None or deadline > now:
        return None
    seconds = (deadline - record.submitted_at) // 1000
    if not record.cancel_requested:
        if datasource.leased and not held(record, now):
            error = f"Cancelled: the job passed its deadline ({seconds} s after submission)."
            return Outcome(
                replace(_ended(record, ts, Status.CANCELLED, error), cancel_requested=True),
                "cancel",
                reason="timeout",
            )
        new = replace(record, cancel_requested=True, version=record.version + 1, updated_at=ts)
        return Outcome(new, "cancel", reason="timeout")
    if deadline + datasource.cancel_grace * 1000 <= now:
        error = (
            f"Cancelled: the job passed its deadline ({iso(deadline)}, {seconds} s after "
            f"submission) and did not end within the {datasource.cancel_grace} s grace after "
            "its cancellation was requested."
        )
        return Outcome(_ended(record, ts, Status.CANCELLED, error), "status")
    return None


def _ended(record: JobRecord, ts: int, status: Status, error: str) -> JobRecord:
    return replace(
        record,
        status=status,
        response=None,
        has_response=False,
        progress=None,
        error=error,
        lease=None,
        retry_at=None,
        version=record.version + 1,
        updated_at=ts,
    )


# the stream worker slot -------------------------------------------------------------------------
def require_stream_dispatch(datasource: Datasource) -> None:
    """Refuse worker-slot calls on a lease datasource (409)."""
    if datasource.leased:
        raise Conflict(
            f"Datasource '{datasource.id}' is a lease datasource: it has no worker slot; "
            f"workers claim jobs with POST /jobs/{datasource.id}/claim."
        )


def decide_take_slot(
    current: SlotLease | None,
    last_seen: int | None,
    datasource: Datasource,
    *,
    worker: str,
    lease_id: str,
    now: int,
) -> SlotLease:
    """``worker`` takes the slot, free or lapsed; else :class:`SlotTaken` naming the holder."""
    if current is not None and current.expires_at > now:
        seen = "" if last_seen is None else f", last seen {iso(last_seen)}"
        raise SlotTaken(
            f"Worker '{current.worker}' holds the worker slot of datasource '{datasource.id}' "
            f"(lease until {iso(current.expires_at)}{seen}): one driver runs a stream "
            "datasource. Stand by and retry after the lease, or declare the datasource with "
            '"dispatch": "lease" to run several workers.'
        )
    resume = None if current is None else current.resume
    return SlotLease(lease_id, worker, now + datasource.lease_seconds * 1000, resume)


def check_slot(current: SlotLease | None, lease: str, dsid: str, now: int) -> SlotLease:
    """The slot if ``lease`` holds it now; else :class:`LeaseLost`."""
    if current is None or current.id != lease:
        raise LeaseLost(
            f"Lease '{lease}' does not hold the worker slot of datasource '{dsid}' (it lapsed "
            "and another worker may have taken it): stop following the request stream."
        )
    if current.expires_at <= now:
        raise LeaseLost(
            f"The worker slot lease '{lease}' of datasource '{dsid}' lapsed or was freed at "
            f"{iso(current.expires_at)}: take the slot again before going on."
        )
    return current


def decide_renew_slot(
    current: SlotLease | None,
    datasource: Datasource,
    *,
    lease: str,
    resume: int | None,
    now: int,
) -> SlotLease:
    """The holder renews the slot and stores its resume point (kept if ``resume`` is None)."""
    slot = check_slot(current, lease, datasource.id, now)
    return SlotLease(
        slot.id,
        slot.worker,
        now + datasource.lease_seconds * 1000,
        slot.resume if resume is None else resume,
    )


def seen_window_ms(datasource: Datasource) -> int:
    """How long a lease worker stays listed in ``GET /cat`` after it was last seen: its lease
    plus the longest claim wait (a worker long-polling an empty queue is still there)."""
    return datasource.lease_seconds * 1000 + 60_000
