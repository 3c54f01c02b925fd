"""The job lifecycle rules, as pure functions.

Both stores call these inside the transaction that holds the job's row (the SQLite writer, or a
PostgreSQL row lock), so the rules are enforced against committed state and live in one place.
Each function returns an :class:`Outcome`: the record after the request and the kind of log event
to append, or ``None`` when nothing changes (an idempotent repeat).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobqueue_store import codec
from jobqueue_store.errors import Conflict, Forbidden
from jobqueue_store.models import (
    Datasource,
    EventType,
    JobRecord,
    Status,
    StatusUpdate,
    evolve,
    immutable,
)

if TYPE_CHECKING:
    from jobqueue_store.revisions import Revision


@immutable
class Outcome:
    """What a write does: the resulting record and the event to append (``None``: no change).

    ``touched``: with no event, the record still changed where no event is due (a lease
    renewal) and must be stored. ``reason``: the ``reason`` of a ``cancel`` entry the store
    appends itself (``"timeout"``). ``data``: the event's data when the rule sets it (``update``,
    ``stop`` and ``start`` entries; a report on an older revision). ``then``: a second change
    that the same write makes after this one (a failed revision rolled back: the failure, then
    the new revision), appended as the next event.
    """

    record: JobRecord
    event: EventType | None
    created: bool = False
    touched: bool = False
    reason: str | None = None
    timeout: int | None = None
    data: dict[str, Any] | None = None
    then: Outcome | None = None

    @property
    def final(self) -> JobRecord:
        """The record once every change of the write is applied."""
        return self.record if self.then is None else self.then.final


def request_entry_data(record: JobRecord, timeout: int | None = None) -> dict[str, Any]:
    """The data of a ``request`` entry: the job as submitted. ``request`` comes last: the stores
    keep the request's one copy there, and the job's row and other events take its text from it
    (``models.entry_request``)."""
    data: dict[str, Any] = {"job": record.job, "client": record.client}
    if timeout is not None:
        data["timeout"] = timeout
    data["request"] = record.request
    return data


def cancel_entry_data(record: JobRecord, reason: str | None = None) -> dict[str, Any]:
    """The data of a ``cancel`` entry (``reason``: ``"timeout"`` for a deadline's request)."""
    data: dict[str, Any] = {"job": record.job, "client": record.client}
    if reason is not None:
        data["reason"] = reason
    return data


BRINGS_REQUEST: frozenset[EventType] = frozenset({"request", "update"})
"""The entries that bring a revision's request: the stores keep its one copy in their data."""


def entry_data(outcome: Outcome) -> dict[str, Any] | None:
    """The request-stream data of ``outcome``'s event (``None`` for a status event)."""
    if outcome.data is not None:
        return outcome.data
    if outcome.event == "request":
        return request_entry_data(outcome.record, outcome.timeout)
    if outcome.event == "cancel":
        return cancel_entry_data(outcome.record, outcome.reason)
    return None


def same_request(a: Any, b: Any) -> bool:
    """Whether two ``request`` values are the same JSON (object key order does not matter).

    ``true`` is not ``1`` and ``false`` is not ``0`` (Python's ``==`` says they are); an integer
    and a float of the same value are the same JSON number.
    """
    if a != b:
        return False
    # Loosely equal: the sorted encodings settle it in C unless a bool or a float is involved.
    return codec.canonical(a) == codec.canonical(b) or _strictly_equal(a, b)


def _strictly_equal(a: Any, b: Any) -> bool:
    """``a == b`` for decoded JSON values, with booleans distinct from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_strictly_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and all(_strictly_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def decide_submit(
    existing: JobRecord | None,
    *,
    datasource_id: str,
    job: str,
    client: str,
    request: Any,
    timestamp: int,
    timeout: int | None = None,
    datasource: Datasource | None = None,
) -> Outcome:
    """A client submits ``job``: a new record, an idempotent repeat, or a conflict.

    ``timeout`` (seconds), else the datasource's ``job_timeout``, sets the job's deadline.
    """
    if existing is None:
        seconds = timeout
        if seconds is None and datasource is not None:
            seconds = datasource.job_timeout
        record = JobRecord(
            datasource_id=datasource_id,
            job=job,
            client=client,
            status=Status.SUBMITTED,
            request=request,
            cancel_requested=False,
            version=1,
            submitted_at=timestamp,
            updated_at=timestamp,
            deadline=None if seconds is None else timestamp + seconds * 1000,
        )
        return Outcome(record, "request", created=True, timeout=timeout)
    if existing.client != client:
        raise Conflict(
            f"Job id '{job}' is already used on datasource '{datasource_id}': choose another id."
        )
    if not same_request(existing.request, request):
        raise Conflict(
            f"Job '{job}' was already submitted with a different request: a retry must send the "
            "same request, a new job needs a new id."
        )
    return Outcome(existing, None)


def decide_cancel(
    existing: JobRecord,
    *,
    client: str | None,
    timestamp: int,
    datasource: Datasource | None = None,
) -> Outcome:
    """A client asks to cancel ``existing``. ``client`` ``None`` means an admin (any job).

    On a lease datasource a job that no lease holds ends ``cancelled`` at once.
    """
    if client is not None and existing.client != client:
        raise Forbidden(f"Job '{existing.job}' belongs to another client.")
    if existing.terminal or existing.cancel_requested:
        return Outcome(existing, None)
    if datasource is not None and datasource.leased:
        ended = leases.decide_leased_cancel(existing, now=timestamp)
        if ended is not None:
            return ended
    record = evolve(
        existing,
        cancel_requested=True,
        version=existing.version + 1,
        updated_at=max(timestamp, existing.updated_at),
    )
    return Outcome(record, "cancel")


def changes_anything(existing: JobRecord, update: StatusUpdate) -> bool:
    """Whether ``update`` would change ``existing``'s status, response, error or progress."""
    return (
        existing.status is not update.status
        or existing.has_response != update.has_response
        or (update.has_response and not same_request(existing.response, update.response))
        or existing.error != update.error
        or existing.progress != update.progress
    )


def decide_update(
    existing: JobRecord,
    update: StatusUpdate,
    *,
    timestamp: int,
    datasource: Datasource | None = None,
    rand: float = 0.5,
    history: Sequence[Revision] | None = None,
) -> Outcome:
    """A driver reports ``update`` for ``existing``.

    On a lease datasource the update must carry the job's current lease
    (:func:`jobqueue_store.leases.decide_leased_update`). An update naming an older revision
    changes only that revision's history; a ``failed`` report on a revision submitted with
    ``rollback`` rolls back (:mod:`jobqueue_store.revisions`; ``history``: the job's revisions,
    needed when :func:`~jobqueue_store.revisions.needs_history` says so).
    """
    older = revisions.check_revision(existing, update, timestamp=timestamp)
    if older is not None:
        return older
    outcome = _decide_update(
        existing, update, timestamp=timestamp, datasource=datasource, rand=rand
    )
    return revisions.after_update(existing, update, outcome, history, timestamp=timestamp)


def _decide_update(
    existing: JobRecord,
    update: StatusUpdate,
    *,
    timestamp: int,
    datasource: Datasource | None,
    rand: float,
) -> Outcome:
    if datasource is not None:
        if datasource.leased:
            return leases.decide_leased_update(
                existing, update, datasource, now=timestamp, rand=rand
            )
        leases.check_stream_update(datasource, update)
    changed = changes_anything(existing, update)
    if existing.terminal:
        if changed and not revisions.is_refused_repeat(existing, update):
            raise Conflict(
                f"Job '{existing.job}' is already {existing.status.value}: a terminal status is "
                "final."
            )
        return Outcome(existing, None)
    if not changed:
        return Outcome(existing, None)
    record = evolve(
        existing,
        status=update.status,
        response=update.response if update.has_response else None,
        has_response=update.has_response,
        error=update.error,
        progress=update.progress,
        version=existing.version + 1,
        updated_at=max(timestamp, existing.updated_at),
    )
    return Outcome(record, "status")


# Imported last: both modules build on this one's definitions. Imported inside the functions
# instead, every driver update would pay for the import statements (about 0.3 us each).
from jobqueue_store import leases, revisions  # noqa: E402
