"""The SQLite store's schedules: commands of its single writer, and reads.

Each command runs inside the writer's batch transaction like every write: it reads the committed
schedule row, decides with :mod:`jobqueue_store.schedules`, writes the row and appends one
schedule event to the log. A timer round (:class:`~jobqueue_store.storage.sqlite_leases.FireDue`)
also fires the due schedules here: each run is submitted through the store's ordinary submit
command (same rules, datasource dispatch and deadlines) in the same transaction that moves the
schedule's ``next_run_at`` past it, so a fire time gives one run at most, across restarts.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import TYPE_CHECKING, Any

from jobqueue_store import codec, errors, schedules
from jobqueue_store.models import JobPage
from jobqueue_store.schedules import (
    ScheduleEvent,
    SchedulePage,
    ScheduleRecord,
)
from jobqueue_store.storage.commands import ChangeSchedule as ChangeSchedule
from jobqueue_store.storage.commands import CreateSchedule as CreateSchedule
from jobqueue_store.storage.sqlite_rows import JOB_ROW, job_row, reserve_seqs

if TYPE_CHECKING:
    from jobqueue_store.storage.sqlite import SQLiteStore, _BatchResult

log = logging.getLogger(__name__)

_CURSOR_RE = re.compile(r"[1-9][0-9]{0,18}")
_MAX_INT64 = 2**63 - 1

SQL_ANY_DUE = "SELECT 1 FROM schedules WHERE next_run_at IS NOT NULL AND next_run_at <= ? LIMIT 1"
_SQL_DUE = (
    "SELECT id, record FROM schedules WHERE next_run_at IS NOT NULL AND next_run_at <= ? "
    "ORDER BY next_run_at LIMIT ?"
)
_SQL_ONE = "SELECT id, record FROM schedules WHERE datasource_id = ? AND schedule = ?"
# The runs of a timer round get their schedule column in one statement: [[dsid, job, schedule]].
_SQL_MARK_RUNS = (
    "UPDATE jobs SET schedule = v.value ->> 2 FROM json_each(?) AS v "
    "WHERE jobs.datasource_id = v.value ->> 0 AND jobs.job = v.value ->> 1"
)


ScheduleCommand = CreateSchedule | ChangeSchedule
SCHEDULE_COMMANDS = (CreateSchedule, ChangeSchedule)


def _decode(blob: bytes) -> ScheduleRecord:
    return ScheduleRecord.from_wire(codec.loads(blob))


def _no_schedule(dsid: str, schedule: str) -> errors.NotFound:
    return errors.NotFound(f"There is no schedule '{schedule}' on datasource '{dsid}'.")


def apply(
    store: SQLiteStore, db: sqlite3.Connection, command: ScheduleCommand, out: _BatchResult
) -> Any:
    """Run ``command`` in the writer's open transaction; return its result."""
    datasource = store.datasource_in(command.dsid, out)
    now = store.clock.now_ms()
    if isinstance(command, CreateSchedule):
        row = db.execute(_SQL_ONE, (datasource.id, command.spec.schedule)).fetchone()
        existing = None if row is None else _decode(row[1])
        record, created = schedules.decide_create(
            existing, command.spec, dsid=datasource.id, client=command.client, now=now
        )
        if created:
            write(store, db, None, record, out)
        return record, created
    row = db.execute(_SQL_ONE, (datasource.id, command.schedule)).fetchone()
    if row is None:
        raise _no_schedule(datasource.id, command.schedule)
    current = _decode(row[1])
    decide = {
        "pause": schedules.decide_pause,
        "resume": schedules.decide_resume,
        "delete": schedules.decide_delete,
    }[command.action]
    changed = decide(current, now)
    if changed is None:
        return current
    write(store, db, row[0], changed, out)
    return changed


def write(
    store: SQLiteStore,
    db: sqlite3.Connection,
    row_id: int | None,
    record: ScheduleRecord,
    out: _BatchResult,
) -> None:
    """Store ``record`` (a new row if ``row_id`` is None) and append its schedule event."""
    blob = codec.dumps(record.to_wire())
    if row_id is None:
        db.execute(
            "INSERT INTO schedules (datasource_id, schedule, client, state, next_run_at, record)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.datasource_id,
                record.schedule,
                record.client,
                record.state,
                record.next_run_at,
                blob,
            ),
        )
    else:
        db.execute(
            "UPDATE schedules SET state = ?, next_run_at = ?, record = ? WHERE id = ?",
            (record.state, record.next_run_at, blob, row_id),
        )
    # The seq comes from the events table's AUTOINCREMENT counter: never handed out twice.
    seq = reserve_seqs(db, 1)
    timestamp = store.timestamp_for(record.datasource_id)
    db.execute(
        "INSERT INTO schedule_events (seq, datasource_id, schedule, client, timestamp, record)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (seq, record.datasource_id, record.schedule, record.client, timestamp, blob),
    )
    out.events.append(ScheduleEvent(seq, record.datasource_id, record.client, timestamp, record))


def fire_due(store: SQLiteStore, db: sqlite3.Connection, limit: int, out: _BatchResult) -> int:
    """Fire up to ``limit`` due schedules: submit their runs, move their next fire time.
    Returns how many events were appended."""
    from jobqueue_store.storage.sqlite import _Submit

    now = store.clock.now_ms()
    fired = 0
    marks: list[list[str]] = []
    for row_id, blob in db.execute(_SQL_DUE, (now, limit)).fetchall():
        record = _decode(blob)
        fire = schedules.decide_fire(record, now)
        if fire is None:
            # Not active, or due later than stored: only the due time moves.
            db.execute(
                "UPDATE schedules SET next_run_at = ? WHERE id = ?",
                (record.next_run_at if record.state == "active" else None, row_id),
            )
            continue
        for fire_ms in fire.runs:
            job = schedules.run_id(record.schedule, fire_ms)
            before = len(out.events)
            try:
                store._apply(
                    db,
                    _Submit(
                        record.datasource_id,
                        job,
                        record.client,
                        record.request,
                        record.timeout,
                        schedule=record.schedule,
                        scheduled_for=fire_ms,
                    ),
                    out,
                )
                store._flush(db, out)  # the run's row and event now: the SQL below reads them
            except errors.StoreError as exc:
                # A job already holds the run's id (submitted by hand): the fire time is used.
                log.warning("schedule %s: run %s not submitted: %s", record.schedule, job, exc)
                continue
            marks.append([record.datasource_id, job, record.schedule])
            fired += len(out.events) - before
        write(store, db, row_id, fire.record, out)
        fired += 1
    if marks:
        db.execute(_SQL_MARK_RUNS, (codec.dumps_str(marks),))
    return fired


def purge_events(db: sqlite3.Connection, older_than_ms: int, limit: int) -> tuple[int, int]:
    """Retention: delete at most ``limit`` schedule events older than ``older_than_ms`` (the
    schedules themselves stay); return how many and the largest ``seq`` deleted (0: none)."""
    gone = db.execute(
        "DELETE FROM schedule_events WHERE seq IN (SELECT seq FROM schedule_events "
        "WHERE timestamp < ? ORDER BY timestamp LIMIT ?) RETURNING seq",
        (older_than_ms, limit),
    ).fetchall()
    return len(gone), max((seq for (seq,) in gone), default=0)


# reads ------------------------------------------------------------------------------------------
def _cursor(cursor: str | None) -> int:
    if cursor is None:
        return _MAX_INT64
    if not _CURSOR_RE.fullmatch(cursor) or int(cursor) > _MAX_INT64:
        raise errors.BadRequest(
            f"The cursor {cursor!r} is not one this store handed out: pass the 'next' value of "
            "the previous page unchanged."
        )
    return int(cursor)


def get_schedule(db: sqlite3.Connection, dsid: str, schedule: str) -> ScheduleRecord | None:
    """The schedule's record, or ``None``."""
    row = db.execute(_SQL_ONE, (dsid, schedule)).fetchone()
    return None if row is None else _decode(row[1])


def list_schedules(
    db: sqlite3.Connection, dsid: str, client: str | None, limit: int, cursor: str | None
) -> SchedulePage:
    """A client's (every client's for ``None``) schedules, newest first."""
    before = _cursor(cursor)
    sql = "SELECT id, record FROM schedules WHERE datasource_id = ?"
    args: list[Any] = [dsid]
    if client is not None:
        sql += " AND client = ?"
        args.append(client)
    sql += " AND id < ? ORDER BY id DESC LIMIT ?"
    rows = db.execute(sql, [*args, before, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return SchedulePage([_decode(r[1]) for r in rows], str(rows[-1][0]) if more else None)


def list_runs(
    db: sqlite3.Connection, dsid: str, schedule: str, limit: int, cursor: str | None
) -> JobPage:
    """A schedule's runs, newest first."""
    before = _cursor(cursor)
    rows = db.execute(
        f"SELECT {JOB_ROW} FROM jobs WHERE datasource_id = ? AND schedule = ? AND id < ?"
        " ORDER BY id DESC LIMIT ?",
        (dsid, schedule, before, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(
        [job_row(r)[1] for r in rows],
        str(rows[-1][0]) if more else None,
    )


def schedule_events_after(
    db: sqlite3.Connection, dsid: str, client: str | None, after: int, upto: int, limit: int
) -> list[ScheduleEvent]:
    """Schedule events of the datasource (of ``client``'s schedules) in ``(after, upto]``."""
    sql = "SELECT seq, datasource_id, client, timestamp, record FROM schedule_events"
    sql += " WHERE datasource_id = ?"
    args: list[Any] = [dsid]
    if client is not None:
        sql += " AND client = ?"
        args.append(client)
    sql += " AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
    rows = db.execute(sql, [*args, after, upto, limit]).fetchall()
    return [ScheduleEvent(r[0], r[1], r[2], r[3], _decode(r[4])) for r in rows]
