"""The PostgreSQL store's statements and commands for long-running jobs.

A client's update, stop and start are commands of the store's writer
(:class:`~jobqueue_store.storage.postgres.PostgresStore`), decided by
:mod:`jobqueue_store.revisions` against the locked row in the batch transaction. A job's revision
fields live in one JSON text column, ``pipeline`` (``NULL`` while they are all at their
defaults); a job whose request or revision fields changed is written by :data:`SQL_WRITE_REVISED`
after the batch's set-based write.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg

from jobqueue_store import codec, revisions
from jobqueue_store.models import Event, JobRecord
from jobqueue_store.storage.commands import Desired as Desired
from jobqueue_store.storage.commands import Revise as Revise

SQL_JOB_EVENTS = (
    "SELECT seq, datasource_id, type, job, client, ts, record, data FROM events "
    "WHERE datasource_id = $1 AND job = $2 ORDER BY seq"
)
SQL_WRITE_REVISED = (
    "UPDATE jobs j SET request = v.request, pipeline = v.pipeline "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS v(ds, job, request, pipeline) "
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


def _event(
    seq: int, dsid: str, type_: Any, job: str, client: str, ts: int, record: str, data: str | None
) -> Event:
    return Event(
        seq=seq,
        datasource_id=dsid,
        type=type_,
        job=job,
        client=client,
        timestamp=ts,
        record=JobRecord.from_wire(codec.loads(record)),
        data=None if data is None else codec.loads(data),
    )


async def job_events(conn: asyncpg.Connection, dsid: str, job: str) -> list[Event]:
    """Every committed event of one job, by ``seq``."""
    rows = await conn.fetch(SQL_JOB_EVENTS, dsid, job)
    return [
        _event(
            r["seq"],
            r["datasource_id"],
            r["type"],
            r["job"],
            r["client"],
            r["ts"],
            r["record"],
            r["data"],
        )
        for r in rows
    ]


async def history_in(
    conn: asyncpg.Connection,
    dsid: str,
    job: str,
    pending: list[tuple[int, str, str, str, str, int, str, str | None]],
) -> list[revisions.Revision]:
    """The job's revisions as the batch sees them: its committed events and those the batch
    appends before this command (``pending``: the batch's event rows)."""
    events = await job_events(conn, dsid, job)
    events.extend(_event(*row) for row in pending if row[1] == dsid and row[3] == job)
    return revisions.history(events)
