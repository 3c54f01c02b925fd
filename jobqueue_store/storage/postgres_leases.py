"""The PostgreSQL store's statements and commands for claims, timers and the worker slot.

Claims, heartbeats and timer rounds are commands of the store's writer
(:class:`~jobqueue_store.storage.postgres.PostgresStore`): they run in its batch transaction,
under the log lock, and are decided by :mod:`jobqueue_store.leases` against the committed rows,
which they lock ``FOR UPDATE SKIP LOCKED`` (claims: the oldest claimable jobs of a datasource;
timer rounds: the rows whose ``due_at`` has passed). Every process may run them at once: a row
is taken by one transaction at a time and re-decided from its committed state, so no job is
held by two leases and each due item fires once.

The worker slot has its own small table and row lock (no event is appended for it).
"""

from __future__ import annotations

import random
from typing import Any

import asyncpg

from jobqueue_store import codec, leases
from jobqueue_store.errors import NotFound
from jobqueue_store.models import Datasource, SlotLease, WorkerInfo
from jobqueue_store.storage.commands import FIRE_STEPS_MAX as FIRE_STEPS_MAX
from jobqueue_store.storage.commands import Claim as Claim
from jobqueue_store.storage.commands import FireDue as FireDue
from jobqueue_store.storage.commands import Heartbeat as Heartbeat

# The columns of a job as every read of ``jobs`` takes them (the table unaliased). The current
# revision's request is the row's own ``request`` (a row written before schema 7), or in
# ``request_entry``, the data of the log entry that brought it (``request_seq``).
JOB_COLUMNS = (
    "id, datasource_id, job, client, status, request, request_seq, "
    "(SELECT e.data FROM events e WHERE e.seq = jobs.request_seq) AS request_entry, "
    "response, error, progress, "
    "cancel_requested, version, submitted_at, updated_at, lease_id, lease_worker, "
    "lease_expires_at, attempts, retry_at, deadline, pipeline, schedule, scheduled_for"
)


# The predicate repeats that of the partial index jobs_claimable. Rows the batch already holds
# ($3) are left to its batch-local view.
SQL_CLAIMABLE = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE datasource_id = $1 "
    "AND status IN ('submitted', 'retrying') AND lease_id IS NULL "
    "AND (retry_at IS NULL OR retry_at <= $2) AND id <> ALL($3::bigint[]) "
    "ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED"
)
SQL_DUE = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE due_at IS NOT NULL AND due_at <= $1 "
    "AND id <> ALL($2::bigint[]) ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED"
)
SQL_ANY_DUE = "SELECT 1 AS due FROM jobs WHERE due_at IS NOT NULL AND due_at <= $1 LIMIT 1"
SQL_DS_SETTINGS = "SELECT id, settings, last_ts FROM datasources WHERE id = ANY($1::text[])"
# A lease worker seen again after its listing window starts a new run ("since").
SQL_SEEN = """
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS v(ds, w, t, cutoff)
), upd AS (
    UPDATE lease_workers l
    SET since = CASE WHEN l.last_seen < v.cutoff THEN v.t ELSE l.since END,
        last_seen = GREATEST(l.last_seen, v.t)
    FROM v WHERE l.datasource_id = v.ds AND l.worker = v.w
    RETURNING l.datasource_id, l.worker
)
INSERT INTO lease_workers (datasource_id, worker, since, last_seen)
SELECT v.ds, v.w, v.t, v.t FROM v
WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.datasource_id = v.ds AND upd.worker = v.w)
ON CONFLICT DO NOTHING
"""
_SQL_SLOT_ENSURE = (
    "INSERT INTO worker_slots (datasource_id, lease_id, worker, since, last_seen, expires_at) "
    "VALUES ($1, '', '', 0, 0, 0) ON CONFLICT (datasource_id) DO NOTHING"
)
_SQL_SLOT_LOCK = (
    "SELECT lease_id, worker, expires_at, resume, last_seen FROM worker_slots "
    "WHERE datasource_id = $1 FOR UPDATE"
)
_SQL_DS_ONE = "SELECT id, settings FROM datasources WHERE id = $1"


# A generator of its own: the store's timer loop draws jitter at any moment, and must not move
# the global ``random`` state under a caller in another thread (Hypothesis checks it).
_RNG = random.Random()


def random_fraction() -> float:
    """The jitter of a backoff: a float in ``[0, 1)``."""
    return _RNG.random()


def seen_args(
    seen: dict[tuple[str, str], int], datasources: dict[str, Datasource]
) -> list[list[Any]]:
    """The four column arrays of :data:`SQL_SEEN`."""
    keys = list(seen)
    return [
        [ds for ds, _ in keys],
        [w for _, w in keys],
        [seen[k] for k in keys],
        [seen[k] - leases.seen_window_ms(datasources[k[0]]) for k in keys],
    ]


async def _locked_slot(
    conn: asyncpg.Connection, dsid: str
) -> tuple[Datasource, SlotLease | None, int | None]:
    row = await conn.fetchrow(_SQL_DS_ONE, dsid)
    if row is None:
        raise NotFound(
            f"Datasource '{dsid}' does not exist: its driver declares it with PUT /jobs/{dsid}."
        )
    settings = row["settings"]
    datasource = Datasource.from_stored(
        dsid, "", None, None if settings is None else codec.loads(settings)
    )
    leases.require_stream_dispatch(datasource)
    await conn.execute(_SQL_SLOT_ENSURE, dsid)
    slot = await conn.fetchrow(_SQL_SLOT_LOCK, dsid)
    assert slot is not None
    if not slot["lease_id"]:
        return datasource, None, None
    current = SlotLease(slot["lease_id"], slot["worker"], slot["expires_at"], slot["resume"])
    return datasource, current, slot["last_seen"]


async def take_slot(conn: asyncpg.Connection, dsid: str, worker: str, now: int) -> SlotLease:
    """Take the slot in a transaction of its own, decided against the locked row."""
    async with conn.transaction():
        datasource, current, last_seen = await _locked_slot(conn, dsid)
        taken = leases.decide_take_slot(
            current, last_seen, datasource, worker=worker, lease_id=leases.new_lease_id(), now=now
        )
        await conn.execute(
            "UPDATE worker_slots SET lease_id = $2, worker = $3, since = $4, last_seen = $4, "
            "expires_at = $5, resume = $6 WHERE datasource_id = $1",
            dsid,
            taken.id,
            taken.worker,
            now,
            taken.expires_at,
            taken.resume,
        )
    return taken


async def renew_slot(
    conn: asyncpg.Connection, dsid: str, lease: str, resume: int | None, now: int
) -> SlotLease:
    """Renew the slot and store ``resume``, decided against the locked row."""
    async with conn.transaction():
        datasource, current, _ = await _locked_slot(conn, dsid)
        renewed = leases.decide_renew_slot(current, datasource, lease=lease, resume=resume, now=now)
        await conn.execute(
            "UPDATE worker_slots SET last_seen = $2, expires_at = $3, resume = $4 "
            "WHERE datasource_id = $1",
            dsid,
            now,
            renewed.expires_at,
            renewed.resume,
        )
    return renewed


async def release_slot(conn: asyncpg.Connection, dsid: str, lease: str, now: int) -> None:
    """Free the slot (it lapses now; the resume point stays)."""
    async with conn.transaction():
        _, current, _ = await _locked_slot(conn, dsid)
        leases.check_slot(current, lease, dsid, now)
        await conn.execute(
            "UPDATE worker_slots SET last_seen = $2, expires_at = $2 WHERE datasource_id = $1",
            dsid,
            now,
        )


async def read_workers(
    conn: asyncpg.Connection, datasource: Datasource, now: int
) -> list[WorkerInfo]:
    """The datasource's workers as ``GET /cat`` shows them."""
    if not datasource.leased:
        row = await conn.fetchrow(
            "SELECT worker, since, last_seen, expires_at, resume FROM worker_slots "
            "WHERE datasource_id = $1 AND expires_at > $2",
            datasource.id,
            now,
        )
        return [] if row is None else [WorkerInfo(*row)]
    rows = await conn.fetch(
        "SELECT worker, since, last_seen FROM lease_workers WHERE datasource_id = $1 "
        "AND last_seen >= $2 ORDER BY worker",
        datasource.id,
        now - leases.seen_window_ms(datasource),
    )
    return [WorkerInfo(*row) for row in rows]
