"""The PostgreSQL store: asyncpg, group commit, a serialised log and LISTEN/NOTIFY.

Several store processes may share one database (behind a load balancer). The design:

- **Writes** go through one writer task per process. It takes every pending command and runs
  them in one transaction (group commit) in a few round trips whatever their number: one
  ``SELECT ... FOR UPDATE`` locks and reads every job the batch names, the lifecycle rules decide
  each command in Python against a batch-local view (later commands see earlier ones), and one
  statement of set-based writes stores the result. A command whose rule fails raises before it
  changes anything, so it fails alone; a value the database refuses makes the batch run again
  command by command, so that only that command fails.
- **The log** (``events``) gets its ``seq`` from the one-row ``log_counter`` table, under a
  transaction-level advisory lock taken at the start of every write transaction. The lock is
  held until commit, so seq order is commit order across every process: a reader that sees
  ``seq = n`` has already been able to see every smaller seq. That is the commit watermark that
  ``entries_since``, ``events_after``, ``latest_entry`` and the publisher rely on (a sequence
  would commit out of order, and a reader could skip a value forever). The lock is taken before
  any row lock, so writers of several processes never deadlock.
- **Notifications**: each write transaction that appends sends ``NOTIFY jobqueue_<schema>,
  '<last seq>'`` (delivered at commit). Every process LISTENs on a dedicated connection; on a
  notification, on its own commit, after the listener reconnects, and every second as a safety
  net, one publisher task reads the log after the last seq it published and hands the events to
  the listener in seq order, with no gap and no duplicate. The log is the source of truth; a
  notification is only a wake-up.
- **Retention**: :meth:`PostgresStore.purge` is a command of the writer too, so it holds the log
  lock: purges of several processes and every write are serialised, and it commits atomically.
- **Requests are stored once** (schema 7): in the data of the ``request`` or ``update`` entry
  that brought the revision (its last member). The job row and the job's other events point at
  that entry (``request_seq``) and keep records without ``request``; reads put it back
  (:data:`~.postgres_leases.JOB_COLUMNS`, :data:`~.postgres_revisions.EVENT_COLUMNS`). A job
  whose row has no ``request_seq`` (written before) keeps the old form, request in every row,
  until its next revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import asyncpg

from jobqueue_store import codec, leases, revisions
from jobqueue_store import schedules as schedule_rules
from jobqueue_store.errors import BadRequest, NotFound, StoreError, Unavailable
from jobqueue_store.lifecycle import (
    BRINGS_REQUEST,
    Outcome,
    decide_cancel,
    decide_submit,
    decide_update,
    entry_data,
)
from jobqueue_store.models import (
    Datasource,
    DesiredState,
    Event,
    JobPage,
    JobRecord,
    Lease,
    SlotLease,
    Status,
    StatusUpdate,
    WorkerInfo,
    entry_request,
)
from jobqueue_store.schedules import (
    ScheduleAction,
    ScheduleEvent,
    SchedulePage,
    ScheduleRecord,
    ScheduleSpec,
)
from jobqueue_store.storage import postgres_leases as pl
from jobqueue_store.storage import postgres_revisions as prv
from jobqueue_store.storage import postgres_schedules as ps
from jobqueue_store.storage.base import (
    GROUP_TURNS,
    DatasourceJobs,
    Store,
    WriteQueue,
    job_stats_from,
    let_batch_fill,
)
from jobqueue_store.storage.migrations import packaged
from jobqueue_store.timers import Clock, SystemClock

log = logging.getLogger(__name__)

# First key of the two-key advisory locks; the second is hashtext() of a per-schema name, so
# stores on different schemas of one database do not serialise each other.
_LOCK_CLASS = 0x4A51
_CACHE_TTL = 1.0
_POLL_INTERVAL = 1.0
_BATCH_MAX = 500
_READ_PAGE = 1000

# Errors that mean "the database cannot be reached or cannot serve now": answered with 503.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    # A connection cut mid-operation (server restarted) can leave asyncpg's pool or protocol
    # state inconsistent, reported as an "internal client error": the database went away.
    asyncpg.InternalClientError,
    # A standby during failover refuses writes; a lock_timeout set by the operator expired.
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.LockNotAvailableError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)

_JOB_COLUMNS = pl.JOB_COLUMNS
_EVENT_COLUMNS = prv.EVENT_COLUMNS
_EVENT_INSERT_COLUMNS = "seq, datasource_id, type, job, client, ts, record, data, request_seq"

_SQL_LOCK_LOG = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
_SQL_GET_COUNTER = "SELECT seq FROM log_counter"
# The batch's first read, after the lock: the log counter and the last timestamp of each
# datasource the batch names (absent from the arrays: no such datasource).
_SQL_BATCH_START = (
    "SELECT c.seq, d.ids, d.last_ts, d.settings FROM log_counter c, LATERAL ("
    "SELECT array_agg(id) AS ids, array_agg(last_ts) AS last_ts, array_agg(settings) AS settings "
    "FROM datasources WHERE id = ANY($1::text[])) d"
)
_SQL_JOBS_FOR_UPDATE = (
    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE (datasource_id, job) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[])) FOR UPDATE"
)
_SQL_JOB_GET = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE datasource_id = $1 AND job = $2"
# Every write of a batch in one statement (one round trip). The data-modifying CTEs all run, and
# none reads another's rows: new jobs are inserted, changed (pre-existing) jobs updated by id, the
# events appended with the seqs taken under the log lock, each datasource's last_ts raised, the
# counter set, and the notification sent (delivered at commit). Jobs are inserted in array order,
# so their ids follow the order of submission as before.
_SQL_BATCH_WRITE = f"""
WITH new_jobs AS (
    INSERT INTO jobs (datasource_id, job, client, status, request, response, error, progress,
                      cancel_requested, version, submitted_at, updated_at, deadline, due_at,
                      request_seq)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::float8[], $9::boolean[], $10::integer[], $11::bigint[],
                         $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[])
), changed_jobs AS (
    UPDATE jobs j SET status = v.status, response = v.response, error = v.error,
        progress = v.progress, cancel_requested = v.cancel_requested, version = v.version,
        updated_at = v.updated_at, lease_id = v.lease_id, lease_worker = v.lease_worker,
        lease_expires_at = v.lease_expires_at, attempts = v.attempts, retry_at = v.retry_at,
        due_at = v.due_at
    FROM unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::float8[],
                $21::boolean[], $22::integer[], $23::bigint[], $24::text[], $25::text[],
                $26::bigint[], $27::integer[], $28::bigint[], $29::bigint[])
        AS v(id, status, response, error, progress, cancel_requested, version, updated_at,
             lease_id, lease_worker, lease_expires_at, attempts, retry_at, due_at)
    WHERE j.id = v.id
), new_events AS (
    INSERT INTO events ({_EVENT_INSERT_COLUMNS})
    SELECT * FROM unnest($30::bigint[], $31::text[], $32::text[], $33::text[], $34::text[],
                         $35::bigint[], $36::text[], $37::text[], $38::bigint[])
), bumped AS (
    UPDATE datasources d SET last_ts = GREATEST(d.last_ts, v.ts)
    FROM unnest($39::text[], $40::bigint[]) AS v(id, ts)
    WHERE d.id = v.id
), counter AS (
    UPDATE log_counter SET seq = $41::bigint
)
SELECT pg_notify($42, $43)
"""
_SQL_DS_UPSERT = (
    "INSERT INTO datasources (id, description, request_schema, settings) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (id) DO UPDATE SET description = EXCLUDED.description, "
    "request_schema = EXCLUDED.request_schema, settings = EXCLUDED.settings"
)
_SQL_DS_GET = "SELECT id, description, request_schema, settings FROM datasources WHERE id = $1"
_SQL_DS_LIST = "SELECT id, description, request_schema, settings FROM datasources ORDER BY id"
# The request stream's newest entry and a page of it, selecting either the event's columns or
# the entry's JSON text (_ENTRY_TEXT).
_LATEST_ENTRY = (
    "SELECT {} FROM events WHERE datasource_id = $1 AND type <> 'status' ORDER BY seq DESC LIMIT 1"
)
_ENTRIES_SINCE = (
    "SELECT {} FROM events WHERE datasource_id = $1 AND type <> 'status' "
    "AND ts >= $2 AND seq > $3 ORDER BY seq LIMIT $4"
)
# A request-stream entry (protocol.md §6) as JSON text, assembled by PostgreSQL from the columns
# and the entry data's stored text: a page is served without decoding anything.
_ENTRY_TEXT = (
    """'{"datasource_id":' || to_json(datasource_id)::text || ',"type":' || to_json(type)::text"""
    """ || ',"job":' || to_json(job)::text || ',"client":' || to_json(client)::text"""
    """ || ',"seq":' || seq || ',"timestamp":' || ts || ',"data":' || coalesce(data, 'null')"""
    """ || '}' AS entry"""
)
_SQL_LATEST_ENTRY = _LATEST_ENTRY.format(_EVENT_COLUMNS)
_SQL_ENTRIES_SINCE = _ENTRIES_SINCE.format(_EVENT_COLUMNS)
_SQL_LATEST_ENTRY_WIRE = _LATEST_ENTRY.format(_ENTRY_TEXT)
_SQL_ENTRIES_SINCE_WIRE = _ENTRIES_SINCE.format(f"seq, {_ENTRY_TEXT}")
# Job events and schedule events in one statement: one snapshot, so no seq is skipped.
_SQL_EVENTS_ALL_AFTER = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > $1 UNION ALL "
    f"{ps.EVENTS_UNION} WHERE seq > $1 ORDER BY seq LIMIT $2"
)
# Data-modifying CTEs run to completion whatever the outer query reads. The status list repeats
# the predicate of the partial index jobs_terminal_by_updated so that the planner uses it.
_SQL_PURGE = """
WITH doomed AS (
    SELECT id, datasource_id, job FROM jobs
    WHERE status IN ('complete', 'cancelled', 'forbidden', 'failed') AND updated_at < $1
    ORDER BY updated_at LIMIT $2
), gone_events AS (
    DELETE FROM events e USING doomed d
    WHERE e.datasource_id = d.datasource_id AND e.job = d.job
    RETURNING e.seq
), gone_jobs AS (
    DELETE FROM jobs j USING doomed d WHERE j.id = d.id RETURNING j.id
)
SELECT (SELECT count(*) FROM gone_jobs) AS jobs, (SELECT max(seq) FROM gone_events) AS top
"""
_SQL_RAISE_PURGED = "UPDATE log_counter SET purged_through = GREATEST(purged_through, $1)"
_SQL_GET_PURGED = "SELECT purged_through FROM log_counter"


def _wrap(exc: BaseException, doing: str) -> StoreError:
    """A domain error for a database failure while ``doing`` something."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncpg.DataError):
        return BadRequest(f"The database refused a value while {doing}: {exc}.")
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return Unavailable(
            f"The PostgreSQL database is unavailable while {doing} "
            f"({type(exc).__name__}); retry later."
        )
    return StoreError(f"The PostgreSQL database failed while {doing} ({type(exc).__name__}).")


def _is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE_ERRORS)


def _encode(value: Any, what: str) -> str:
    try:
        return codec.dumps_str(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise BadRequest(f"The {what} cannot be stored as JSON: {exc}.") from None


def _text(encode: Callable[[], bytes], what: str) -> str:
    """``encode()`` (a record's cached JSON encoding) as text."""
    try:
        return encode().decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise BadRequest(f"The {what} cannot be stored as JSON: {exc}.") from None


def _loads_opt(text: str | None) -> Any:
    return None if text is None else codec.loads(text)


def _row_record(row: asyncpg.Record) -> JobRecord:
    response = row["response"]
    lease_id = row["lease_id"]
    entry = row["request_entry"]
    record = JobRecord(
        datasource_id=row["datasource_id"],
        job=row["job"],
        client=row["client"],
        status=Status(row["status"]),
        request=codec.loads(row["request"] if entry is None else entry_request(entry)),
        cancel_requested=row["cancel_requested"],
        version=row["version"],
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        response=_loads_opt(response),
        has_response=response is not None,
        error=row["error"],
        progress=row["progress"],
        lease=None
        if lease_id is None
        else Lease(lease_id, row["lease_worker"], row["attempts"], row["lease_expires_at"]),
        attempts=row["attempts"],
        retry_at=row["retry_at"],
        deadline=row["deadline"],
        schedule=row["schedule"],
        scheduled_for=row["scheduled_for"],
    )
    return prv.with_pipeline(record, row["pipeline"])


_row_event = prv.row_event


def _row_datasource(row: asyncpg.Record) -> Datasource:
    return Datasource.from_stored(
        row["id"],
        row["description"],
        _loads_opt(row["request_schema"]),
        _loads_opt(row["settings"]),
    )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _channel_for(schema: str) -> str:
    channel = f"jobqueue_{schema}"
    if len(channel.encode()) > 63:  # NAMEDATALEN - 1
        channel = "jobqueue_" + hashlib.sha1(schema.encode()).hexdigest()[:32]
    return channel


def _declared(datasources: dict[str, Datasource], dsid: str) -> Datasource:
    datasource = datasources.get(dsid)
    if datasource is None:
        raise NotFound(
            f"Datasource '{dsid}' does not exist: its driver declares it with PUT /jobs/{dsid}."
        )
    return datasource


def migrations() -> list[tuple[int, str]]:
    """The packaged PostgreSQL migrations as ``(version, sql)``, in version order."""
    return packaged("postgres")


# Write commands, queued to the writer. ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Submit:
    dsid: str
    job: str
    client: str
    request: Any
    request_text: str
    timeout: int | None = None
    schedule: str | None = None
    scheduled_for: int | None = None


@dataclass(frozen=True, slots=True)
class _Cancel:
    dsid: str
    job: str
    client: str | None


@dataclass(frozen=True, slots=True)
class _Update:
    dsid: str
    job: str
    update: StatusUpdate


@dataclass(frozen=True, slots=True)
class _Purge:
    older_than_ms: int
    limit: int


_JobOp = _Submit | _Cancel | _Update | pl.Heartbeat | prv.Revise | prv.Desired
_BatchOp = _JobOp | pl.Claim | pl.FireDue
_Op = _BatchOp | _Purge | ps.ScheduleOp


@dataclass(slots=True)
class _Command:
    op: _Op
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Slot:
    """A job as the batch sees it: the stored row's id (``None``: created by this batch), the
    record after the batch's earlier commands, and the stored JSON texts of its values."""

    row_id: int | None
    record: JobRecord
    request_text: str | None
    """The row's own request text (``None``: the log entry at ``request_seq`` holds it)."""
    response_text: str | None
    dirty: bool = False
    due_at: int | None = None
    revised: bool = False
    """The request or the revision fields changed: written by ``SQL_WRITE_REVISED``."""
    request_seq: int | None = None
    """The seq of the entry that holds the current revision's request (``None``: the row keeps
    it, written before schema 7, or the slot has no event yet)."""

    @property
    def row_request(self) -> str | None:
        """The row's own ``request`` column: ``NULL`` when an entry holds the request."""
        return None if self.request_seq is not None else self.request_text


_EventRow = tuple[int, str, str, str, str, int, str, str | None, int | None]
"""An ``events`` row: seq, datasource, type, job, client, ts, record, data and request_seq
(:data:`_EVENT_INSERT_COLUMNS`)."""


@dataclass(slots=True)
class _BatchWrites:
    """The events one batch appends (as rows) and the last timestamp it gave each datasource."""

    events: list[_EventRow] = field(default_factory=list)
    made: list[tuple[JobRecord, dict[str, Any] | None]] = field(default_factory=list)
    """The record and data of each of ``events`` (whole: the rows may hold them in parts)."""
    last_ts: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, str], int] = field(default_factory=dict)
    """Lease workers seen by the batch (claims, heartbeats): ``(dsid, worker) -> time``."""
    schedules: ps.ScheduleWrites = field(default_factory=ps.ScheduleWrites)
    """Schedules the batch's timer round fired, and their runs."""

    def pending_events(self, dsid: str, job: str) -> list[Event]:
        """The events of ``job`` that the batch appends so far, by seq."""
        return [
            Event(row[0], row[1], cast(Any, row[2]), row[3], row[4], row[5], record, data)
            for row, (record, data) in zip(self.events, self.made, strict=True)
            if row[1] == dsid and row[3] == job
        ]


class PostgresStore(Store):
    """A :class:`~jobqueue_store.storage.base.Store` on PostgreSQL, shareable by processes.

    ``dsn``: a ``postgresql://`` URL. ``schema``: the schema every connection uses (created by
    :meth:`migrate` if missing); ``None`` keeps the server's search path. ``min_size`` and
    ``max_size`` size the connection pool; ``acquire_timeout`` is how long a request waits for a
    pooled connection before the store answers :class:`~jobqueue_store.errors.Unavailable`.
    ``group_turns``: how many event-loop turns a write batch may wait to fill under load
    (:func:`~jobqueue_store.storage.base.let_batch_fill`; 0: never).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 2,
        max_size: int = 10,
        acquire_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        clock: Clock | None = None,
        group_turns: int = GROUP_TURNS,
    ) -> None:
        self.dsn = dsn
        self.group_turns = group_turns
        self._last_batch = 0
        self.clock: Clock = clock or SystemClock()
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._schema_name = schema or "public"
        self._channel = _channel_for(self._schema_name)
        self._queue: WriteQueue[_Command | None] = WriteQueue()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._published_seq = 0
        self._ds_cache: dict[str, tuple[float, Datasource]] = {}

    # lifecycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect the pool, run migrations, start the writer, publisher and listener tasks."""
        # Plan every execution of a prepared statement with its parameters: a generic plan is
        # cached once, and one made while a table was empty (a seq scan) stays in use, costing
        # O(table) per batch or log read as it grows, until the next ANALYZE (never, with
        # autovacuum off). A startup setting, so that the pool's RESET ALL keeps it.
        settings = {"plan_cache_mode": "force_custom_plan"}
        if self.schema:
            settings["search_path"] = self.schema
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                server_settings=settings,
                timeout=self.connect_timeout,
            )
        except Exception as exc:
            raise _wrap(exc, "connecting to the database") from None
        try:
            await self.migrate()
            async with self._acquire("opening the store") as conn:
                if self.schema is None:
                    self._schema_name = await conn.fetchval("SELECT current_schema()")
                    self._channel = _channel_for(self._schema_name)
                self._published_seq = await conn.fetchval(_SQL_GET_COUNTER)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="pg-writer")
        self._publisher = asyncio.create_task(self._publish_loop(), name="pg-publisher")
        self._listener_task = asyncio.create_task(self._listen_loop(), name="pg-listener")

    async def close(self) -> None:
        """Finish pending writes, publish what is committed, and disconnect."""
        if self._pool is None:
            return
        self._closing = True
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None
        # Python 3.11's wait_for can swallow a cancellation, so the loops also stop on
        # self._closing, and the listener connection is cut to end its wait.
        self._wake.set()
        if self._listen_conn is not None:
            self._listen_conn.terminate()
        tasks = [t for t in (self._listener_task, self._publisher) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("PostgreSQL background task failed", exc_info=task.exception())
        self._listener_task = self._publisher = None
        with contextlib.suppress(Exception):
            await self._publish_pending()
        pool, self._pool = self._pool, None
        try:
            async with asyncio.timeout(10):
                await pool.close()
        except Exception:
            pool.terminate()

    async def migrate(self) -> int:
        """Create the schema if missing and apply the pending numbered migrations.

        Runs in one transaction under an advisory lock, so several processes may start at once.
        """
        steps = migrations()
        async with self._acquire("migrating the schema") as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                        _LOCK_CLASS,
                        f"migrate:{self.schema or ''}",
                    )
                    if self.schema is not None:
                        ident = _quote_ident(self.schema)
                        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
                        await conn.execute(f"SET LOCAL search_path TO {ident}")
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version ("
                        " version INTEGER PRIMARY KEY,"
                        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                    )
                    current: int = await conn.fetchval(
                        "SELECT COALESCE(MAX(version), 0) FROM schema_version"
                    )
                    for version, sql in steps:
                        if version > current:
                            await conn.execute(sql)
                            await conn.execute(
                                "INSERT INTO schema_version (version) VALUES ($1)", version
                            )
                            current = version
            except Exception as exc:
                raise _wrap(exc, "migrating the schema") from None
        return current

    async def ping(self) -> None:
        """Run ``SELECT 1``; raise :class:`~jobqueue_store.errors.Unavailable` if it fails."""
        async with self._acquire("checking the database") as conn:
            try:
                await conn.fetchval("SELECT 1")
            except Exception as exc:
                raise _wrap(exc, "checking the database") from None

    @contextlib.asynccontextmanager
    async def _acquire(self, doing: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failures to get one become ``Unavailable``."""
        pool = self._pool
        if pool is None:
            raise Unavailable("The store is closed: it no longer accepts requests.")
        try:
            conn = await pool.acquire(timeout=self.acquire_timeout)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    f"No database connection became free in {self.acquire_timeout:g} s while "
                    f"{doing}: the store is overloaded; retry later."
                ) from None
            raise _wrap(exc, doing) from None
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await pool.release(conn)

    async def _fetch(self, doing: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._acquire(doing) as conn:
            try:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            except Exception as exc:
                raise _wrap(exc, doing) from None
        return rows

    async def _fetchrow(self, doing: str, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._fetch(doing, sql, *args)
        return rows[0] if rows else None

    # datasources --------------------------------------------------------------------------------
    async def put_datasource(self, datasource: Datasource) -> Datasource:
        """Create or replace a datasource's description and request schema."""
        schema = (
            None
            if datasource.request_schema is None
            else _encode(datasource.request_schema, "request schema")
        )
        doing = f"saving datasource '{datasource.id}'"
        async with self._acquire(doing) as conn:
            try:
                await conn.execute(
                    _SQL_DS_UPSERT,
                    datasource.id,
                    datasource.description,
                    schema,
                    codec.dumps_str(datasource.settings_json()),
                )
            except Exception as exc:
                raise _wrap(exc, doing) from None
        self._ds_cache.pop(datasource.id, None)
        return datasource

    async def get_datasource(self, dsid: str) -> Datasource | None:
        """The datasource, or ``None`` (a found one is cached for a second)."""
        cached = self._ds_cache.get(dsid)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self._fetchrow(f"reading datasource '{dsid}'", _SQL_DS_GET, dsid)
        if row is None:
            self._ds_cache.pop(dsid, None)
            return None
        datasource = _row_datasource(row)
        self._ds_cache[dsid] = (now + _CACHE_TTL, datasource)
        return datasource

    async def list_datasources(self) -> list[Datasource]:
        """Every datasource, ordered by id."""
        rows = await self._fetch("listing datasources", _SQL_DS_LIST)
        return [_row_datasource(r) for r in rows]

    # writes -------------------------------------------------------------------------------------
    async def _write(self, op: _Op) -> Any:
        """Queue a command for the writer and wait until its transaction committed."""
        if self._closing or self._pool is None or self._writer is None:
            raise Unavailable("The store is shutting down: it no longer accepts writes.")
        command = _Command(op)
        self._queue.put_nowait(command)
        try:
            return await command.future
        except BaseException:
            # The exception's traceback holds this frame, which holds the command's future,
            # which holds the exception: without it the whole is freed at once, not by the
            # cyclic collector.
            del command
            raise

    async def submit(
        self, dsid: str, job: str, client: str, request: Any, timeout: int | None = None
    ) -> tuple[JobRecord, bool]:
        """Submit a job; return ``(record, created)``."""
        request_text = _encode(request, "request")
        result: tuple[JobRecord, bool] = await self._write(
            _Submit(dsid, job, client, request, request_text, timeout)
        )
        return result

    async def cancel(self, dsid: str, job: str, client: str | None) -> JobRecord:
        """Request cancellation; ``client`` ``None`` is an admin."""
        record: JobRecord = await self._write(_Cancel(dsid, job, client))
        return record

    async def update_status(self, dsid: str, job: str, update: StatusUpdate) -> JobRecord:
        """A driver's status report."""
        if update.has_response:
            _encode(update.response, "response")
        record: JobRecord = await self._write(_Update(dsid, job, update))
        return record

    # long-running jobs ----------------------------------------------------------------------------
    async def revise(
        self, dsid: str, job: str, client: str | None, request: Any, rollback: bool
    ) -> tuple[JobRecord, bool]:
        """A client's update of ``job``'s request: a new revision, or nothing if the same."""
        _encode(request, "request")
        result: tuple[JobRecord, bool] = await self._write(
            prv.Revise(dsid, job, client, request, rollback)
        )
        return result

    async def set_desired(
        self, dsid: str, job: str, client: str | None, state: DesiredState
    ) -> JobRecord:
        """A client's stop or start."""
        record: JobRecord = await self._write(prv.Desired(dsid, job, client, state))
        return record

    async def job_events(self, dsid: str, job: str) -> list[Event]:
        """Every event of one job, by ``seq``."""
        try:
            async with self._acquire("reading a job's events") as conn:
                return await prv.job_events(conn, dsid, job)
        except StoreError:
            raise
        except Exception as exc:
            raise _wrap(exc, "reading a job's events") from None

    # leases, timers and the worker slot ---------------------------------------------------------
    async def claim(self, dsid: str, worker: str, max_jobs: int) -> list[JobRecord]:
        """Claim up to ``max_jobs`` claimable jobs for ``worker``, oldest first (a command of
        the writer: the rows are taken ``FOR UPDATE SKIP LOCKED`` under the log lock)."""
        claimed: list[JobRecord] = await self._write(pl.Claim(dsid, worker, max_jobs))
        return claimed

    async def heartbeat(self, dsid: str, job: str, lease: str) -> JobRecord:
        """Renew ``lease`` on ``job``: no event."""
        record: JobRecord = await self._write(pl.Heartbeat(dsid, job, lease))
        return record

    async def fire_due(self, limit: int = 500) -> int:
        """Fire up to ``limit`` due rows; return the events appended. Every process may run
        it: rows are locked ``FOR UPDATE SKIP LOCKED`` and decided against the committed row
        under the log lock, so each due item fires once."""
        now = self.clock.now_ms()
        if (
            await self._fetchrow("reading due times", pl.SQL_ANY_DUE, now) is None
            and await self._fetchrow("reading due schedules", ps.SQL_ANY_DUE, now) is None
        ):
            return 0  # nothing due: no write transaction
        fired: int = await self._write(pl.FireDue(limit))
        return fired

    async def take_slot(self, dsid: str, worker: str) -> SlotLease:
        """Take the worker slot of stream datasource ``dsid``."""
        async with self._acquire("taking the worker slot") as conn:
            try:
                return await pl.take_slot(conn, dsid, worker, self.clock.now_ms())
            except Exception as exc:
                raise _wrap(exc, "taking the worker slot") from None

    async def renew_slot(self, dsid: str, lease: str, resume: int | None) -> SlotLease:
        """Renew the worker slot and store ``resume``."""
        async with self._acquire("renewing the worker slot") as conn:
            try:
                return await pl.renew_slot(conn, dsid, lease, resume, self.clock.now_ms())
            except Exception as exc:
                raise _wrap(exc, "renewing the worker slot") from None

    async def release_slot(self, dsid: str, lease: str) -> None:
        """Free the worker slot (its resume point stays)."""
        async with self._acquire("freeing the worker slot") as conn:
            try:
                await pl.release_slot(conn, dsid, lease, self.clock.now_ms())
            except Exception as exc:
                raise _wrap(exc, "freeing the worker slot") from None

    async def workers(self, dsid: str) -> list[WorkerInfo]:
        """The slot holder or the recent lease workers of ``dsid``."""
        datasource = await self.get_datasource(dsid)
        if datasource is None:
            return []
        async with self._acquire("reading the workers") as conn:
            try:
                return await pl.read_workers(conn, datasource, self.clock.now_ms())
            except Exception as exc:
                raise _wrap(exc, "reading the workers") from None

    async def _apply_jobs(
        self, conn: asyncpg.Connection, ops: list[_BatchOp]
    ) -> list[tuple[bool, Any]]:
        """Run a batch of job commands in the open transaction (the log lock is held).

        A few round trips whatever the batch size: read the counter and the datasources (last
        timestamps, settings), lock every named job row, lock the rows that claims and timer
        rounds take (``FOR UPDATE SKIP LOCKED``, one statement each), then write everything in
        one statement. Each command is decided in Python by the pure rules against a
        batch-local view of its job (so it sees the batch's earlier commands); a command whose
        rule or encoding fails raises before it changes that view, so it fails alone.
        """
        named = [op for op in ops if not isinstance(op, pl.FireDue)]
        dsids = list(dict.fromkeys(op.dsid for op in named))
        start = await conn.fetchrow(_SQL_BATCH_START, dsids)
        assert start is not None
        seq: int = start["seq"]
        ids = start["ids"] or ()
        last_ts: dict[str, int] = dict(zip(ids, start["last_ts"] or (), strict=True))
        datasources = {
            dsid: Datasource.from_stored(dsid, "", None, _loads_opt(settings))
            for dsid, settings in zip(ids, start["settings"] or (), strict=True)
        }
        jobs = [op for op in named if not isinstance(op, pl.Claim)]
        rows = await conn.fetch(
            _SQL_JOBS_FOR_UPDATE, [op.dsid for op in jobs], [op.job for op in jobs]
        )
        slots: dict[tuple[str, str], _Slot] = {}
        self._add_slots(slots, rows)
        writes = _BatchWrites()
        outcomes: list[tuple[bool, Any]] = []
        now = self.clock.now_ms()
        value: Any
        for op in ops:
            try:
                if isinstance(op, pl.Claim):
                    value, seq = await self._claim_in(
                        conn, op, datasources, slots, last_ts, seq, writes, now
                    )
                elif isinstance(op, pl.FireDue):
                    value, seq = await self._fire_in(
                        conn, op, datasources, slots, last_ts, seq, writes, now
                    )
                    fired, seq = await self._fire_schedules_in(
                        conn, op, datasources, slots, last_ts, seq, writes, now
                    )
                    value += fired
                else:
                    history = None
                    slot = slots.get((op.dsid, op.job))
                    if (
                        isinstance(op, _Update)
                        and slot is not None
                        and revisions.needs_history(slot.record, op.update)
                    ):
                        history = await prv.history_in(
                            conn, op.dsid, op.job, writes.pending_events(op.dsid, op.job)
                        )
                    value, seq = self._decide(op, datasources, slots, last_ts, seq, writes, history)
            except StoreError as exc:
                # Without its traceback, which holds this frame and so ``outcomes``: a cycle.
                outcomes.append((False, exc.with_traceback(None)))
                continue
            outcomes.append((True, value))
        if any(slot.dirty for slot in slots.values()):
            await conn.execute(_SQL_BATCH_WRITE, *self._write_args(slots, writes, seq))
            revised = [s for s in slots.values() if s.revised]
            if revised:
                await conn.execute(
                    prv.SQL_WRITE_REVISED,
                    [s.record.datasource_id for s in revised],
                    [s.record.job for s in revised],
                    [s.row_request for s in revised],
                    [s.request_seq for s in revised],
                    [prv.pipeline_text(s.record) for s in revised],
                )
        await writes.schedules.flush(conn, seq, self._channel)
        if writes.seen:
            await conn.execute(pl.SQL_SEEN, *pl.seen_args(writes.seen, datasources))
        return outcomes

    @staticmethod
    def _add_slots(slots: dict[tuple[str, str], _Slot], rows: list[asyncpg.Record]) -> None:
        for r in rows:
            slots[(r["datasource_id"], r["job"])] = _Slot(
                r["id"], _row_record(r), r["request"], r["response"], request_seq=r["request_seq"]
            )

    async def _claim_in(
        self,
        conn: asyncpg.Connection,
        op: pl.Claim,
        datasources: dict[str, Datasource],
        slots: dict[tuple[str, str], _Slot],
        last_ts: dict[str, int],
        seq: int,
        writes: _BatchWrites,
        now: int,
    ) -> tuple[list[JobRecord], int]:
        datasource = _declared(datasources, op.dsid)
        leases.require_lease_dispatch(datasource)
        ts = max(last_ts.get(op.dsid, 0), now)
        writes.seen[(op.dsid, op.worker)] = ts
        # Rows this batch already holds are skipped: their batch-local record decides them.
        mine = [slot.row_id for slot in slots.values() if slot.row_id is not None]
        rows = await conn.fetch(pl.SQL_CLAIMABLE, op.dsid, ts, mine, op.max_jobs)
        self._add_slots(slots, rows)
        claimed: list[JobRecord] = []
        for r in rows:
            slot = slots[(r["datasource_id"], r["job"])]
            outcome = leases.decide_claim(
                slot.record, datasource, worker=op.worker, lease_id=leases.new_lease_id(), now=ts
            )
            if outcome is not None:
                seq = self._record(slot, outcome, datasource, last_ts, seq, writes, ts)
                claimed.append(outcome.record)
        return claimed, seq

    async def _fire_in(
        self,
        conn: asyncpg.Connection,
        op: pl.FireDue,
        datasources: dict[str, Datasource],
        slots: dict[tuple[str, str], _Slot],
        last_ts: dict[str, int],
        seq: int,
        writes: _BatchWrites,
        now: int,
    ) -> tuple[int, int]:
        mine = [slot.row_id for slot in slots.values() if slot.row_id is not None]
        rows = await conn.fetch(pl.SQL_DUE, now, mine, op.limit)
        if not rows:
            return 0, seq
        missing = list({r["datasource_id"] for r in rows} - set(datasources))
        if missing:
            for row in await conn.fetch(pl.SQL_DS_SETTINGS, missing):
                datasources[row["id"]] = Datasource.from_stored(
                    row["id"], "", None, _loads_opt(row["settings"])
                )
                last_ts[row["id"]] = max(last_ts.get(row["id"], 0), row["last_ts"])
        self._add_slots(slots, rows)
        fired = 0
        for r in rows:
            slot = slots[(r["datasource_id"], r["job"])]
            datasource = datasources[r["datasource_id"]]
            steps = 0
            while steps < pl.FIRE_STEPS_MAX:
                outcome = leases.decide_fire(
                    slot.record, datasource, now=now, rand=pl.random_fraction()
                )
                if outcome is None:
                    break
                ts = max(last_ts.get(datasource.id, 0), now)
                seq = self._record(slot, outcome, datasource, last_ts, seq, writes, ts)
                steps += 1
            if steps == 0:
                # Due earlier than its rule says (a setting changed since): move the due time.
                due = leases.next_due(slot.record, datasource)
                slot.due_at = due if due is not None and due > now else None
                slot.dirty = True
            fired += steps
        return fired, seq

    async def _fire_schedules_in(
        self,
        conn: asyncpg.Connection,
        op: pl.FireDue,
        datasources: dict[str, Datasource],
        slots: dict[tuple[str, str], _Slot],
        last_ts: dict[str, int],
        seq: int,
        writes: _BatchWrites,
        now: int,
    ) -> tuple[int, int]:
        """The schedule part of a timer round: lock the due schedules (``FOR UPDATE SKIP
        LOCKED``, under the log lock), submit their runs as batch submits, move them on."""
        rows = await conn.fetch(ps.SQL_DUE, now, op.limit)
        if not rows:
            return 0, seq
        fires = []
        for r in rows:
            record = ScheduleRecord.from_wire(codec.loads(r["record"]))
            fires.append((r["id"], record, schedule_rules.decide_fire(record, now)))
        missing = list({rec.datasource_id for _, rec, _ in fires} - set(datasources))
        if missing:
            for row in await conn.fetch(pl.SQL_DS_SETTINGS, missing):
                datasources[row["id"]] = Datasource.from_stored(
                    row["id"], "", None, _loads_opt(row["settings"])
                )
                last_ts[row["id"]] = max(last_ts.get(row["id"], 0), row["last_ts"])
        keys = [
            (rec.datasource_id, schedule_rules.run_id(rec.schedule, t))
            for _, rec, fire in fires
            if fire is not None
            for t in fire.runs
        ]
        keys = [k for k in keys if k not in slots]
        if keys:
            self._add_slots(
                slots,
                await conn.fetch(_SQL_JOBS_FOR_UPDATE, [k[0] for k in keys], [k[1] for k in keys]),
            )
        fired = 0
        for row_id, record, fire in fires:
            if fire is None:
                continue  # not active: the row's due time is stale; the write below clears it
            request_text = _encode(record.request, "request")
            for t in fire.runs:
                job = schedule_rules.run_id(record.schedule, t)
                submit = _Submit(
                    record.datasource_id,
                    job,
                    record.client,
                    record.request,
                    request_text,
                    record.timeout,
                    schedule=record.schedule,
                    scheduled_for=t,
                )
                try:
                    (_, created), seq = self._decide(
                        submit, datasources, slots, last_ts, seq, writes
                    )
                except StoreError as exc:
                    log.warning("schedule %s: run %s not submitted: %s", record.schedule, job, exc)
                    continue
                if created:
                    fired += 1
                    writes.schedules.runs.append((record.datasource_id, job, record.schedule, t))
            seq += 1
            writes.schedules.rows.append((row_id, fire.record, seq, now))
            fired += 1
        for row_id, record, fire in fires:
            if fire is None:
                seq += 1
                stale = replace(record, next_run_at=None) if record.state != "active" else record
                writes.schedules.rows.append((row_id, stale, seq, now))
        return fired, seq

    def _decide(
        self,
        op: _JobOp,
        datasources: dict[str, Datasource],
        slots: dict[tuple[str, str], _Slot],
        last_ts: dict[str, int],
        seq: int,
        writes: _BatchWrites,
        history: list[revisions.Revision] | None = None,
    ) -> tuple[Any, int]:
        """Decide one command; on a change, record it in ``slots``, ``last_ts`` and ``writes``.

        Returns the command's result and the seq of the last event appended so far.
        ``history``: the job's revisions, when a rollback may follow (an update).
        """
        key = (op.dsid, op.job)
        slot = slots.get(key)
        datasource = _declared(datasources, op.dsid)
        ts = max(last_ts.get(op.dsid, 0), self.clock.now_ms())
        if isinstance(op, _Submit):
            outcome = decide_submit(
                None if slot is None else slot.record,
                datasource_id=op.dsid,
                job=op.job,
                client=op.client,
                request=op.request,
                timestamp=ts,
                timeout=op.timeout,
                datasource=datasource,
            )
            if op.schedule is not None and outcome.created:
                run = replace(outcome.record, schedule=op.schedule, scheduled_for=op.scheduled_for)
                outcome = replace(outcome, record=run)
            if outcome.event is None:
                return (outcome.record, False), seq
            if slot is None:
                slot = slots[key] = _Slot(None, outcome.record, op.request_text, None)
            seq = self._record(slot, outcome, datasource, last_ts, seq, writes, ts)
            return (outcome.record, True), seq
        if slot is None:
            raise NotFound(f"No job '{op.job}' on datasource '{op.dsid}'.")
        if isinstance(op, _Cancel):
            outcome = decide_cancel(
                slot.record, client=op.client, timestamp=ts, datasource=datasource
            )
        elif isinstance(op, prv.Revise):
            outcome = revisions.decide_revise(
                slot.record,
                client=op.client,
                request=op.request,
                rollback=op.rollback,
                timestamp=ts,
            )
            if outcome.event is None:
                return (outcome.record, False), seq
            seq = self._record(slot, outcome, datasource, last_ts, seq, writes, ts)
            return (outcome.record, True), seq
        elif isinstance(op, prv.Desired):
            outcome = revisions.decide_desired(
                slot.record, client=op.client, state=op.state, timestamp=ts
            )
        elif isinstance(op, pl.Heartbeat):
            leases.require_lease_dispatch(datasource)
            outcome = leases.decide_heartbeat(slot.record, datasource, lease=op.lease, now=ts)
            assert outcome.record.lease is not None
            writes.seen[(op.dsid, outcome.record.lease.worker)] = ts
        else:
            outcome = decide_update(
                slot.record,
                op.update,
                timestamp=ts,
                datasource=datasource,
                rand=pl.random_fraction(),
                history=history,
            )
        if outcome.event is None and not outcome.touched:
            return outcome.record, seq
        seq = self._record(slot, outcome, datasource, last_ts, seq, writes, ts)
        if outcome.then is not None:
            seq = self._record(slot, outcome.then, datasource, last_ts, seq, writes, ts)
        return outcome.final, seq

    @staticmethod
    def _record(
        slot: _Slot,
        outcome: Outcome,
        datasource: Datasource,
        last_ts: dict[str, int],
        seq: int,
        writes: _BatchWrites,
        ts: int,
    ) -> int:
        """Put ``outcome`` in the batch: the slot's new record, and its event with seq
        ``seq + 1`` if it has one. Returns the last seq used."""
        rec = outcome.record
        # Everything that can fail on bad input runs before the batch-local state changes.
        if not rec.has_response:
            response_text = None
        elif slot.record.has_response and slot.record.response is rec.response:
            response_text = slot.response_text  # unchanged: keep the stored text as sent
        else:
            response_text = _encode(rec.response, "response")
        if outcome.event is None:
            slot.record, slot.response_text, slot.dirty = rec, response_text, True
            slot.due_at = leases.next_due(rec, datasource)
            return seq
        data = entry_data(outcome)
        data_text = None if data is None else _encode(data, "request entry")
        # Only request and update entries set a job's request (lifecycle, revisions): such an
        # entry's data keeps the new revision's request text (its last member), once; the row
        # and every later event point at it. A row that still keeps its request (request_seq
        # NULL, written before schema 7) has its events written whole, as before, until its
        # next revision.
        request_seq = slot.request_seq
        if outcome.event in BRINGS_REQUEST:
            assert data is not None and data["request"] is rec.request
            request_seq = seq + 1
        record_text = _text(rec.wire_bytes if request_seq is None else rec.rest_bytes, "job record")
        if prv.revised_changed(slot.record, rec):
            slot.revised = True
        slot.request_seq = request_seq
        slot.record, slot.response_text, slot.dirty = rec, response_text, True
        slot.due_at = leases.next_due(rec, datasource)
        seq += 1
        last_ts[rec.datasource_id] = ts
        writes.last_ts[rec.datasource_id] = ts
        writes.events.append(
            (
                seq,
                rec.datasource_id,
                outcome.event,
                rec.job,
                rec.client,
                ts,
                record_text,
                data_text,
                request_seq,
            )
        )
        writes.made.append((rec, data))
        return seq

    def _write_args(
        self, slots: dict[tuple[str, str], _Slot], writes: _BatchWrites, seq: int
    ) -> list[Any]:
        """The 43 parameters of :data:`_SQL_BATCH_WRITE`, as column arrays."""
        new = [s for s in slots.values() if s.dirty and s.row_id is None]
        changed = [s for s in slots.values() if s.dirty and s.row_id is not None]
        args: list[Any] = [
            [s.record.datasource_id for s in new],
            [s.record.job for s in new],
            [s.record.client for s in new],
            [s.record.status.value for s in new],
            [s.row_request for s in new],
            [s.response_text for s in new],
            [s.record.error for s in new],
            [s.record.progress for s in new],
            [s.record.cancel_requested for s in new],
            [s.record.version for s in new],
            [s.record.submitted_at for s in new],
            [s.record.updated_at for s in new],
            [s.record.deadline for s in new],
            [s.due_at for s in new],
            [s.request_seq for s in new],
            [s.row_id for s in changed],
            [s.record.status.value for s in changed],
            [s.response_text for s in changed],
            [s.record.error for s in changed],
            [s.record.progress for s in changed],
            [s.record.cancel_requested for s in changed],
            [s.record.version for s in changed],
            [s.record.updated_at for s in changed],
            [None if s.record.lease is None else s.record.lease.id for s in changed],
            [None if s.record.lease is None else s.record.lease.worker for s in changed],
            [None if s.record.lease is None else s.record.lease.expires_at for s in changed],
            [s.record.attempts for s in changed],
            [s.record.retry_at for s in changed],
            [s.due_at for s in changed],
        ]
        columns = [list(column) for column in zip(*writes.events, strict=True)]
        args.extend(columns or [[] for _ in range(9)])
        args.append(list(writes.last_ts))
        args.append(list(writes.last_ts.values()))
        args.extend([seq, self._channel, str(seq)])
        return args

    # the writer (group commit) -------------------------------------------------------------------
    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            await let_batch_fill(self._queue, self._last_batch, _BATCH_MAX - 1, self.group_turns)
            batch = [first]
            items = self._queue.items
            while len(batch) < _BATCH_MAX and items:
                item = items.popleft()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._last_batch = len(batch)
            try:
                await self._run_batch(batch)
            except Exception:  # never let the writer die: fail the batch instead
                log.exception("PostgreSQL writer failed a batch")
                for command in batch:
                    if not command.future.done():
                        command.future.set_exception(
                            StoreError("The PostgreSQL store failed to write the request.")
                        )
        # Refuse what was queued after the stop marker (close() raced with a write).
        items = self._queue.items
        while items:
            item = items.popleft()
            if item is not None and not item.future.done():
                item.future.set_exception(
                    Unavailable("The store is shutting down: it no longer accepts writes.")
                )

    async def _run_batch(self, batch: list[_Command]) -> None:
        """Run the batch: its job commands together, each purge in a transaction of its own
        (it must see the writes of the commands before it, which are written at the end)."""
        group: list[_Command] = []
        for command in batch:
            if isinstance(command.op, _Purge | ps.CreateSchedule | ps.ChangeSchedule):
                if group:
                    await self._run_transaction(group)
                    group = []
                await self._run_transaction([command])
            else:
                group.append(command)
        if group:
            await self._run_transaction(group)

    async def _run_transaction(self, batch: list[_Command]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        committed = False
        try:
            async with self._acquire("writing") as conn:
                async with conn.transaction():
                    # The log lock first, before any row lock: seq order is commit order, and
                    # writers of several processes cannot deadlock on job rows.
                    await conn.execute(_SQL_LOCK_LOG, _LOCK_CLASS, f"log:{self._schema_name}")
                    first = batch[0].op
                    if isinstance(first, _Purge):
                        outcomes = [(True, await self._purge_in(conn, first))]
                    elif isinstance(first, ps.CreateSchedule | ps.ChangeSchedule):
                        now = self.clock.now_ms()
                        outcomes = [(True, await ps.apply(conn, first, now, self._channel))]
                    else:
                        ops = [c.op for c in batch if isinstance(c.op, _BatchOp)]
                        outcomes = await self._apply_jobs(conn, ops)
                committed = True
            self._committed(len(batch))
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, StoreError) and not _is_unavailable(exc):
                # The database refused a value of one command (set-based writes cannot tell
                # which): nothing was written, so run each alone and only that one fails.
                for command in batch:
                    await self._run_transaction([command])
                return
            error = _wrap(exc, "writing")
            for command in batch:
                if not command.future.done():
                    command.future.set_exception(error)
            return
        finally:
            if committed:
                self._wake.set()
        for command, (ok, value) in zip(batch, outcomes, strict=True):
            if command.future.done():
                continue
            if ok:
                command.future.set_result(value)
            else:
                command.future.set_exception(value)

    # the publisher -------------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_INTERVAL):
                    await self._wake.wait()
            if self._closing:
                return
            self._wake.clear()
            try:
                await self._publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("PostgreSQL publisher could not read the log; retrying", exc_info=True)

    async def _publish_pending(self) -> None:
        """Hand every committed event after the last published seq to the listener."""
        while True:
            rows = await self._fetch(
                "reading the log", _SQL_EVENTS_ALL_AFTER, self._published_seq, _READ_PAGE
            )
            if not rows:
                return
            events = [ps.row_event(r) if r["type"] == "schedule" else _row_event(r) for r in rows]
            self._published_seq = events[-1].seq
            try:
                self._publish(events)
            except Exception:
                log.exception("The store's listener raised; events were still marked published")
            if len(rows) < _READ_PAGE:
                return

    async def _listen_loop(self) -> None:
        """Keep a dedicated LISTEN connection; wake the publisher on each notification."""
        backoff = 0.1
        while not self._closing:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = self._listen_conn = await asyncpg.connect(
                    self.dsn, timeout=self.connect_timeout
                )
                if self._closing:
                    return
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(self._channel, self._on_notify)
                backoff = 0.1
                # Anything committed while we were not listening is read now.
                self._wake.set()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("PostgreSQL listener connection failed; reconnecting", exc_info=True)
            finally:
                self._listen_conn = None
                if conn is not None and not conn.is_closed():
                    try:
                        async with asyncio.timeout(2):
                            await conn.close()
                    except Exception:
                        conn.terminate()
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _POLL_INTERVAL)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            if int(payload) <= self._published_seq:
                return
        except ValueError:
            pass
        self._wake.set()

    # reads --------------------------------------------------------------------------------------
    async def get_job(self, dsid: str, job: str) -> JobRecord | None:
        """The job's current record, or ``None``."""
        row = await self._fetchrow(f"reading job '{job}'", _SQL_JOB_GET, dsid, job)
        return None if row is None else _row_record(row)

    async def get_job_wire(self, dsid: str, job: str) -> tuple[str, bytes] | None:
        """The job's owner and current record as JSON text: :meth:`JobRecord.wire_bytes` of
        the record read (the row no longer keeps the whole text: its request may be in the
        log entry that brought it)."""
        record = await self.get_job(dsid, job)
        return None if record is None else (record.client, record.wire_bytes())

    async def count_unfinished(self, dsid: str, client: str) -> int:
        """How many of ``client``'s jobs on ``dsid`` are not terminal (partial index
        ``jobs_unfinished``: finished jobs are not visited)."""
        row = await self._fetchrow(
            f"counting the unfinished jobs of client '{client}'",
            "SELECT count(*) AS n FROM jobs WHERE datasource_id = $1 AND client = $2"
            " AND status IN ('submitted', 'accepted', 'retrying', 'running', 'stopped')",
            dsid,
            client,
        )
        assert row is not None
        return int(row["n"])

    async def list_jobs(
        self,
        dsid: str,
        client: str | None,
        *,
        status: Status | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """A client's jobs (every client's for ``None``), newest first, ``limit`` a page."""
        before: int | None = None
        if cursor is not None:
            if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19:
                raise BadRequest(
                    f"The cursor '{cursor[:40]}' is not one this store returned: pass the "
                    "'next' value of the previous page."
                )
            before = int(cursor)
        where = ["datasource_id = $1"]
        args: list[Any] = [dsid]
        if client is not None:
            args.append(client)
            where.append(f"client = ${len(args)}")
        if status is not None:
            args.append(status.value)
            where.append(f"status = ${len(args)}")
        if before is not None:
            args.append(before)
            where.append(f"id < ${len(args)}")
        if limit < 1:
            raise BadRequest(f"The page limit must be at least 1, not {limit}.")
        args.append(limit + 1)
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY id DESC LIMIT ${len(args)}"
        )
        rows = await self._fetch("listing jobs", sql, *args)
        more = len(rows) > limit
        rows = rows[:limit]
        return JobPage(
            jobs=[_row_record(r) for r in rows],
            next_cursor=str(rows[-1]["id"]) if more else None,
        )

    async def job_stats(self) -> dict[str, DatasourceJobs]:
        """Job counts per datasource and status (one grouped scan of ``jobs``) and each
        datasource's oldest unfinished ``submitted_at`` (over the partial index
        ``jobs_unfinished``)."""
        unfinished = ", ".join(f"'{s.value}'" for s in Status if not s.terminal)
        counts = await self._fetch(
            "counting jobs",
            "SELECT datasource_id, status, count(*) AS n FROM jobs GROUP BY datasource_id, status",
        )
        oldest = await self._fetch(
            "finding the oldest unfinished jobs",
            "SELECT datasource_id, min(submitted_at) AS at FROM jobs"
            f" WHERE status IN ({unfinished}) GROUP BY datasource_id",
        )
        dsids = [d.id for d in await self.list_datasources()]
        return job_stats_from(
            dsids,
            [(r["datasource_id"], r["status"], r["n"]) for r in counts],
            {r["datasource_id"]: int(r["at"]) for r in oldest},
        )

    async def latest_entry(self, dsid: str) -> Event | None:
        """The newest request-stream entry (``request`` or ``cancel``) of the datasource."""
        row = await self._fetchrow("reading the request stream", _SQL_LATEST_ENTRY, dsid)
        return None if row is None else _row_event(row)

    async def latest_entry_wire(self, dsid: str) -> bytes | None:
        """The newest request-stream entry as JSON text, or ``None``."""
        row = await self._fetchrow("reading the request stream", _SQL_LATEST_ENTRY_WIRE, dsid)
        return None if row is None else cast(str, row["entry"]).encode()

    async def entries_since_wire(
        self, dsid: str, timestamp: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        """:meth:`entries_since` as ``(seq, JSON text)`` pairs."""
        rows = await self._fetch(
            "reading the request stream",
            _SQL_ENTRIES_SINCE_WIRE,
            dsid,
            timestamp,
            after_seq,
            limit,
        )
        return [(r["seq"], cast(str, r["entry"]).encode()) for r in rows]

    async def entries_since(
        self, dsid: str, timestamp: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Request-stream entries with ``timestamp >= timestamp`` and ``seq > after_seq``."""
        rows = await self._fetch(
            "reading the request stream", _SQL_ENTRIES_SINCE, dsid, timestamp, after_seq, limit
        )
        return [_row_event(r) for r in rows]

    async def events_after(
        self,
        dsid: str,
        after_seq: int,
        *,
        client: str | None = None,
        stream_only: bool = False,
        limit: int = 1000,
    ) -> list[Event]:
        """Events of the datasource with ``seq > after_seq``, by ``seq``, at most ``limit``."""
        where = ["datasource_id = $1", "seq > $2"]
        args: list[Any] = [dsid, after_seq]
        if client is not None:
            args.append(client)
            where.append(f"client = ${len(args)}")
        if stream_only:
            where.append("type <> 'status'")
        args.append(limit)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY seq LIMIT ${len(args)}"
        )
        rows = await self._fetch("reading the log", sql, *args)
        return [_row_event(r) for r in rows]

    async def last_seq(self) -> int:
        """The largest committed ``seq`` (0 for an empty log), purged events included."""
        row = await self._fetchrow("reading the log", _SQL_GET_COUNTER)
        return 0 if row is None else int(row["seq"])

    # schedules (rules: jobqueue_store.schedules) --------------------------------------------------
    async def create_schedule(
        self, dsid: str, spec: ScheduleSpec, client: str
    ) -> tuple[ScheduleRecord, bool]:
        """Create a schedule; return ``(record, created)`` (a writer transaction)."""
        _encode(spec.request, "request")
        result: tuple[ScheduleRecord, bool] = await self._write(
            ps.CreateSchedule(dsid, spec, client)
        )
        return result

    async def change_schedule(
        self, dsid: str, schedule: str, action: ScheduleAction
    ) -> ScheduleRecord:
        """Pause, resume or soft-delete a schedule (a writer transaction)."""
        record: ScheduleRecord = await self._write(ps.ChangeSchedule(dsid, schedule, action))
        return record

    async def get_schedule(self, dsid: str, schedule: str) -> ScheduleRecord | None:
        """The schedule's record, or ``None``."""
        async with self._acquire("reading a schedule") as conn:
            try:
                return await ps.get_schedule(conn, dsid, schedule)
            except Exception as exc:
                raise _wrap(exc, "reading a schedule") from None

    async def list_schedules(
        self, dsid: str, client: str | None, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        """A client's schedules, newest first."""
        async with self._acquire("listing schedules") as conn:
            try:
                return await ps.list_schedules(conn, dsid, client, limit, cursor)
            except Exception as exc:
                raise _wrap(exc, "listing schedules") from None

    async def list_runs(
        self, dsid: str, schedule: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        """A schedule's runs, newest first."""
        async with self._acquire("listing runs") as conn:
            try:
                return await ps.list_runs(
                    conn, _JOB_COLUMNS, _row_record, dsid, schedule, limit, cursor
                )
            except Exception as exc:
                raise _wrap(exc, "listing runs") from None

    async def schedule_events_after(
        self, dsid: str, client: str | None, after: int, upto: int, limit: int = 1000
    ) -> list[ScheduleEvent]:
        """Schedule events with ``after < seq <= upto``, by ``seq``."""
        async with self._acquire("reading the log") as conn:
            try:
                return await ps.schedule_events_after(conn, dsid, client, after, upto, limit)
            except Exception as exc:
                raise _wrap(exc, "reading the log") from None

    # retention ----------------------------------------------------------------------------------
    async def purge(self, older_than_ms: int, *, limit: int = 10_000) -> int:
        """Delete up to ``limit`` terminal jobs with ``updated_at < older_than_ms`` and their
        events: a command of the writer, so it runs in a write transaction holding the log lock
        (serialised with every process's writes and purges; no reader sees half of it)."""
        if limit < 1:
            raise ValueError(f"The purge limit must be at least 1, not {limit}.")

        deleted: int = await self._write(_Purge(older_than_ms, limit))
        return deleted

    async def _purge_in(self, conn: asyncpg.Connection, op: _Purge) -> int:
        row = await conn.fetchrow(_SQL_PURGE, op.older_than_ms, op.limit)
        assert row is not None
        events, schedule_top = await ps.purge_events(conn, op.older_than_ms, op.limit)
        top = max(row["top"] or 0, schedule_top)
        if top:
            await conn.execute(_SQL_RAISE_PURGED, top)
        return max(int(row["jobs"]), events)

    async def purged_through(self) -> int:
        """The largest ``seq`` deleted by :meth:`purge` so far (0 if none)."""
        row = await self._fetchrow("reading the log", _SQL_GET_PURGED)
        return 0 if row is None else int(row["purged_through"])


__all__ = ["PostgresStore", "migrations"]
