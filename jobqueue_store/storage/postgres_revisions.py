"""The PostgreSQL store's statements and commands for long-running jobs.

A client's update, stop and start are commands of the store's writer
(:class:`~jobqueue_store.storage.postgres.PostgresStore`), decided by
:mod:`jobqueue_store.revisions` against the locked row in the batch transaction. A job's revision
fields live in one JSON text column, ``pipeline`` (``NULL`` while they are all at their
defaults); a job whose request or revision fields changed is written by :data:`SQL_WRITE_REVISED`
after the batch's set-based write.

Each revision's request text is stored once (schema 7), in the data of the log entry that
brought it (the ``request`` or ``update`` entry; the data's last member). The job row and the
job's other events point at that entry (``request_seq``; the entry points at itself) and keep
their records without ``request``; :data:`EVENT_COLUMNS` and :func:`row_event` put the request
back on every read. Rows with ``request_seq`` ``NULL`` were written before and hold their
request themselves.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from jobqueue_store import codec, revisions
from jobqueue_store.models import Event, JobRecord, record_from_entry
from jobqueue_store.storage.commands import Desired as Desired
from jobqueue_store.storage.commands import Revise as Revise

# An event as every read of ``events`` takes it (the table unaliased): its own columns, and
# ``request_entry``, the data of the entry holding its record's request (``NULL``: ``record`` is
# whole).
EVENT_COLUMNS = (
    "seq, datasource_id, type, job, client, ts, record, data, "
    "CASE WHEN request_seq IS NULL THEN NULL WHEN request_seq = seq THEN data "
    "ELSE (SELECT r.data FROM events r WHERE r.seq = events.request_seq) END AS request_entry"
)
SQL_JOB_EVENTS = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE datasource_id = $1 AND job = $2 ORDER BY seq"
)
SQL_WRITE_REVISED = (
    "UPDATE jobs j SET request = v.request, request_seq = v.request_seq, pipeline = v.pipeline "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) "
    "AS v(ds, job, request, request_seq, pipeline) "
    "WHERE j.datasource_id = v.ds AND j.job = v.job"
)


def pipeline_text(record: JobRecord) -> str | None:
    """The ``pipeline`` column of ``record`` (``None`` when every field has its default)."""
    if (
        record.revision == 0
        and record.desired_state == "running"
        and not record.rollback
        and record.rollback_of is None
    ):
        return None
    return codec.dumps_str(
        {
            "revision": record.revision,
            "desired_state": record.desired_state,
            "rollback": record.rollback,
            "rollback_of": record.rollback_of,
        }
    )


def with_pipeline(record: JobRecord, text: str | None) -> JobRecord:
    """``record`` with the revision fields stored in ``text``."""
    if text is None:
        return record
    p = codec.loads(text)
    return replace(
        record,
        revision=p["revision"],
        desired_state=p["desired_state"],
        rollback=p["rollback"],
        rollback_of=p["rollback_of"],
    )


def revised_changed(before: JobRecord, after: JobRecord) -> bool:
    """Whether a change touches what :data:`SQL_WRITE_REVISED` stores."""
    return (
        before.revision != after.revision
        or before.desired_state != after.desired_state
        or before.rollback != after.rollback
        or before.rollback_of != after.rollback_of
        or before.request is not after.request
    )


def row_event(row: asyncpg.Record) -> Event:
    """The event of a row read with :data:`EVENT_COLUMNS`, with its whole record."""
    return Event(
        seq=row["seq"],
        datasource_id=row["datasource_id"],
        type=row["type"],
        job=row["job"],
        client=row["client"],
        timestamp=row["ts"],
        record=record_from_entry(row["record"], row["request_entry"]),
        data=None if row["data"] is None else codec.loads(row["data"]),
    )


async def job_events(conn: asyncpg.Connection, dsid: str, job: str) -> list[Event]:
    """Every committed event of one job, by ``seq``."""
    rows = await conn.fetch(SQL_JOB_EVENTS, dsid, job)
    return [row_event(r) for r in rows]


async def history_in(
    conn: asyncpg.Connection, dsid: str, job: str, pending: list[Event]
) -> list[revisions.Revision]:
    """The job's revisions as the batch sees them: its committed events and those the batch
    appends before this command (``pending``: the batch's events of this job)."""
    events = await job_events(conn, dsid, job)
    events.extend(pending)
    return revisions.history(events)
