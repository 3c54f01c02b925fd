"""The write commands of leases, timers, revisions and schedules that both stores take, as plain
records.

Each store's writer (the SQLite batch, the PostgreSQL batch) recognises them by type and applies
them in its own ``*_leases``, ``*_revisions`` or ``*_schedules`` module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobqueue_store.models import DesiredState
from jobqueue_store.schedules import ScheduleAction, ScheduleSpec

__all__ = [
    "FIRE_STEPS_MAX",
    "ChangeSchedule",
    "Claim",
    "CreateSchedule",
    "Desired",
    "FireDue",
    "Heartbeat",
    "Revise",
]

FIRE_STEPS_MAX = 4  # lease expiry, deadline, grace: a row never needs more in one round


@dataclass(frozen=True, slots=True)
class Claim:
    """Claim up to ``max_jobs`` jobs for ``worker``."""

    dsid: str
    worker: str
    max_jobs: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Renew a job's lease."""

    dsid: str
    job: str
    lease: str


@dataclass(frozen=True, slots=True)
class FireDue:
    """Fire up to ``limit`` due rows."""

    limit: int


@dataclass(frozen=True, slots=True)
class Revise:
    """A client's ``PUT`` of a new request."""

    dsid: str
    job: str
    client: str | None
    request: Any
    rollback: bool


@dataclass(frozen=True, slots=True)
class Desired:
    """A client's stop or start."""

    dsid: str
    job: str
    client: str | None
    state: DesiredState


@dataclass(frozen=True, slots=True)
class CreateSchedule:
    """Create a schedule (or repeat an identical create)."""

    dsid: str
    spec: ScheduleSpec
    client: str


@dataclass(frozen=True, slots=True)
class ChangeSchedule:
    """Pause, resume or soft-delete a schedule."""

    dsid: str
    schedule: str
    action: ScheduleAction
