"""The SQLite store's commands for long-running jobs: a client's update, stop and start.

They are commands of the store's single writer (:class:`~jobqueue_store.storage.sqlite.
SQLiteStore`), decided by :mod:`jobqueue_store.revisions` against the committed row in the
batch's transaction, and stored by the writer's ``write_job`` (record and event together).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from jobqueue_store import errors, revisions
from jobqueue_store.models import Event
from jobqueue_store.storage.commands import Desired as Desired
from jobqueue_store.storage.commands import Revise as Revise
from jobqueue_store.storage.sqlite_rows import EVENT_COLUMNS, JOB_ROW, decode_event, job_row

if TYPE_CHECKING:
    from jobqueue_store.storage.sqlite import SQLiteStore, _BatchResult

SQL_JOB_EVENTS = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE datasource_id = ? AND job = ? ORDER BY seq"
)


RevisionCommand = Revise | Desired
COMMANDS = (Revise, Desired)


def job_events(db: sqlite3.Connection, dsid: str, job: str) -> list[Event]:
    """Every event of one job by ``seq`` (on the writer: the batch's own writes included)."""
    return [decode_event(row) for row in db.execute(SQL_JOB_EVENTS, (dsid, job))]


def history_in(db: sqlite3.Connection, dsid: str, job: str) -> list[revisions.Revision]:
    """The job's revisions as the writer's transaction sees them."""
    return revisions.history(job_events(db, dsid, job))


def apply(
    store: SQLiteStore, db: sqlite3.Connection, command: RevisionCommand, out: _BatchResult
) -> Any:
    """Run ``command`` on the writer thread, inside the batch's transaction."""
    datasource = store.datasource_in(command.dsid, out)
    row = db.execute(
        f"SELECT {JOB_ROW} FROM jobs WHERE datasource_id = ? AND job = ?",
        (command.dsid, command.job),
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"There is no job '{command.job}' on datasource '{command.dsid}'.")
    row_id, existing, request_seq = job_row(row)
    timestamp = store.timestamp_for(command.dsid)
    if isinstance(command, Revise):
        outcome = revisions.decide_revise(
            existing,
            client=command.client,
            request=command.request,
            rollback=command.rollback,
            timestamp=timestamp,
        )
    else:
        outcome = revisions.decide_desired(
            existing, client=command.client, state=command.state, timestamp=timestamp
        )
    if outcome.event is not None:
        store.write_job(db, row_id, outcome, datasource, timestamp, out, request_seq)
    if isinstance(command, Revise):
        return (outcome.record, outcome.event is not None)
    return outcome.record
