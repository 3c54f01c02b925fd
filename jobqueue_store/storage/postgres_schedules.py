"""The PostgreSQL store's schedules: commands of its writer, the timer round's schedule part, and
reads.

Creating, pausing, resuming and deleting a schedule is a writer transaction of its own under the
log lock: read the committed row ``FOR UPDATE``, decide with :mod:`jobqueue_store.schedules`,
write it and append one schedule event (its ``seq`` from ``log_counter``, like every event).

A timer round locks the due schedules ``FOR UPDATE SKIP LOCKED`` in the transaction that holds
the log lock, so the rows it reads are the committed ones and no other process fires them in the
meantime. Each run is an ordinary submit of the batch (same rules, dispatch and deadlines), and
the schedule's ``next_run_at`` moves past its fire times in the same commit: each fire time gives
one run at most, across store processes and restarts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from jobqueue_store import codec, errors, schedules
from jobqueue_store.models import JobPage
from jobqueue_store.schedules import (
    ScheduleEvent,
    SchedulePage,
    ScheduleRecord,
)
from jobqueue_store.storage.commands import ChangeSchedule as ChangeSchedule
from jobqueue_store.storage.commands import CreateSchedule as CreateSchedule

_CURSOR_RE = re.compile(r"[1-9][0-9]{0,18}")
_MAX_INT64 = 2**63 - 1


ScheduleOp = CreateSchedule | ChangeSchedule
SCHEDULE_OPS = (CreateSchedule, ChangeSchedule)

SQL_ANY_DUE = (
    "SELECT 1 AS due FROM schedules WHERE next_run_at IS NOT NULL AND next_run_at <= $1 LIMIT 1"
)
SQL_DUE = (
    "SELECT id, record FROM schedules WHERE next_run_at IS NOT NULL AND next_run_at <= $1 "
    "ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
_SQL_ONE_FOR_UPDATE = (
    "SELECT id, record FROM schedules WHERE datasource_id = $1 AND schedule = $2 FOR UPDATE"
)
_SQL_ONE = "SELECT record FROM schedules WHERE datasource_id = $1 AND schedule = $2"
_SQL_DS_EXISTS = "SELECT 1 FROM datasources WHERE id = $1"
# Schedule rows and their events, set-based; the counter and the wake-up as every write does.
_SQL_WRITE = """
WITH new_rows AS (
    INSERT INTO schedules (datasource_id, schedule, client, state, next_run_at, record)
    SELECT v.ds, v.s, v.c, v.st, v.n, v.r
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                $7::text[]) AS v(id, ds, s, c, st, n, r)
    WHERE v.id IS NULL
), changed_rows AS (
    UPDATE schedules t SET state = v.st, next_run_at = v.n, record = v.r
    FROM unnest($1::bigint[], $5::text[], $6::bigint[], $7::text[]) AS v(id, st, n, r)
    WHERE t.id = v.id
), new_events AS (
    INSERT INTO schedule_events (seq, datasource_id, schedule, client, ts, record)
    SELECT * FROM unnest($8::bigint[], $2::text[], $3::text[], $4::text[], $9::bigint[],
                         $7::text[])
), runs AS (
    UPDATE jobs j SET schedule = v.s, scheduled_for = v.f
    FROM unnest($10::text[], $11::text[], $12::text[], $13::bigint[]) AS v(ds, job, s, f)
    WHERE j.datasource_id = v.ds AND j.job = v.job
), counter AS (
    UPDATE log_counter SET seq = GREATEST(seq, $14::bigint)
)
SELECT pg_notify($15, $16)
"""
# Schedule events with the columns of a job event read (postgres_revisions.EVENT_COLUMNS).
EVENTS_UNION = (
    "SELECT seq, datasource_id, 'schedule' AS type, schedule AS job, client, ts, record, "
    "NULL AS data, NULL AS request_entry FROM schedule_events"
)


@dataclass(slots=True)
class ScheduleWrites:
    """The schedule rows, schedule events and run columns a transaction writes."""

    rows: list[tuple[int | None, ScheduleRecord, int, int]]
    """``(row id or None, record, seq, ts)``."""
    runs: list[tuple[str, str, str, int]]
    """``(dsid, job, schedule, scheduled_for)`` of the runs created."""

    def __init__(self) -> None:
        self.rows = []
        self.runs = []

    def __bool__(self) -> bool:
        return bool(self.rows or self.runs)

    async def flush(self, conn: asyncpg.Connection, top_seq: int, channel: str) -> None:
        """Write everything in one statement (in the open transaction)."""
        if not self:
            return
        rows = self.rows
        await conn.execute(
            _SQL_WRITE,
            [r[0] for r in rows],
            [r[1].datasource_id for r in rows],
            [r[1].schedule for r in rows],
            [r[1].client for r in rows],
            [r[1].state for r in rows],
            [r[1].next_run_at for r in rows],
            [codec.dumps_str(r[1].to_wire()) for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[0] for r in self.runs],
            [r[1] for r in self.runs],
            [r[2] for r in self.runs],
            [r[3] for r in self.runs],
            top_seq,
            channel,
            str(top_seq),
        )


def _decode(text: str) -> ScheduleRecord:
    return ScheduleRecord.from_wire(codec.loads(text))


async def apply(
    conn: asyncpg.Connection, op: ScheduleOp, now: int, channel: str
) -> tuple[ScheduleRecord, bool] | ScheduleRecord:
    """Run a create or change in the open transaction that holds the log lock."""
    if await conn.fetchrow(_SQL_DS_EXISTS, op.dsid) is None:
        raise errors.NotFound(
            f"Datasource '{op.dsid}' is not declared: its driver declares it with "
            f"PUT /jobs/{op.dsid}."
        )
    sid = op.spec.schedule if isinstance(op, CreateSchedule) else op.schedule
    row = await conn.fetchrow(_SQL_ONE_FOR_UPDATE, op.dsid, sid)
    current = None if row is None else _decode(row["record"])
    seq = int(await conn.fetchval("SELECT seq FROM log_counter"))
    writes = ScheduleWrites()
    if isinstance(op, CreateSchedule):
        record, created = schedules.decide_create(
            current, op.spec, dsid=op.dsid, client=op.client, now=now
        )
        if created:
            writes.rows.append((None, record, seq + 1, now))
            await writes.flush(conn, seq + 1, channel)
        return record, created
    if current is None or row is None:
        raise errors.NotFound(f"There is no schedule '{sid}' on datasource '{op.dsid}'.")
    decide = {
        "pause": schedules.decide_pause,
        "resume": schedules.decide_resume,
        "delete": schedules.decide_delete,
    }[op.action]
    changed = decide(current, now)
    if changed is None:
        return current
    writes.rows.append((row["id"], changed, seq + 1, now))
    await writes.flush(conn, seq + 1, channel)
    return changed


def row_event(row: asyncpg.Record) -> ScheduleEvent:
    """A schedule event from a row of :data:`EVENTS_UNION`."""
    return ScheduleEvent(
        row["seq"], row["datasource_id"], row["client"], row["ts"], _decode(row["record"])
    )


async def purge_events(conn: asyncpg.Connection, older_than_ms: int, limit: int) -> tuple[int, int]:
    """Retention: delete at most ``limit`` schedule events older than ``older_than_ms`` (the
    schedules themselves stay); return how many and the largest ``seq`` deleted (0: none)."""
    row = await conn.fetchrow(
        "WITH gone AS (DELETE FROM schedule_events WHERE seq IN (SELECT seq FROM schedule_events "
        "WHERE ts < $1 ORDER BY ts LIMIT $2) RETURNING seq) "
        "SELECT count(*) AS n, coalesce(max(seq), 0) AS top FROM gone",
        older_than_ms,
        limit,
    )
    assert row is not None
    return int(row["n"]), int(row["top"])


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


async def get_schedule(conn: asyncpg.Connection, dsid: str, sid: str) -> ScheduleRecord | None:
    """The schedule's record, or ``None``."""
    row = await conn.fetchrow(_SQL_ONE, dsid, sid)
    return None if row is None else _decode(row["record"])


async def list_schedules(
    conn: asyncpg.Connection, dsid: str, client: str | None, limit: int, cursor: str | None
) -> SchedulePage:
    """A client's (every client's for ``None``) schedules, newest first."""
    before = _cursor(cursor)
    rows = await conn.fetch(
        "SELECT id, record FROM schedules WHERE datasource_id = $1 "
        "AND ($2::text IS NULL OR client = $2) AND id < $3 ORDER BY id DESC LIMIT $4",
        dsid,
        client,
        before,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return SchedulePage([_decode(r["record"]) for r in rows], str(rows[-1]["id"]) if more else None)


async def list_runs(
    conn: asyncpg.Connection,
    columns: str,
    decode: Any,
    dsid: str,
    sid: str,
    limit: int,
    cursor: str | None,
) -> JobPage:
    """A schedule's runs, newest first (``decode`` turns a jobs row into a record)."""
    before = _cursor(cursor)
    rows = await conn.fetch(
        f"SELECT {columns} FROM jobs WHERE datasource_id = $1 AND schedule = $2 AND id < $3 "
        "ORDER BY id DESC LIMIT $4",
        dsid,
        sid,
        before,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage([decode(r) for r in rows], str(rows[-1]["id"]) if more else None)


async def schedule_events_after(
    conn: asyncpg.Connection, dsid: str, client: str | None, after: int, upto: int, limit: int
) -> list[ScheduleEvent]:
    """Schedule events of the datasource (of ``client``'s schedules) in ``(after, upto]``."""
    rows = await conn.fetch(
        "SELECT seq, datasource_id, client, ts, record FROM schedule_events "
        "WHERE datasource_id = $1 AND ($2::text IS NULL OR client = $2) AND seq > $3 "
        "AND seq <= $4 ORDER BY seq LIMIT $5",
        dsid,
        client,
        after,
        upto,
        limit,
    )
    return [row_event(r) for r in rows]
