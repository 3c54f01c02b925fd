"""The records of the store: frozen dataclasses and the status set. No I/O here."""

from __future__ import annotations

import enum
import operator
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar, dataclass_transform

import orjson

_C = TypeVar("_C", bound=type)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def immutable(cls: _C) -> _C:
    """A record class: a dataclass with slots, frozen for the type checker (mypy refuses any
    assignment to a field; change a record with ``dataclasses.replace``) but not at run time,
    where a frozen dataclass pays a ``object.__setattr__`` call per field on every
    construction (the hot records are built several times per request)."""
    return dataclass(slots=True)(cls)  # type: ignore[return-value]


JOB_ID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
DSID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._~:@-]{1,128}")


class Status(enum.StrEnum):
    """A job's status. The last four are terminal: once reached, the record never changes."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    RETRYING = "retrying"
    RUNNING = "running"
    """A long-running job (a pipeline) is working; it stays so until stopped or replaced."""
    STOPPED = "stopped"
    """A long-running job is paused at its client's request (not terminal)."""
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FORBIDDEN = "forbidden"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Whether no further update may change a job in this status."""
        return self in TERMINAL


TERMINAL: frozenset[Status] = frozenset(
    {Status.COMPLETE, Status.CANCELLED, Status.FORBIDDEN, Status.FAILED}
)
STATUS_VALUES: frozenset[str] = frozenset(s.value for s in Status)


class Role(enum.StrEnum):
    """What the bearer of a token is."""

    CLIENT = "client"
    DRIVER = "driver"
    ADMIN = "admin"


EventType = Literal["request", "cancel", "status", "update", "stop", "start"]
"""Kinds of log events: ``request``, ``cancel``, ``update`` (a new revision), ``stop`` and ``start``
are request-stream entries, ``status`` a driver update. Every event changes one job's status
record."""

DesiredState = Literal["running", "stopped"]
"""What a job's client wants of it: run (the default) or stay stopped."""


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class Dispatch(enum.StrEnum):
    """How a datasource's jobs reach drivers."""

    STREAM = "stream"
    """One driver (the worker slot's holder) follows the request stream."""
    LEASE = "lease"
    """Any number of drivers claim jobs, each under a lease."""


DEFAULT_LEASE_SECONDS = 30
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_CANCEL_GRACE = 10


@dataclass(frozen=True, slots=True)
class Datasource:
    """A queue, declared by its driver.

    ``lease_seconds``: a job lease (lease dispatch) or the worker slot (stream dispatch).
    ``max_attempts``: claims of one job before it fails (lease dispatch). ``job_timeout``: the
    default deadline of its jobs in seconds (``None``: none). ``cancel_grace``: seconds between a
    deadline's cancel request and the job being ended ``cancelled``.
    """

    id: str
    description: str = ""
    request_schema: dict[str, Any] | None = None
    dispatch: Dispatch = Dispatch.STREAM
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    job_timeout: int | None = None
    cancel_grace: int = DEFAULT_CANCEL_GRACE

    @property
    def leased(self) -> bool:
        """Whether drivers claim this datasource's jobs under leases."""
        return self.dispatch is Dispatch.LEASE

    def to_wire(self) -> dict[str, Any]:
        """The datasource as it appears on the wire. Settings left at their default are
        omitted, except on a lease datasource, which always shows its dispatch, lease and
        attempts."""
        out: dict[str, Any] = {"datasource_id": self.id, "description": self.description}
        if self.request_schema is not None:
            out["request_schema"] = self.request_schema
        if self.leased:
            out["dispatch"] = self.dispatch.value
            out["lease_seconds"] = self.lease_seconds
            out["max_attempts"] = self.max_attempts
        elif self.lease_seconds != DEFAULT_LEASE_SECONDS:
            out["lease_seconds"] = self.lease_seconds
        if self.job_timeout is not None:
            out["job_timeout"] = self.job_timeout
        if self.cancel_grace != DEFAULT_CANCEL_GRACE:
            out["cancel_grace"] = self.cancel_grace
        return out

    def settings_json(self) -> dict[str, Any]:
        """The dispatch and deadline settings, as stored by the stores (one JSON column)."""
        return {
            "dispatch": self.dispatch.value,
            "lease_seconds": self.lease_seconds,
            "max_attempts": self.max_attempts,
            "job_timeout": self.job_timeout,
            "cancel_grace": self.cancel_grace,
        }

    @classmethod
    def from_stored(
        cls,
        dsid: str,
        description: str,
        request_schema: dict[str, Any] | None,
        settings: dict[str, Any] | None,
    ) -> Datasource:
        """Rebuild a datasource from its stored columns (``settings``: :meth:`settings_json`)."""
        s = settings or {}
        return cls(
            id=dsid,
            description=description,
            request_schema=request_schema,
            dispatch=Dispatch(s.get("dispatch", "stream")),
            lease_seconds=s.get("lease_seconds", DEFAULT_LEASE_SECONDS),
            max_attempts=s.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
            job_timeout=s.get("job_timeout"),
            cancel_grace=s.get("cancel_grace", DEFAULT_CANCEL_GRACE),
        )


@immutable
class Lease:
    """A worker's hold on a job of a lease datasource."""

    id: str
    worker: str
    attempt: int
    expires_at: int

    def to_wire(self) -> dict[str, Any]:
        """The lease as carried by the status record."""
        return {
            "id": self.id,
            "worker": self.worker,
            "attempt": self.attempt,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Lease:
        """Rebuild a lease from its wire form."""
        return cls(data["id"], data["worker"], data["attempt"], data["expires_at"])


@immutable
class JobRecord:
    """A job's status record (protocol.md §8)."""

    datasource_id: str
    job: str
    client: str
    status: Status
    request: Any
    cancel_requested: bool
    version: int
    submitted_at: int
    updated_at: int
    response: Any = None
    has_response: bool = False
    error: str | None = None
    progress: float | None = None
    lease: Lease | None = None
    """The lease that holds the job now (lease datasources)."""
    attempts: int = 0
    """How many times the job was claimed (lease datasources)."""
    retry_at: int | None = None
    """When a job given back or taken back can be claimed again (ms)."""
    deadline: int | None = None
    """When the store requests the job's cancellation if it is still not terminal (ms)."""
    revision: int = 0
    """The job's current revision: 0 when submitted, incremented by each update."""
    desired_state: DesiredState = "running"
    """What the client asked for last: ``stopped`` after a stop, ``running`` otherwise."""
    rollback: bool = False
    """Whether the current revision rolls back if its driver reports it ``failed``."""
    rollback_of: int | None = None
    """The revision whose failure created the current revision (a rollback)."""
    schedule: str | None = None
    """The schedule whose run this job is (runs only)."""
    scheduled_for: int | None = None
    """The fire time (ms) this run was created for (runs only)."""
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """:meth:`wire_bytes`, once computed (a record is immutable; ``replace`` starts afresh)."""
    _rest: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """:meth:`rest_bytes`, once computed."""
    _req: bytes | None = field(default=None, init=False, repr=False, compare=False)
    """:meth:`request_bytes`, once computed (:func:`evolve` keeps it when the request stays)."""

    @property
    def terminal(self) -> bool:
        """Whether the job has reached a terminal status."""
        return self.status in TERMINAL

    def wire_bytes(self) -> bytes:
        """:meth:`to_wire` as JSON text, encoded once and kept with the record: the store
        writes it and the reply sends the same bytes. Raises ``TypeError`` for a value JSON
        cannot hold."""
        wire = self._wire
        if wire is None:
            rest = self._rest
            if rest is None:
                rest = orjson.dumps(self._rest_wire())
                object.__setattr__(self, "_rest", rest)
            req = self._req
            if req is None:
                req = orjson.dumps(self.request)
                object.__setattr__(self, "_req", req)
            wire = rest[:-1] + b',"request":' + req + b"}"  # with_request(), inlined
            object.__setattr__(self, "_wire", wire)
        return wire

    def rest_bytes(self) -> bytes:
        """:meth:`wire_bytes` without the ``request`` member: what the stores keep in a row
        whose request is stored once, in the log entry that brought it."""
        rest = self._rest
        if rest is None:
            rest = orjson.dumps(self._rest_wire())
            object.__setattr__(self, "_rest", rest)
        return rest

    def request_bytes(self) -> bytes:
        """The request as JSON text, encoded once."""
        req = self._req
        if req is None:
            req = orjson.dumps(self.request)
            object.__setattr__(self, "_req", req)
        return req

    def to_wire(self) -> dict[str, Any]:
        """The status record as sent to clients and drivers. ``request`` is its last member,
        so that the stored text without it (:meth:`rest_bytes`) and the request's own text make
        the whole by concatenation (:func:`with_request`)."""
        out = self._rest_wire()
        out["request"] = self.request
        return out

    def _rest_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "client": self.client,
            "datasource_id": self.datasource_id,
            "status": self.status._value_,  # not .value: a Python property on every encode
        }
        if self.has_response:
            out["response"] = self.response
        if self.error is not None:
            out["error"] = self.error
        if self.progress is not None:
            out["progress"] = self.progress
        out["cancel_requested"] = self.cancel_requested
        out["version"] = self.version
        out["submitted_at"] = self.submitted_at
        out["updated_at"] = self.updated_at
        if self.lease is not None:
            out["lease"] = self.lease.to_wire()
        if self.attempts:
            out["attempts"] = self.attempts
        if self.retry_at is not None:
            out["retry_at"] = self.retry_at
        if self.deadline is not None:
            out["deadline"] = self.deadline
        out["revision"] = self.revision
        out["desired_state"] = self.desired_state
        if self.rollback:
            out["rollback"] = True
        if self.rollback_of is not None:
            out["rollback_of"] = self.rollback_of
        if self.schedule is not None:
            out["schedule"] = self.schedule
            out["scheduled_for"] = self.scheduled_for
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobRecord:
        """Rebuild a record from its wire form (used by stores that keep snapshots)."""
        return cls(
            datasource_id=data["datasource_id"],
            job=data["job"],
            client=data["client"],
            status=Status(data["status"]),
            request=data["request"],
            cancel_requested=data["cancel_requested"],
            version=data["version"],
            submitted_at=data["submitted_at"],
            updated_at=data["updated_at"],
            response=data.get("response"),
            has_response="response" in data,
            error=data.get("error"),
            progress=data.get("progress"),
            lease=None if "lease" not in data else Lease.from_wire(data["lease"]),
            attempts=data.get("attempts", 0),
            retry_at=data.get("retry_at"),
            deadline=data.get("deadline"),
            revision=data.get("revision", 0),
            desired_state=data.get("desired_state", "running"),
            rollback=data.get("rollback", False),
            rollback_of=data.get("rollback_of"),
            schedule=data.get("schedule"),
            scheduled_for=data.get("scheduled_for"),
        )


_RECORD_VALUES = operator.attrgetter(*(f.name for f in fields(JobRecord) if f.init))


def evolve(record: JobRecord, **changes: Any) -> JobRecord:
    """``dataclasses.replace(record, **changes)`` at about two thirds of its cost (it runs on
    every update and cancel): a copy through the constructor, then the changed fields set. The
    copy's JSON encoding is made anew."""
    new = JobRecord(*_RECORD_VALUES(record))
    for name, value in changes.items():
        if name.startswith("_"):
            raise TypeError(f"evolve() cannot set {name}")
        object.__setattr__(new, name, value)
    if "request" not in changes:
        object.__setattr__(new, "_req", record._req)
    return new


def with_request(rest: bytes, request: bytes) -> bytes:
    """The JSON object ``rest`` (non-empty, as orjson writes it) with ``"request": request``
    appended as its last member: a record stored without its request, made whole."""
    return rest[:-1] + b',"request":' + request + b"}"


_REQUEST_MEMBER = b',"request":'


def entry_request(data: bytes | str) -> bytes:
    """The request's text in the stored data of a ``request`` or ``update`` entry, its last
    member. The members before it are ids and numbers (no object, no unescaped quote), so the
    first ``,"request":`` is the member's own."""
    text = data.encode() if isinstance(data, str) else data
    return text[text.index(_REQUEST_MEMBER) + len(_REQUEST_MEMBER) : -1]


def record_from_parts(rest: bytes | str, request: bytes | str | None) -> JobRecord:
    """A record from its stored text and, when the row keeps its request apart, the request's
    text (``None``: ``rest`` holds the whole record, as rows written before that did)."""
    data = orjson.loads(rest)
    if request is None:
        return JobRecord.from_wire(data)
    data["request"] = orjson.loads(request)
    record = JobRecord.from_wire(data)
    # The request's text as stored: the record's next encodings reuse it (models.evolve).
    object.__setattr__(record, "_req", request.encode() if isinstance(request, str) else request)
    return record


def record_from_entry(rest: bytes | str, entry: bytes | str | None) -> JobRecord:
    """A record from its stored text and the stored data of the ``request`` or ``update`` entry
    holding its request (``None``: ``rest`` holds the whole record): how both stores read a job
    row or an event."""
    return record_from_parts(rest, None if entry is None else entry_request(entry))


@immutable
class StatusUpdate:
    """A driver's status report. It sets status, response, error and progress to exactly what it
    carries (an omitted field is cleared)."""

    status: Status
    response: Any = None
    has_response: bool = False
    error: str | None = None
    progress: float | None = None
    lease: str | None = None
    """The lease id the update is made under (required on lease datasources)."""
    retry_in: float | None = None
    """With ``retrying`` on a lease datasource: seconds before the job can be claimed again."""
    revision: int | None = None
    """The revision the update is about (``None``: the current one). An older revision's update
    changes only that revision's history."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker of a datasource as ``GET /cat`` shows it: the stream worker slot's holder, or a
    worker that claimed jobs of a lease datasource recently."""

    worker: str
    since: int
    last_seen: int
    expires_at: int | None = None
    resume: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The worker as an item of a catalogue entry's ``workers``."""
        out: dict[str, Any] = {
            "worker": self.worker,
            "since": self.since,
            "last_seen": self.last_seen,
        }
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
            out["resume"] = self.resume
        return out


@dataclass(frozen=True, slots=True)
class SlotLease:
    """The stream worker slot as its holder sees it: its lease and the stored resume point."""

    id: str
    worker: str
    expires_at: int
    resume: int | None

    def to_wire(self) -> dict[str, Any]:
        """The reply of taking or renewing the slot."""
        return {
            "lease": {"id": self.id, "worker": self.worker, "expires_at": self.expires_at},
            "resume": self.resume,
        }


@immutable
class Event:
    """One entry of the store-wide append-only log.

    ``record`` is the job's status record after the change: the data of the client notification.
    ``data`` is the request-stream entry's data (the job record for ``request``, ``{"job",
    "client"}`` for ``cancel``, the new revision for ``update``) and ``None`` for a ``status``
    event, except a driver's report on an older revision: ``{"revision", "status", "error"?}``.
    """

    seq: int
    datasource_id: str
    type: EventType
    job: str
    client: str
    timestamp: int
    record: JobRecord
    data: dict[str, Any] | None = None

    @property
    def in_request_stream(self) -> bool:
        """Whether a driver's request stream carries this event."""
        return self.type != "status"

    def stream_entry(self) -> dict[str, Any]:
        """The request-stream entry (protocol.md §6) of a ``request`` or ``cancel`` event."""
        return {
            "datasource_id": self.datasource_id,
            "type": self.type,
            "job": self.job,
            "client": self.client,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "data": self.data,
        }

    def notification_bytes(self) -> bytes:
        """:meth:`notification` as JSON text, around the record's own encoding (made once for
        the store's write and every subscriber)."""
        head = orjson.dumps(
            {
                "datasource_id": self.datasource_id,
                "type": "status",
                "job": self.job,
                "client": self.client,
                "seq": self.seq,
            }
        )
        return head[:-1] + b',"data":' + self.record.wire_bytes() + b"}"

    def notification(self) -> dict[str, Any]:
        """The client notification (protocol.md §5) for this change of the job's record."""
        return {
            "datasource_id": self.datasource_id,
            "type": "status",
            "job": self.job,
            "client": self.client,
            "seq": self.seq,
            "data": self.record.to_wire(),
        }


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a client's own jobs, newest first."""

    jobs: list[JobRecord] = field(default_factory=list)
    next_cursor: str | None = None
