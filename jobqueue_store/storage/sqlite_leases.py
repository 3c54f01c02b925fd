"""The SQLite store's commands for claims, heartbeats, timers and the stream worker slot.

They are commands of :class:`~jobqueue_store.storage.sqlite.SQLiteStore`'s single writer, run
inside its batch transaction like every write: each reads the committed rows it needs, decides
with :mod:`jobqueue_store.leases`, and stores the result through the store's ``write_job`` (one
event per change). The writer is the only one, so no job is ever held by two leases.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobqueue_store import errors, leases
from jobqueue_store.lifecycle import Outcome
from jobqueue_store.models import Datasource, JobRecord, SlotLease, WorkerInfo
from jobqueue_store.storage.commands import FIRE_STEPS_MAX
from jobqueue_store.storage.commands import Claim as Claim
from jobqueue_store.storage.commands import FireDue as FireDue
from jobqueue_store.storage.commands import Heartbeat as Heartbeat
from jobqueue_store.storage.sqlite_rows import JOB_ROW, job_row

if TYPE_CHECKING:
    from jobqueue_store.storage.sqlite import SQLiteStore, _BatchResult


@dataclass(frozen=True, slots=True)
class TakeSlot:
    """Take a stream datasource's worker slot."""

    dsid: str
    worker: str


@dataclass(frozen=True, slots=True)
class RenewSlot:
    """Renew the worker slot and store the resume point."""

    dsid: str
    lease: str
    resume: int | None


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    """Free the worker slot."""

    dsid: str
    lease: str


LeaseCommand = Claim | Heartbeat | FireDue | TakeSlot | RenewSlot | ReleaseSlot
LEASE_COMMANDS = (Claim, Heartbeat, FireDue, TakeSlot, RenewSlot, ReleaseSlot)

SQL_CLAIMABLE = (
    f"SELECT {JOB_ROW} FROM jobs WHERE datasource_id = ? "
    "AND leased = 1 AND (status = 'submitted' OR status = 'retrying') AND lease_id IS NULL "
    "AND (retry_at IS NULL OR retry_at <= ?) ORDER BY id LIMIT ?"
)
# A batch of status changes as one statement each: the jobs' rows, then their events (the JSON
# array holds [id, status, record, updated_at, lease_id, retry_at, due_at, job, client,
# request_seq] items).
SQL_SET_STATUS = (
    "UPDATE jobs SET status = v.value ->> 1, record = v.value ->> 2, updated_at = v.value ->> 3,"
    " lease_id = v.value ->> 4, retry_at = v.value ->> 5, due_at = v.value ->> 6"
    " FROM json_each(?) AS v WHERE jobs.id = v.value ->> 0"
)
SQL_STATUS_EVENTS = (
    "INSERT INTO events (datasource_id, type, job, client, timestamp, data, record, request_seq)"
    " SELECT ?1, 'status', v.value ->> 7, v.value ->> 8, ?2, NULL, v.value ->> 2, v.value ->> 9"
    " FROM json_each(?3) AS v ORDER BY v.key RETURNING job, seq"
)
_SQL_DUE = (
    f"SELECT datasource_id, {JOB_ROW} FROM jobs WHERE due_at IS NOT NULL AND due_at <= ? "
    "ORDER BY due_at LIMIT ?"
)
SQL_ANY_DUE = "SELECT 1 FROM jobs WHERE due_at IS NOT NULL AND due_at <= ? LIMIT 1"
_SQL_SEEN = (
    "INSERT INTO lease_workers (datasource_id, worker, since, last_seen) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (datasource_id, worker) DO UPDATE SET "
    "since = CASE WHEN last_seen < ? THEN excluded.since ELSE since END, "
    "last_seen = max(last_seen, excluded.last_seen)"
)
_SQL_SLOT = (
    "SELECT lease_id, worker, expires_at, resume, last_seen FROM worker_slots "
    "WHERE datasource_id = ?"
)


# A generator of its own: the store's timer loop draws jitter at any moment, and must not move
# the global ``random`` state under a caller in another thread (Hypothesis checks it).
_RNG = random.Random()


def random_fraction() -> float:
    """The jitter of a backoff: a float in ``[0, 1)``."""
    return _RNG.random()


def apply(
    store: SQLiteStore, db: sqlite3.Connection, command: LeaseCommand, out: _BatchResult
) -> Any:
    """Run ``command`` in the writer's open transaction; return its result."""
    if isinstance(command, FireDue):
        return _fire_due(store, db, command.limit, out)
    datasource = store.datasource_in(command.dsid, out)
    now = store.timestamp_for(datasource.id)
    if isinstance(command, Claim):
        return _claim(store, db, datasource, command, now, out)
    if isinstance(command, Heartbeat):
        row = db.execute(
            f"SELECT {JOB_ROW} FROM jobs WHERE datasource_id = ? AND job = ?",
            (datasource.id, command.job),
        ).fetchone()
        if row is None:
            raise errors.NotFound(
                f"There is no job '{command.job}' on datasource '{datasource.id}'."
            )
        leases.require_lease_dispatch(datasource)
        row_id, record, request_seq = job_row(row)
        outcome = leases.decide_heartbeat(record, datasource, lease=command.lease, now=now)
        store.write_job(db, row_id, outcome, datasource, now, out, request_seq)
        assert outcome.record.lease is not None
        _seen(db, datasource, outcome.record.lease.worker, now)
        return outcome.record
    leases.require_stream_dispatch(datasource)
    slot, last_seen = _slot(db, datasource.id)
    if isinstance(command, TakeSlot):
        taken = leases.decide_take_slot(
            slot,
            last_seen,
            datasource,
            worker=command.worker,
            lease_id=leases.new_lease_id(),
            now=now,
        )
        db.execute(
            "INSERT INTO worker_slots (datasource_id, lease_id, worker, since, last_seen,"
            " expires_at, resume) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (datasource_id) DO UPDATE SET lease_id = excluded.lease_id,"
            " worker = excluded.worker, since = excluded.since, last_seen = excluded.last_seen,"
            " expires_at = excluded.expires_at, resume = excluded.resume",
            (datasource.id, taken.id, taken.worker, now, now, taken.expires_at, taken.resume),
        )
        return taken
    if isinstance(command, RenewSlot):
        renewed = leases.decide_renew_slot(
            slot, datasource, lease=command.lease, resume=command.resume, now=now
        )
        db.execute(
            "UPDATE worker_slots SET last_seen = ?, expires_at = ?, resume = ? "
            "WHERE datasource_id = ?",
            (now, renewed.expires_at, renewed.resume, datasource.id),
        )
        return renewed
    leases.check_slot(slot, command.lease, datasource.id, now)
    db.execute(
        "UPDATE worker_slots SET last_seen = ?, expires_at = ? WHERE datasource_id = ?",
        (now, now, datasource.id),
    )
    return None


def _claim(
    store: SQLiteStore,
    db: sqlite3.Connection,
    datasource: Datasource,
    command: Claim,
    now: int,
    out: _BatchResult,
) -> list[JobRecord]:
    leases.require_lease_dispatch(datasource)
    _seen(db, datasource, command.worker, now)
    rows = db.execute(SQL_CLAIMABLE, (datasource.id, now, command.max_jobs)).fetchall()
    changes: list[tuple[int, Outcome, int | None]] = []
    for row in rows:
        row_id, record, request_seq = job_row(row)
        outcome = leases.decide_claim(
            record,
            datasource,
            worker=command.worker,
            lease_id=leases.new_lease_id(),
            now=now,
        )
        if outcome is not None:
            changes.append((row_id, outcome, request_seq))
    # One statement for the rows, one for their events: a set-based write, not a loop.
    store.write_status_changes(db, changes, datasource, now, out)
    return [outcome.record for _, outcome, _ in changes]


def _fire_due(store: SQLiteStore, db: sqlite3.Connection, limit: int, out: _BatchResult) -> int:
    now = store.clock.now_ms()
    fired = 0
    for dsid, *row in db.execute(_SQL_DUE, (now, limit)).fetchall():
        datasource = store.datasource_in(dsid, out)
        row_id, record, request_seq = job_row(row)
        steps = 0
        while steps < FIRE_STEPS_MAX:
            outcome = leases.decide_fire(record, datasource, now=now, rand=random_fraction())
            if outcome is None:
                break
            timestamp = store.timestamp_for(dsid)
            store.write_job(db, row_id, outcome, datasource, timestamp, out, request_seq)
            record = outcome.record
            steps += 1
        if steps == 0:
            # Due earlier than its rule says (a setting changed since): move the due time.
            due = leases.next_due(record, datasource)
            db.execute(
                "UPDATE jobs SET due_at = ? WHERE id = ?",
                (due if due is not None and due > now else None, row_id),
            )
        fired += steps
    return fired


def _seen(db: sqlite3.Connection, datasource: Datasource, worker: str, now: int) -> None:
    db.execute(
        _SQL_SEEN, (datasource.id, worker, now, now, now - leases.seen_window_ms(datasource))
    )


def _slot(db: sqlite3.Connection, dsid: str) -> tuple[SlotLease | None, int | None]:
    row = db.execute(_SQL_SLOT, (dsid,)).fetchone()
    if row is None:
        return None, None
    lease_id, worker, expires_at, resume, last_seen = row
    return SlotLease(lease_id, worker, expires_at, resume), last_seen


def read_workers(db: sqlite3.Connection, datasource: Datasource, now: int) -> list[WorkerInfo]:
    """Run on a reader: the datasource's workers as ``GET /cat`` shows them."""
    if not datasource.leased:
        row = db.execute(
            "SELECT worker, since, last_seen, expires_at, resume FROM worker_slots "
            "WHERE datasource_id = ? AND expires_at > ?",
            (datasource.id, now),
        ).fetchone()
        return [] if row is None else [WorkerInfo(*row)]
    rows = db.execute(
        "SELECT worker, since, last_seen FROM lease_workers WHERE datasource_id = ? "
        "AND last_seen >= ? ORDER BY worker",
        (datasource.id, now - leases.seen_window_ms(datasource)),
    ).fetchall()
    return [WorkerInfo(*row) for row in rows]
