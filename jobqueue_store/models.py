"""The records of the store: frozen dataclasses and the status set. No I/O here."""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

JOB_ID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
DSID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._~:@-]{1,128}")


class Status(enum.StrEnum):
    """A job's status. The last four are terminal: once reached, the record never changes."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    RETRYING = "retrying"
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


EventType = Literal["request", "cancel", "status"]
"""Kinds of log events: ``request`` and ``cancel`` are request-stream entries, ``status`` a driver
update. Every event changes one job's status record."""


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Datasource:
    """A queue, declared by its driver."""

    id: str
    description: str = ""
    request_schema: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The datasource as it appears on the wire."""
        out: dict[str, Any] = {"datasource_id": self.id, "description": self.description}
        if self.request_schema is not None:
            out["request_schema"] = self.request_schema
        return out


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job's status record (SPEC section 5)."""

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

    @property
    def terminal(self) -> bool:
        """Whether the job has reached a terminal status."""
        return self.status in TERMINAL

    def to_wire(self) -> dict[str, Any]:
        """The status record as sent to clients and drivers."""
        out: dict[str, Any] = {
            "job": self.job,
            "client": self.client,
            "datasource_id": self.datasource_id,
            "status": self.status.value,
            "request": self.request,
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
        )


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A driver's status report. It sets status, response, error and progress to exactly what it
    carries (an omitted field is cleared)."""

    status: Status
    response: Any = None
    has_response: bool = False
    error: str | None = None
    progress: float | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the store-wide append-only log.

    ``record`` is the job's status record after the change: the data of the client notification.
    ``data`` is the request-stream entry's data (the job record for ``request``, ``{"job",
    "client"}`` for ``cancel``) and ``None`` for a ``status`` event.
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
        """The request-stream entry (SPEC section 4) of a ``request`` or ``cancel`` event."""
        return {
            "datasource_id": self.datasource_id,
            "type": self.type,
            "job": self.job,
            "client": self.client,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "data": self.data,
        }

    def notification(self) -> dict[str, Any]:
        """The client notification (SPEC section 3) for this change of the job's record."""
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
