"""How the SQLite store reads job rows and events whose request is stored apart (schema 10).

Each revision's request is stored once, in the data of the log entry that brought it (its last
member: :func:`~jobqueue_store.models.entry_request`); the job's row and the job's other events
name that entry in ``request_seq`` (the entry names itself) and keep their record without the
request. A row or event whose ``request_seq`` is NULL was written before schema 10 and holds
the whole record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

from jobqueue_store import codec
from jobqueue_store.models import Event, JobRecord, entry_request, record_from_entry, with_request

ENTRY_OF_JOB = "(SELECT e.data FROM events e WHERE e.seq = jobs.request_seq)"
"""The data of the entry holding a job row's current request (NULL: the row's record holds
it)."""
JOB_ROW = f"id, record, request_seq, {ENTRY_OF_JOB}"
"""The columns of a job row read for a write, for :func:`job_row`."""
EVENT_COLUMNS = (
    "seq, datasource_id, type, job, client, timestamp, data, record, CASE"
    " WHEN request_seq = seq THEN data"
    " ELSE (SELECT r.data FROM events r WHERE r.seq = events.request_seq) END"
)
"""An event's columns, then the data of the entry holding its record's request (NULL: the
record holds it), for :func:`decode_event`."""
_RESERVE_SEQS = "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'events' RETURNING seq"


def job_row(row: Sequence[Any]) -> tuple[int, JobRecord, int | None]:
    """(row id, record, request_seq) from the columns of :data:`JOB_ROW`."""
    row_id, text, request_seq, entry = row
    return row_id, record_from_entry(text, entry), request_seq


def stored_text(text: bytes | str, entry: bytes | None) -> bytes:
    """A job's whole record text from its row's record and the data of the entry holding its
    request (``None``: the record holds it)."""
    # Rows written set-based from JSON (a batch of claims) hold the record as TEXT, not BLOB.
    whole = text.encode() if type(text) is str else cast(bytes, text)
    return whole if entry is None else with_request(whole, entry_request(entry))


def decode_event(row: Sequence[Any]) -> Event:
    """An event from the columns of :data:`EVENT_COLUMNS`."""
    seq, dsid, type_, job, client, timestamp, data, record, entry = row
    return Event(
        seq=seq,
        datasource_id=dsid,
        type=type_,
        job=job,
        client=client,
        timestamp=timestamp,
        record=record_from_entry(record, entry),
        data=None if data is None else codec.loads(data),
    )


def reserve_seqs(db: sqlite3.Connection, n: int) -> int:
    """Take ``n`` seqs from the events' AUTOINCREMENT counter (schedule events take theirs from
    it too); return the first. Events get their seqs before they are written: job rows and
    other events point at the entries holding their requests."""
    row = db.execute(_RESERVE_SEQS, (n,)).fetchone()
    if row is None:  # no event was ever appended: the counter row does not exist yet
        db.execute(
            "INSERT INTO sqlite_sequence (name, seq) "
            "SELECT 'events', coalesce((SELECT max(seq) FROM events), 0)"
        )
        row = db.execute(_RESERVE_SEQS, (n,)).fetchone()
    return int(row[0]) - n + 1
