"""The write commands of leases and timers that both stores take, as plain records.

Each store's writer (the SQLite batch, the PostgreSQL batch) recognises them by type and applies
them in its own ``*_leases`` module.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIRE_STEPS_MAX", "Claim", "FireDue", "Heartbeat"]

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
