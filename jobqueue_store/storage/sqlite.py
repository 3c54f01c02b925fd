"""The SQLite store: aiosqlite, WAL, one writer task with group commit.

Writes (submit, cancel, update_status, put_datasource, and the retention purge) are queued to a
single writer task. It takes every pending command (up to ``batch_max``) and runs the whole batch
in one call on the writer connection's thread: ``BEGIN IMMEDIATE``, for each command read the row,
decide with :mod:`jobqueue_store.lifecycle`, write the row and append the event, then one
``COMMIT`` (one fsync with ``synchronous=FULL``). A command whose rule fails is decided before it
writes anything, so it fails alone. If the commit fails, every command of the batch fails with
:class:`~jobqueue_store.errors.Unavailable` and nothing of it is stored.

Reads use a small pool of separate connections: in WAL mode they run while the writer writes and
never queue behind it. This process is the only writer, so datasources are cached in memory.

``synchronous``: ``FULL`` (default) makes every acknowledged write survive a power loss; ``NORMAL``
survives a crash of the process but may lose the last commits on power loss; ``OFF`` leaves
durability to the OS. Note that ``kill -9`` cannot tell them apart: the OS still flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from jobqueue_store import codec, errors, leases, lifecycle, revisions
from jobqueue_store.models import (
    Datasource,
    DesiredState,
    Event,
    EventType,
    JobPage,
    JobRecord,
    SlotLease,
    Status,
    StatusUpdate,
    WorkerInfo,
    now_ms,
)
from jobqueue_store.schedules import (
    ScheduleAction,
    ScheduleEvent,
    SchedulePage,
    ScheduleRecord,
    ScheduleSpec,
)
from jobqueue_store.storage import sqlite_leases as sl
from jobqueue_store.storage import sqlite_revisions as sr
from jobqueue_store.storage import sqlite_rows as rf
from jobqueue_store.storage import sqlite_schedules as ss
from jobqueue_store.storage.base import (
    GROUP_TURNS,
    DatasourceJobs,
    Store,
    WriteQueue,
    job_stats_from,
    let_batch_fill,
)
from jobqueue_store.storage.migrations import packaged
from jobqueue_store.storage.record_cache import RECORD_CACHE_ENTRIES, RecordCache
from jobqueue_store.timers import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

SYNCHRONOUS_VALUES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
BUSY_TIMEOUT_MS = 5000
_CURSOR_RE = re.compile(r"[1-9][0-9]{0,18}")
_MAX_INT64 = 2**63 - 1

_EVENT_COLUMNS = rf.EVENT_COLUMNS
# A request-stream entry (protocol.md §6) as JSON text, assembled by SQLite from the stored
# columns and the entry data's stored JSON: a page is served without decoding anything.
_ENTRY_TEXT = (
    "CAST('{\"datasource_id\":' || json_quote(datasource_id) || ',\"type\":' || json_quote(type)"
    " || ',\"job\":' || json_quote(job) || ',\"client\":' || json_quote(client)"
    " || ',\"seq\":' || seq || ',\"timestamp\":' || timestamp"
    " || ',\"data\":' || coalesce(CAST(data AS TEXT), 'null') || '}' AS BLOB)"
)
CHECKPOINT_SECONDS = 0.5
"""How often a connection of its own copies the write-ahead log into the database (a PASSIVE
checkpoint) after commits. SQLite's automatic checkpoint is off: it would run inside a commit
and hold up every write of that batch by milliseconds."""
LOG_RESTART_FRAMES = 8192
"""When the write-ahead log holds this many pages (32 MiB of 4 KiB pages), the writer finishes
the copy itself between two batches. The checkpoint connection alone never copies the whole log
under a steady load (the writer appends while it copies), so the log would never start over: it
grew by 400 MB in 8 s of submits, every commit extending the file (an fsync of the file
system's metadata too) and every read searching a longer log index. Finishing is short: the
checkpoint connection first copies again until at most ``LOG_FINISH_FRAMES`` pages are left."""
LOG_FINISH_FRAMES = 256
LOG_FINISH_PASSES = 4
# Pages up to this many entries are read on the loop's thread (a thread hop costs more).
_INLINE_PAGE = 200
# Readers map the database file (up to this much) instead of copying pages through read(): a
# point read then costs about a fifth less. Writes still go through the writer's page cache.
READ_MMAP_BYTES = 256 * 1024 * 1024
UPDATING_ENTRIES = 20_000
"""Jobs whose stored row the writer keeps after a driver's update, for the next one."""
UPDATING_MAX_BYTES = 8 * 1024
"""Records longer than this (as JSON) are not kept."""
# The predicates of the partial indexes jobs_terminal_updated and jobs_unfinished (schema 9): a
# query uses such an index only when it repeats the predicate as written. They are OR-ed
# equalities, not IN lists, for the writes' sake (see sql/sqlite/0009_no_in_lists.sql).
TERMINAL_SQL = (
    "(status = 'complete' OR status = 'cancelled' OR status = 'forbidden' OR status = 'failed')"
)
UNFINISHED_SQL = (
    "(status = 'submitted' OR status = 'accepted' OR status = 'retrying'"
    " OR status = 'running' OR status = 'stopped')"
)


_INSERT_JOB = (
    "INSERT INTO jobs (datasource_id, job, client, status, record, updated_at, lease_id,"
    " retry_at, due_at, request_seq, leased) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# An UPDATE that names an indexed column rewrites the entries of the indexes that name it (as a
# key or in a partial index's WHERE) even when the value stays: status and lease_id are set only
# when they change (a driver's progress report changes neither). Keyed by (status, lease_id).
_UPDATE_JOB = {
    (
        with_status,
        with_lease,
    ): "UPDATE jobs SET record = ?, updated_at = ?, retry_at = ?, due_at = ?, request_seq = ?"
    + (", status = ?" if with_status else "")
    + (", lease_id = ?" if with_lease else "")
    + " WHERE id = ?"
    for with_status in (False, True)
    for with_lease in (False, True)
}
# The rows of several jobs of one datasource in one statement (the job ids as a JSON array): a
# batch's jobs are looked up at once rather than with one SELECT each (about 2.5 us each). The
# array is bound as TEXT: SQLite 3.45 and later read a BLOB given to json_each as JSONB.
_SELECT_JOBS = (
    f"SELECT job, {rf.JOB_ROW} FROM jobs WHERE datasource_id = ? "
    "AND job IN (SELECT value FROM json_each(?))"
)
_SELECT_JOB = f"SELECT {rf.JOB_ROW} FROM jobs WHERE datasource_id = ? AND job = ?"
_INSERT_EVENT = (
    "INSERT INTO events (seq, datasource_id, type, job, client, timestamp, data, record,"
    " request_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# Write commands, queued to the writer. ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Submit:
    dsid: str
    job: str
    client: str
    request: Any
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
class _PutDatasource:
    datasource: Datasource


@dataclass(frozen=True, slots=True)
class _Purge:
    older_than_ms: int
    limit: int


_Command = (
    _Submit
    | _Cancel
    | _Update
    | _PutDatasource
    | _Purge
    | sl.LeaseCommand
    | sr.RevisionCommand
    | ss.ScheduleCommand
)
# Commands whose every job row written passes through _defer_job (and so reaches the record
# cache); a batch with any other command empties the cache.
_ROW_BY_ROW = frozenset({_Submit, _Cancel, _Update, _PutDatasource})
# Submits, cancels and updates write their rows and events at the end of their run of commands
# in a batch, each kind with one executemany (a statement and a release of the interpreter lock
# per kind instead of three per command; quick runs: submit 0.44 of the bare POST against 0.42).
_JOB_COMMANDS = frozenset({_Submit, _Cancel, _Update})


@dataclass(slots=True)
class _Pending:
    command: _Command
    future: asyncio.Future[Any]


_STOP = object()
_CHECKPOINT = object()


@dataclass(slots=True)
class _BatchResult:
    """What one committed batch did: a result or an error per command, the events appended (in
    ``seq`` order) and the datasources written."""

    results: list[Any] = field(default_factory=list)
    events: list[Event | ScheduleEvent] = field(default_factory=list)
    datasources: dict[str, Datasource] = field(default_factory=dict)
    stored: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    """(datasource, job, owner, record text) of every job row written, in order."""
    uncached: bool = False
    """A command wrote rows that ``stored`` does not list: the record cache must be emptied."""
    rows: dict[tuple[str, str], _RowWrite] = field(default_factory=dict)
    """Job rows the batch's submits, cancels and updates wrote and :meth:`SQLiteStore._flush`
    has not yet sent to the database (the last state of each job)."""
    entries: list[_EventWrite] = field(default_factory=list)
    """Their events, in order, not yet sent either."""
    looked_up: frozenset[tuple[str, str]] = frozenset()
    """Jobs whose rows were read at the start of the batch, into ``found`` (absent: no row).
    Emptied as soon as the batch writes rows to the database itself."""
    found: dict[tuple[str, str], Sequence[Any]] = field(default_factory=dict)
    """The rows (``sqlite_rows.JOB_ROW``) of those of ``looked_up`` that have one."""


@dataclass(slots=True)
class _EventWrite:
    """An event to append. ``ref``: the entry holding the request of the record's revision
    (``None``: the job's rows keep the whole record, as rows written before schema 10 do);
    ``brings_request``: this entry holds it itself (its ``ref`` is ``None`` then: pointing at
    itself would be a reference cycle, freed only by the cyclic garbage collector). ``seq`` is
    set by :meth:`SQLiteStore._flush`."""

    record: JobRecord
    type: EventType
    timestamp: int
    data: dict[str, Any] | None
    data_text: bytes | None
    text: bytes
    ref: _Ref
    seq: int = 0
    brings_request: bool = False

    def request_seq(self) -> int | None:
        """The seq of the entry holding the request (the ``request_seq`` column)."""
        return self.seq if self.brings_request else _seq_of(self.ref)


_Ref = int | _EventWrite | None
"""Where a job's request is stored: the seq of the entry holding it, an entry of the batch not
yet written, or ``None`` (in the job's own record: a row written before schema 10)."""


def _seq_of(ref: _Ref) -> int | None:
    return ref.seq if isinstance(ref, _EventWrite) else ref


@dataclass(slots=True)
class _RowWrite:
    """A job row to write: a new one if ``row_id`` is ``None``. ``before`` is the status and
    lease id the row holds in the database (``None``: not known, both are written)."""

    row_id: int | None
    record: JobRecord
    text: bytes
    lease_id: str | None
    due_at: int | None
    ref: _Ref
    before: tuple[str, str | None] | None = None
    leased: int | None = None
    """1 for a job of a lease datasource (in the jobs_claimable index when claimable)."""

    def columns(
        self,
    ) -> tuple[str, bytes, int, str | None, int | None, int | None, int | None, int | None]:
        """The columns of a new row, in the order of ``_INSERT_JOB``'s last eight: status,
        record, updated_at, lease_id, retry_at, due_at, request_seq, leased. A status is bound
        as its ``_value_`` (a plain ``str``; ``.value`` is a Python property, and ``sqlite3``
        sends a ``str`` subclass through its adapters)."""
        r = self.record
        return (
            r.status._value_,
            self.text,
            r.updated_at,
            self.lease_id,
            r.retry_at,
            self.due_at,
            _seq_of(self.ref),
            self.leased,
        )

    def update(self) -> tuple[str, tuple[Any, ...]]:
        """The row's ``UPDATE`` (one of ``_UPDATE_JOB``) and its parameters."""
        r = self.record
        params: list[Any] = [self.text, r.updated_at, r.retry_at, self.due_at, _seq_of(self.ref)]
        status = r.status._value_
        before = self.before
        with_status = before is None or before[0] != status
        with_lease = before is None or before[1] != self.lease_id
        if with_status:
            params.append(status)
        if with_lease:
            params.append(self.lease_id)
        params.append(self.row_id)
        return _UPDATE_JOB[with_status, with_lease], tuple(params)


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` on ``conn``'s worker thread, in one hop."""
    # aiosqlite has no public API to run a function on its thread: Connection._execute queues one
    # callable there. Without it a batch would cost 3+ thread hops per job (execute, fetch, ...);
    # with it a whole batch, or a read with its decoding, is a single hop.
    result = await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call]
    return cast(T, result)


def bind_bytes_and_none_directly() -> None:
    """Let Python's ``sqlite3`` bind ``bytes`` and ``None`` parameters without its adaptation
    protocol's failing lookups.

    ``sqlite3`` binds ``int``, ``float`` and ``str`` values as they are, but sends every other
    value (the stored records, which are ``bytes``, and the ``None`` of an empty column) through
    its adapters: a registry miss, then an ``__adapt__`` lookup on ``PrepareProtocol`` that
    raises and clears an ``AttributeError`` with a formatted message, about 2,000 instructions
    per value (six of them per submit). A registered adapter is found at once: these two return
    the value itself (``bytes(b)`` is ``b``; an empty dict's ``get`` returns ``None``), so what is
    stored is unchanged. Adapters are process-wide: one the application registered itself for
    either type is left in place.
    """
    none: dict[None, None] = {}
    if (bytes, sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(bytes, bytes)
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), none.get)


def _decode_datasource(row: Sequence[Any]) -> Datasource:
    dsid, description, schema, settings = row
    return Datasource.from_stored(
        dsid,
        description,
        None if schema is None else codec.loads(schema),
        None if settings is None else codec.loads(settings),
    )


def _encode(value: Any, what: str) -> bytes:
    try:
        return codec.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise errors.BadRequest(f"The {what} cannot be stored as JSON: {exc}.") from None


def _encode_record(record: JobRecord) -> bytes:
    try:
        return record.wire_bytes()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise errors.BadRequest(f"The job record cannot be stored as JSON: {exc}.") from None


def _not_declared(dsid: str) -> errors.NotFound:
    return errors.NotFound(
        f"Datasource '{dsid}' is not declared: its driver declares it with PUT /jobs/{dsid}."
    )


def _no_job(dsid: str, job: str) -> errors.NotFound:
    return errors.NotFound(f"There is no job '{job}' on datasource '{dsid}'.")


class _WallClock:
    """The default clock: this module's ``now_ms`` (looked up at each call)."""

    def now_ms(self) -> int:
        return now_ms()


def migrations() -> list[tuple[int, str]]:
    """The packaged SQLite migrations as ``(version, sql)``, in version order."""
    return packaged("sqlite")


class SQLiteStore(Store):
    """A job-queue store in one SQLite file (see the module docstring).

    ``synchronous`` is SQLite's ``PRAGMA synchronous`` (``OFF``, ``NORMAL``, ``FULL``, ``EXTRA``);
    ``batch_max`` caps the number of writes committed together; ``readers`` is the size of the
    read connection pool; ``checkpoint_every`` is how often (seconds) the write-ahead log is
    copied into the database, and ``log_restart_frames`` how many pages it may hold before the
    writer finishes the copy (so that it starts over); ``record_cache`` is how many job records
    status reads keep in memory (:mod:`~jobqueue_store.storage.record_cache`; 0: none);
    ``group_turns`` is how many event-loop turns a batch may wait to fill under load
    (:func:`~jobqueue_store.storage.base.let_batch_fill`; 0: never).
    """

    _loop: asyncio.AbstractEventLoop
    """The event loop the store was opened on (set by :meth:`open`)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        batch_max: int = 512,
        readers: int = 2,
        clock: Clock | None = None,
        checkpoint_every: float = CHECKPOINT_SECONDS,
        log_restart_frames: int = LOG_RESTART_FRAMES,
        record_cache: int = RECORD_CACHE_ENTRIES,
        group_turns: int = GROUP_TURNS,
    ) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS_VALUES:
            raise ValueError(
                f"synchronous must be one of {', '.join(sorted(SYNCHRONOUS_VALUES))}, "
                f"not {synchronous!r}."
            )
        if batch_max < 1 or readers < 1:
            raise ValueError("batch_max and readers must be at least 1.")
        self.path = Path(path)
        self.clock: Clock = clock or _WallClock()
        self.synchronous = sync
        self.batch_max = batch_max
        self.group_turns = group_turns
        self._last_batch = 0
        self._reader_count = readers
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conns: list[aiosqlite.Connection] = []
        # Point reads run on the event loop's thread: a thread hop costs more than the read.
        self._inline: sqlite3.Connection | None = None
        self._idle_readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._queue: WriteQueue[_Pending | object] = WriteQueue()
        self._writer_task: asyncio.Task[None] | None = None
        self._checkpoint_conn: aiosqlite.Connection | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self.checkpoint_every = checkpoint_every
        self.log_restart_frames = log_restart_frames
        self._uncheckpointed = 0
        self._checkpoint_queued = False
        self._accepting = False
        self._datasources: dict[str, Datasource] = {}
        # Last timestamp handed out per datasource; only the writer touches it.
        self._last_ts: dict[str, int] = {}
        self._records = RecordCache(max_entries=record_cache)
        # Jobs a driver is updating: (datasource, job) -> (row id, record as stored), most
        # recently written last. Only the writer thread uses it; a driver's next update of the
        # job then skips the row's read and decode. Any command other than a submit, cancel or
        # update (they may write job rows), and any failed batch, empties it.
        self._updating: OrderedDict[tuple[str, str], tuple[int, JobRecord, _Ref]] = OrderedDict()
        # Batches whose outcome reached the loop: a record read on a reader thread is cached
        # only if no batch landed while it was read.
        self._landed = 0

    # lifecycle ----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the connections, migrate, load the caches and start the writer."""
        if self._writer_conn is not None:
            raise RuntimeError("The store is already open.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        bind_bytes_and_none_directly()
        try:
            self._writer_conn = await self._connect(writer=True)
            await self.migrate()
            for _ in range(self._reader_count):
                conn = await self._connect(writer=False)
                self._reader_conns.append(conn)
                self._idle_readers.put_nowait(conn)
            self._datasources, self._last_ts = await _in_thread(self._writer_conn, self._load_state)
            self._inline = self._connect_inline()
            self._checkpoint_conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._checkpoint_conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except BaseException as exc:
            # Whatever failed (or a cancellation), close what was opened: each aiosqlite
            # connection owns a non-daemon thread that would keep the process alive.
            await self._close_connections()
            if isinstance(exc, sqlite3.Error | ValueError):  # ValueError: undecodable JSON
                raise errors.Unavailable(
                    f"The SQLite database {self.path} cannot be opened: {exc}."
                ) from exc
            raise
        # The loop every write runs on (the writer task's): asyncio.get_running_loop() checks the
        # process id with a system call each time.
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._writer_task = asyncio.create_task(self._writer(), name="sqlite-writer")
        self._checkpoint_task = asyncio.create_task(self._checkpointer(), name="sqlite-checkpoint")

    async def close(self) -> None:
        """Refuse new writes, finish the queued ones, stop the writer, close the connections."""
        self._accepting = False
        task, self._writer_task = self._writer_task, None
        if task is not None:
            self._queue.put_nowait(_STOP)
            await task
        checkpoint, self._checkpoint_task = self._checkpoint_task, None
        if checkpoint is not None:
            checkpoint.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoint
        await self._close_connections()

    async def _connect(self, *, writer: bool) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions; the writer issues BEGIN IMMEDIATE itself.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if writer:
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                await conn.execute("PRAGMA foreign_keys = ON")
                await conn.execute("PRAGMA wal_autocheckpoint = 0")  # see CHECKPOINT_SECONDS
            else:
                await conn.execute("PRAGMA query_only = ON")
                await conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")
        except BaseException:
            await conn.close()
            raise
        return conn

    def _connect_inline(self) -> sqlite3.Connection:
        # busy_timeout 0: a read that would wait for a lock (rare under WAL) must not block the
        # event loop; it raises at once and is retried on a reader thread.
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")
        return conn

    async def _close_connections(self) -> None:
        self._forget_records()  # a closed store answers no read, from memory either
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        conns = [*self._reader_conns]
        if self._checkpoint_conn is not None:
            conns.append(self._checkpoint_conn)
            self._checkpoint_conn = None
        if self._writer_conn is not None:
            conns.append(self._writer_conn)
        self._reader_conns = []
        self._writer_conn = None
        self._idle_readers = asyncio.Queue()
        for conn in conns:
            try:
                await conn.close()
            except Exception:  # a connection that fails to close must not keep others open
                log.exception("closing an SQLite connection failed")

    async def migrate(self) -> int:
        """Apply the packaged migrations not yet applied, each in one transaction."""
        if self._writer_conn is None:
            raise errors.Unavailable("The store is not open.")
        return await _in_thread(self._writer_conn, _migrate, migrations())

    async def ping(self) -> None:
        """Raise ``Unavailable`` if the database cannot be read."""
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    @staticmethod
    def _load_state(db: sqlite3.Connection) -> tuple[dict[str, Datasource], dict[str, int]]:
        rows = db.execute(
            "SELECT id, description, request_schema, settings FROM datasources"
        ).fetchall()
        datasources = {row[0]: _decode_datasource(row) for row in rows}
        last_ts: dict[str, int] = {}
        for dsid in datasources:
            # Timestamps never decrease along seq within a datasource: the last event has the max.
            row = db.execute(
                "SELECT timestamp FROM events WHERE datasource_id = ? ORDER BY seq DESC LIMIT 1",
                (dsid,),
            ).fetchone()
            if row is not None:
                last_ts[dsid] = row[0]
        for dsid, timestamp in db.execute("SELECT datasource_id, timestamp FROM last_timestamps"):
            last_ts[dsid] = max(last_ts.get(dsid, 0), timestamp)
        return datasources, last_ts

    # datasources --------------------------------------------------------------------------------
    async def put_datasource(self, datasource: Datasource) -> Datasource:
        """Create or replace a datasource."""
        return cast(Datasource, await self._write(_PutDatasource(datasource)))

    async def get_datasource(self, dsid: str) -> Datasource | None:
        """The datasource (from the in-memory cache), or ``None``."""
        return self._datasources.get(dsid)

    async def list_datasources(self) -> list[Datasource]:
        """Every datasource, ordered by id."""
        return [self._datasources[k] for k in sorted(self._datasources)]

    # writes -------------------------------------------------------------------------------------
    async def submit(
        self, dsid: str, job: str, client: str, request: Any, timeout: int | None = None
    ) -> tuple[JobRecord, bool]:
        """Submit a job; return ``(record, created)``."""
        return cast(
            tuple[JobRecord, bool], await self._write(_Submit(dsid, job, client, request, timeout))
        )

    async def cancel(self, dsid: str, job: str, client: str | None) -> JobRecord:
        """Request cancellation of a job; ``client`` ``None`` is an admin."""
        return cast(JobRecord, await self._write(_Cancel(dsid, job, client)))

    async def update_status(self, dsid: str, job: str, update: StatusUpdate) -> JobRecord:
        """Apply a driver's status report."""
        return cast(JobRecord, await self._write(_Update(dsid, job, update)))

    # long-running jobs ------------------------------------------------------------------------
    async def revise(
        self, dsid: str, job: str, client: str | None, request: Any, rollback: bool
    ) -> tuple[JobRecord, bool]:
        """A client's update of ``job``'s request: a new revision, or nothing if the same."""
        return cast(
            tuple[JobRecord, bool],
            await self._write(sr.Revise(dsid, job, client, request, rollback)),
        )

    async def set_desired(
        self, dsid: str, job: str, client: str | None, state: DesiredState
    ) -> JobRecord:
        """A client's stop or start."""
        return cast(JobRecord, await self._write(sr.Desired(dsid, job, client, state)))

    async def job_events(self, dsid: str, job: str) -> list[Event]:
        """Every event of one job, by ``seq``."""
        return await self._read(sr.job_events, dsid, job)

    # leases, timers and the worker slot -------------------------------------------------------
    async def claim(self, dsid: str, worker: str, max_jobs: int) -> list[JobRecord]:
        """Claim up to ``max_jobs`` claimable jobs for ``worker``, oldest first."""
        return cast(list[JobRecord], await self._write(sl.Claim(dsid, worker, max_jobs)))

    async def heartbeat(self, dsid: str, job: str, lease: str) -> JobRecord:
        """Renew ``lease`` on ``job``: no event."""
        return cast(JobRecord, await self._write(sl.Heartbeat(dsid, job, lease)))

    async def fire_due(self, limit: int = 500) -> int:
        """Fire up to ``limit`` due items (a writer command); return the events appended.

        A read first: a round with nothing due costs no write."""
        now = self.clock.now_ms()

        def any_due(db: sqlite3.Connection) -> bool:
            return (
                db.execute(sl.SQL_ANY_DUE, (now,)).fetchone() is not None
                or db.execute(ss.SQL_ANY_DUE, (now,)).fetchone() is not None
            )

        if not await self._point_read(any_due):
            return 0
        return cast(int, await self._write(sl.FireDue(limit)))

    async def take_slot(self, dsid: str, worker: str) -> SlotLease:
        """Take the worker slot of stream datasource ``dsid``."""
        return cast(SlotLease, await self._write(sl.TakeSlot(dsid, worker)))

    async def renew_slot(self, dsid: str, lease: str, resume: int | None) -> SlotLease:
        """Renew the worker slot and store ``resume``."""
        return cast(SlotLease, await self._write(sl.RenewSlot(dsid, lease, resume)))

    async def release_slot(self, dsid: str, lease: str) -> None:
        """Free the worker slot (its resume point stays)."""
        await self._write(sl.ReleaseSlot(dsid, lease))

    async def workers(self, dsid: str) -> list[WorkerInfo]:
        """The slot holder or the recent lease workers of ``dsid``."""
        datasource = self._datasources.get(dsid)
        if datasource is None:
            return []
        return await self._read(sl.read_workers, datasource, self.clock.now_ms())

    async def _write(self, command: _Command) -> Any:
        if not self._accepting:
            raise errors.Unavailable("The store is closed: it accepts no more writes.")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put_nowait(_Pending(command, future))
        try:
            return await future
        except BaseException:
            # The exception's traceback holds this frame, which holds the future, which holds the
            # exception: without the future the whole is freed at once, not by the collector.
            del future
            raise

    async def _writer(self) -> None:
        """The single writer: group every pending command into one transaction; copy the log
        into the database when the checkpointer asks, between two batches."""
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is _STOP:
                break
            if item is _CHECKPOINT:
                await self._checkpoint()
                continue
            await let_batch_fill(
                self._queue, self._last_batch, self.batch_max - 1, self.group_turns
            )
            batch: list[Any] = [item]  # _Pending items only
            checkpoint = False
            items = self._queue.items
            while len(batch) < self.batch_max and items:
                item = items.popleft()
                if item is _STOP:
                    stop = True
                    break
                if item is _CHECKPOINT:
                    checkpoint = True
                    break
                batch.append(item)
            self._last_batch = len(batch)
            try:
                await self._commit_batch(batch)
            except Exception as exc:  # never let one batch kill the writer
                log.exception("the SQLite writer failed on a batch")
                self._forget_records()
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(
                            errors.Unavailable(f"The store failed to write: {exc}.")
                        )
            if checkpoint:
                await self._checkpoint()
        # Writes that raced close() past the _accepting check.
        items = self._queue.items
        while items:
            item = items.popleft()
            if isinstance(item, _Pending) and not item.future.done():
                item.future.set_exception(errors.Unavailable("The store is closed."))

    async def _checkpointer(self) -> None:
        """Every ``checkpoint_every`` seconds after a commit, copy what the write-ahead log holds
        into the database without blocking the writer or the readers (PASSIVE); when the log has
        grown to ``log_restart_frames`` pages, ask the writer to finish the copy."""
        while True:
            await asyncio.sleep(self.checkpoint_every)
            conn = self._checkpoint_conn
            if not self._uncheckpointed or conn is None:
                continue
            self._uncheckpointed = 0
            try:
                frames, copied = await _in_thread(conn, _checkpoint_passive)
                if frames < self.log_restart_frames or self._checkpoint_queued:
                    continue
                # Copy again what was appended meanwhile (less each time) until the writer's
                # part, which holds up the writes, is a few pages.
                for _ in range(LOG_FINISH_PASSES):
                    if frames - copied <= LOG_FINISH_FRAMES:
                        break
                    frames, copied = await _in_thread(conn, _checkpoint_passive)
            except (sqlite3.Error, ValueError) as exc:  # the next round tries again
                log.warning("the SQLite checkpoint failed: %s", exc)
                continue
            self._checkpoint_queued = True
            self._queue.put_nowait(_CHECKPOINT)

    async def _checkpoint(self) -> None:
        """Finish copying the write-ahead log into the database, on the writer's connection
        between two batches (PASSIVE: it waits for no reader). No write is appended meanwhile,
        so the log is copied whole and the next commit writes it from its start again (the file
        keeps its size)."""
        self._checkpoint_queued = False
        conn = self._writer_conn
        if conn is None:
            return
        try:
            await _in_thread(conn, _checkpoint_passive)
        except (sqlite3.Error, ValueError) as exc:  # the checkpointer asks again
            log.warning("the SQLite checkpoint failed: %s", exc)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        commands = [p.command for p in batch]
        assert self._writer_conn is not None
        try:
            result = await _in_thread(self._writer_conn, self._apply_batch, commands)
        except (sqlite3.Error, ValueError) as exc:
            # ValueError: aiosqlite's "Connection closed".
            self._forget_records()  # whether anything was committed is not known
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(
                        errors.Unavailable(
                            f"The database could not commit the write ({exc}"
                            f"{_file_system_trouble(self.path)}): nothing of it was stored; "
                            "retry later."
                        )
                    )
            return
        self._datasources.update(result.datasources)
        self._landed += 1
        if result.uncached:
            self._records.clear()
        else:
            refresh = self._records.refresh
            for dsid, job, client, text in result.stored:
                refresh(dsid, job, client, text)
        self._uncheckpointed += 1
        self._committed(len(batch))
        for pending, outcome in zip(batch, result.results, strict=True):
            if pending.future.done():  # the caller gave up; the write is committed anyway
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        try:
            self._publish(result.events)
        except Exception:
            log.exception("the event listener failed")

    def _apply_batch(self, db: sqlite3.Connection, commands: list[_Command]) -> _BatchResult:
        """Run on the writer thread: one transaction for the whole batch."""
        out = _BatchResult()
        db.execute("BEGIN IMMEDIATE")
        try:
            if len(commands) > 1:
                self._look_up(db, commands, out)
            for command in commands:
                if type(command) not in _JOB_COMMANDS:
                    self._flush(db, out)  # it reads and writes the database itself
                try:
                    out.results.append(self._apply(db, command, out))
                except errors.StoreError as exc:
                    # Rules and validation raise before anything is written: this command fails
                    # alone and the batch goes on. Its traceback would hold this frame, and so
                    # ``out`` and the exception itself (a cycle): it is dropped.
                    out.results.append(exc.with_traceback(None))
            self._flush(db, out)
            db.execute("COMMIT")
        except BaseException:
            self._updating.clear()  # it may hold rows of the rolled-back transaction
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return out

    def datasource_in(self, dsid: str, out: _BatchResult) -> Datasource:
        """The datasource as the batch sees it (its own earlier writes included)."""
        datasource = out.datasources.get(dsid) or self._datasources.get(dsid)
        if datasource is None:
            raise _not_declared(dsid)
        return datasource

    def timestamp_for(self, dsid: str) -> int:
        """Now on the store's clock, never below the datasource's last timestamp."""
        return max(self.clock.now_ms(), self._last_ts.get(dsid, 0))

    def _apply(self, db: sqlite3.Connection, command: _Command, out: _BatchResult) -> Any:
        if isinstance(command, _Submit | _Cancel | _Update):  # nearly every command: tested first
            return self._apply_job(db, command, out)
        if type(command) not in _ROW_BY_ROW:
            out.uncached = True
            self._updating.clear()  # this command may write job rows: none is kept
        if isinstance(command, _PutDatasource):
            ds = command.datasource
            schema = None if ds.request_schema is None else _encode(ds.request_schema, "schema")
            previous = out.datasources.get(ds.id) or self._datasources.get(ds.id)
            if previous is not None and previous.leased != ds.leased:
                # Its jobs enter or leave the claimable index with the dispatch.
                db.execute(
                    "UPDATE jobs SET leased = ? WHERE datasource_id = ?",
                    (1 if ds.leased else None, ds.id),
                )
            db.execute(
                "INSERT INTO datasources (id, description, request_schema, settings) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET description = excluded.description, "
                "request_schema = excluded.request_schema, settings = excluded.settings",
                (ds.id, ds.description, schema, codec.dumps(ds.settings_json())),
            )
            out.datasources[ds.id] = ds
            return ds
        if isinstance(command, _Purge):
            return _purge(db, command.older_than_ms, command.limit)
        if isinstance(command, sl.FireDue):
            fired = sl.apply(self, db, command, out)
            return fired + ss.fire_due(self, db, command.limit, out)
        if isinstance(command, sl.LEASE_COMMANDS):
            return sl.apply(self, db, command, out)
        if isinstance(command, sr.COMMANDS):
            return sr.apply(self, db, command, out)
        if isinstance(command, ss.SCHEDULE_COMMANDS):
            return ss.apply(self, db, command, out)
        raise TypeError(f"not a write command: {command!r}")

    def _apply_job(
        self, db: sqlite3.Connection, command: _Submit | _Cancel | _Update, out: _BatchResult
    ) -> Any:
        """A submit, cancel or update: decided against the row as the batch sees it; the row
        and the event are written by the next :meth:`_flush`."""
        dsid = command.dsid
        datasource = self.datasource_in(dsid, out)
        key = (dsid, command.job)
        row_id, existing, ref = self._job_row(db, key, out, held=not isinstance(command, _Submit))
        timestamp = self.timestamp_for(dsid)
        if isinstance(command, _Submit):
            outcome = lifecycle.decide_submit(
                existing,
                datasource_id=dsid,
                job=command.job,
                client=command.client,
                request=command.request,
                timestamp=timestamp,
                timeout=command.timeout,
                datasource=datasource,
            )
            if command.schedule is not None and outcome.created:
                run = replace(
                    outcome.record, schedule=command.schedule, scheduled_for=command.scheduled_for
                )
                outcome = replace(outcome, record=run)
        elif existing is None:
            raise _no_job(dsid, command.job)
        elif isinstance(command, _Cancel):
            outcome = lifecycle.decide_cancel(
                existing, client=command.client, timestamp=timestamp, datasource=datasource
            )
        else:
            needs = revisions.needs_history(existing, command.update)
            if needs and (out.rows or out.entries):
                # The history is read from the database: send it the batch's writes first (a
                # row written new in this batch gets its id).
                self._flush(db, out)
                row_id, existing, ref = self._job_row(db, key, out, held=False)
                assert existing is not None
            outcome = lifecycle.decide_update(
                existing,
                command.update,
                timestamp=timestamp,
                datasource=datasource,
                rand=sl.random_fraction(),
                history=sr.history_in(db, dsid, command.job) if needs else None,
            )
        record = outcome.record
        if outcome.event is None and not outcome.touched:
            return (record, False) if isinstance(command, _Submit) else record
        # Not held while written: a write that fails on bad input leaves the earlier one.
        self._updating.pop(key, None)
        before = None
        if row_id is not None and existing is not None and key not in out.rows:
            # The row as the database holds it: its status and lease_id columns are the record's.
            lease = existing.lease
            before = (existing.status._value_, None if lease is None else lease.id)
        ref = self._defer_job(row_id, outcome, datasource, timestamp, out, ref, before)
        if isinstance(command, _Submit):
            return (record, outcome.created)
        if outcome.then is not None:
            ref = self._defer_job(row_id, outcome.then, datasource, timestamp, out, ref)
            record = outcome.then.record
        if isinstance(command, _Update) and not record.terminal and row_id is not None:
            self._hold_updating(key, row_id, record, ref)
        return outcome.final

    def _job_row(
        self, db: sqlite3.Connection, key: tuple[str, str], out: _BatchResult, *, held: bool
    ) -> tuple[int | None, JobRecord | None, _Ref]:
        """(row id, record, where its request is stored) of a job as the batch sees it: its
        write not yet sent, the row kept for a driver's next update (``held``), or the
        database's row; (None, None, None) if none. A job whose row is only in ``out.rows`` has
        no id yet."""
        pending = out.rows.get(key)
        if pending is not None:
            return pending.row_id, pending.record, pending.ref
        if held:
            kept = self._updating.get(key)
            if kept is not None:
                return kept
        if key in out.looked_up:
            row = out.found.get(key)
        else:
            # Reads see the batch's flushed writes: same connection, same transaction.
            row = db.execute(_SELECT_JOB, key).fetchone()
        if row is None:
            return None, None, None
        return rf.job_row(row)

    def _look_up(self, db: sqlite3.Connection, commands: list[_Command], out: _BatchResult) -> None:
        """Read the rows of the batch's submits, cancels and updates in one statement per
        datasource, for :meth:`_job_row` (a row a driver's update holds is not read)."""
        wanted: dict[str, list[str]] = {}
        updating = self._updating
        for command in commands:
            if isinstance(command, _Submit) or (
                isinstance(command, _Cancel | _Update)
                and (command.dsid, command.job) not in updating
            ):
                wanted.setdefault(command.dsid, []).append(command.job)
        if sum(map(len, wanted.values())) < 2:
            return
        found = out.found
        for dsid, jobs in wanted.items():
            for job, *row in db.execute(_SELECT_JOBS, (dsid, codec.dumps_str(jobs))):
                found[dsid, job] = row
        out.looked_up = frozenset((dsid, job) for dsid, jobs in wanted.items() for job in jobs)

    def _defer_job(
        self,
        row_id: int | None,
        outcome: lifecycle.Outcome,
        datasource: Datasource,
        timestamp: int,
        out: _BatchResult,
        ref: _Ref,
        before: tuple[str, str | None] | None = None,
    ) -> _Ref:
        """:meth:`write_job`, sent to the database by the next :meth:`_flush`. ``ref``: where
        the row keeps its request now; ``before``: the status and lease id the row holds in the
        database, if known. Returns where the row keeps its request after this write."""
        record = outcome.record
        whole = _encode_record(record)
        data = lifecycle.entry_data(outcome)
        data_text = None if data is None else _encode(data, "request entry")
        event = outcome.event
        entry = None
        if event is not None and event in lifecycle.BRINGS_REQUEST:
            # The entry brings the revision's request: its data holds the one stored copy (as
            # its last member), and the job's row and later events point here.
            assert data is not None and data["request"] is record.request
            entry = _EventWrite(
                record,
                event,
                timestamp,
                data,
                data_text,
                record.rest_bytes(),
                None,
                brings_request=True,
            )
            ref = entry
        text = whole if ref is None else record.rest_bytes()
        lease_id = None if record.lease is None else record.lease.id
        due_at = leases.next_due(record, datasource)
        # Everything that can fail on bad input has run.
        key = (record.datasource_id, record.job)
        pending = out.rows.get(key)
        if pending is None:
            out.rows[key] = _RowWrite(
                row_id,
                record,
                text,
                lease_id,
                due_at,
                ref,
                before,
                leased=1 if datasource.leased else None,
            )
        else:  # written earlier in the batch: its last state only (a new row stays new)
            pending.record, pending.text, pending.ref = record, text, ref
            pending.lease_id, pending.due_at = lease_id, due_at
        out.stored.append((record.datasource_id, record.job, record.client, whole))
        if event is not None:
            if entry is None:
                entry = _EventWrite(record, event, timestamp, data, data_text, text, ref)
            out.entries.append(entry)
            self._last_ts[record.datasource_id] = timestamp
        return ref

    def _flush(self, db: sqlite3.Connection, out: _BatchResult) -> None:
        """Send the batch's deferred job rows and events to the database."""
        if out.looked_up:
            # The database holds the batch's rows from now on (and what a command other than a
            # submit, cancel or update writes after this): they are read one by one again.
            out.looked_up = frozenset()
            out.found.clear()
        entries = out.entries
        if entries:
            # The seqs first: job rows and events point at the entries holding their requests.
            first = rf.reserve_seqs(db, len(entries))
            for seq, e in enumerate(entries, first):
                e.seq = seq
        if out.rows:
            rows = out.rows.values()
            db.executemany(
                _INSERT_JOB,
                [
                    (w.record.datasource_id, w.record.job, w.record.client, *w.columns())
                    for w in rows
                    if w.row_id is None
                ],
            )
            updates: dict[str, list[tuple[Any, ...]]] = {}
            for w in rows:
                if w.row_id is not None:
                    sql, params = w.update()
                    updates.setdefault(sql, []).append(params)
            for sql, params_list in updates.items():  # distinct jobs: the order does not matter
                db.executemany(sql, params_list)
            out.rows.clear()
        if not entries:
            return
        db.executemany(
            _INSERT_EVENT,
            [
                (
                    e.seq,
                    e.record.datasource_id,
                    e.type,
                    e.record.job,
                    e.record.client,
                    e.timestamp,
                    e.data_text,
                    e.text,
                    e.request_seq(),
                )
                for e in entries
            ],
        )
        for e in entries:
            out.events.append(
                Event(
                    seq=e.seq,
                    datasource_id=e.record.datasource_id,
                    type=e.type,
                    job=e.record.job,
                    client=e.record.client,
                    timestamp=e.timestamp,
                    record=e.record,
                    data=e.data,
                )
            )
        entries.clear()

    def _hold_updating(
        self, key: tuple[str, str], row_id: int, record: JobRecord, ref: _Ref
    ) -> None:
        """Keep the row of a job a driver is updating for its next update (writer thread)."""
        wire = record.wire_bytes()
        if len(wire) > UPDATING_MAX_BYTES:
            return
        updating = self._updating
        # The record keeps its encodings: compact copies (orjson's output holds 4 KiB). The
        # next update's record reuses the request's (models.evolve).
        object.__setattr__(record, "_wire", bytes(memoryview(wire)))
        object.__setattr__(record, "_rest", None)
        object.__setattr__(record, "_req", bytes(memoryview(record.request_bytes())))
        updating[key] = (row_id, record, ref)
        updating.move_to_end(key)
        if len(updating) > UPDATING_ENTRIES:
            updating.popitem(last=False)

    def write_job(
        self,
        db: sqlite3.Connection,
        row_id: int | None,
        outcome: lifecycle.Outcome,
        datasource: Datasource,
        timestamp: int,
        out: _BatchResult,
        request_seq: int | None,
    ) -> None:
        """Store ``outcome``'s record (a new row if ``row_id`` is None) and append its event, now
        (the leases', revisions' and schedules' commands, which read the database after).
        ``request_seq``: the row's (see :mod:`.sqlite_rows`)."""
        self._defer_job(row_id, outcome, datasource, timestamp, out, request_seq)
        self._flush(db, out)

    def write_status_changes(
        self,
        db: sqlite3.Connection,
        changes: list[tuple[int, lifecycle.Outcome, int | None]],
        datasource: Datasource,
        timestamp: int,
        out: _BatchResult,
    ) -> None:
        """Store status changes of existing jobs of one datasource set-based: one ``UPDATE``
        of every row and one ``INSERT`` of their ``status`` events (a batch of claims). Each
        change names its row's ``request_seq``."""
        if not changes:
            return
        items = []
        for row_id, outcome, request_seq in changes:
            rec = outcome.record
            whole = _encode_record(rec)
            items.append(
                [
                    row_id,
                    rec.status._value_,
                    (whole if request_seq is None else rec.rest_bytes()).decode(),
                    rec.updated_at,
                    None if rec.lease is None else rec.lease.id,
                    rec.retry_at,
                    leases.next_due(rec, datasource),
                    rec.job,
                    rec.client,
                    request_seq,
                ]
            )
        payload = codec.dumps_str(items)
        db.execute(sl.SQL_SET_STATUS, (payload,))
        seqs = dict(db.execute(sl.SQL_STATUS_EVENTS, (datasource.id, timestamp, payload)))
        events = [
            Event(
                seq=seqs[outcome.record.job],
                datasource_id=datasource.id,
                type="status",
                job=outcome.record.job,
                client=outcome.record.client,
                timestamp=timestamp,
                record=outcome.record,
            )
            for _, outcome, _ in changes
        ]
        events.sort(key=lambda e: e.seq)
        out.events.extend(events)
        self._last_ts[datasource.id] = timestamp

    # reads --------------------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` on an idle read connection's thread."""
        if not self._reader_conns:
            raise errors.Unavailable("The store is not open.")
        # Hand the connection back to the queue it came from: close() replaces the queue, and
        # reads still waiting on the old one are only woken by connections handed back to it
        # (closed, or closing: they then fail with Unavailable instead of waiting forever).
        idle = self._idle_readers
        conn = await idle.get()
        try:
            return await _in_thread(conn, fn, *args)
        except (sqlite3.Error, ValueError) as exc:
            raise errors.Unavailable(f"The database cannot be read: {exc}.") from exc
        finally:
            idle.put_nowait(conn)

    async def _point_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a small indexed read ``fn(db, *args)`` on the loop's thread; if SQLite would have
        to wait for a lock, run it on a reader thread instead."""
        if self._inline is not None:
            try:
                return fn(self._inline, *args)
            except sqlite3.Error:
                pass  # the reader thread retries it, and maps a lasting failure to a 503
        return await self._read(fn, *args)

    async def get_job(self, dsid: str, job: str) -> JobRecord | None:
        """The job's current record, or ``None``."""

        def run(db: sqlite3.Connection) -> JobRecord | None:
            row = db.execute(_SELECT_JOB, (dsid, job)).fetchone()
            return None if row is None else rf.job_row(row)[1]

        return await self._point_read(run)

    async def get_job_wire(self, dsid: str, job: str) -> tuple[str, bytes] | None:
        """The job's owner and stored record text, or ``None``: from the record cache, or one
        indexed read (whose result the cache then holds)."""
        found = self._records.get(dsid, job)
        if found is not None:
            return found
        landed = self._landed
        found = await self._point_read(_job_wire, dsid, job)
        if found is not None and landed == self._landed:
            self._records.put(dsid, job, found[0], found[1])
        return found

    def _forget_records(self) -> None:
        self._landed += 1
        self._records.clear()
        self._updating.clear()  # called between batches only: the writer thread is idle

    async def list_jobs(
        self,
        dsid: str,
        client: str | None,
        *,
        status: Status | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """A client's jobs (every client's for ``None``), newest first. The cursor is the
        internal id of the last job returned, as text."""
        if limit < 1:
            raise errors.BadRequest(f"The page limit must be at least 1, not {limit}.")
        before = _MAX_INT64
        if cursor is not None:
            if not _CURSOR_RE.fullmatch(cursor) or int(cursor) > _MAX_INT64:
                raise errors.BadRequest(
                    f"The cursor {cursor!r} is not one this store handed out: pass the 'next' "
                    "value of the previous page unchanged."
                )
            before = int(cursor)
        sql = f"SELECT {rf.JOB_ROW} FROM jobs WHERE datasource_id = ?"
        args: list[Any] = [dsid]
        if client is not None:
            sql += " AND client = ?"
            args.append(client)
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        sql += " AND id < ? ORDER BY id DESC LIMIT ?"
        args += [before, limit + 1]

        def run(db: sqlite3.Connection) -> JobPage:
            rows = db.execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            return JobPage(
                jobs=[rf.job_row(r)[1] for r in rows],
                next_cursor=str(rows[-1][0]) if more else None,
            )

        return await self._read(run)

    async def count_unfinished(self, dsid: str, client: str) -> int:
        """How many of ``client``'s jobs on ``dsid`` are not terminal (the partial index
        ``jobs_unfinished``: finished jobs are not visited)."""

        def run(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT count(*) FROM jobs WHERE datasource_id = ? AND client = ?"
                f" AND {UNFINISHED_SQL}",
                (dsid, client),
            ).fetchone()
            return int(row[0])

        return await self._point_read(run)

    async def job_stats(self) -> dict[str, DatasourceJobs]:
        """Job counts per datasource and status (one grouped scan of ``jobs``) and each
        datasource's oldest unfinished job (through the partial index ``jobs_unfinished``: the
        smallest id, as ids follow submission order)."""

        def run(db: sqlite3.Connection) -> tuple[list[Any], dict[str, int]]:
            counts = db.execute(
                "SELECT datasource_id, status, count(*) FROM jobs GROUP BY datasource_id, status"
            ).fetchall()
            oldest = db.execute(
                "SELECT datasource_id, record FROM jobs WHERE id IN (SELECT min(id) FROM jobs"
                f" WHERE {UNFINISHED_SQL} GROUP BY datasource_id)"
            ).fetchall()
            # The record without its request (if stored apart) has submitted_at too.
            return counts, {ds: codec.loads(rec)["submitted_at"] for ds, rec in oldest}

        counts, oldest = await self._read(run)
        dsids = [d.id for d in await self.list_datasources()]
        return job_stats_from(dsids, counts, oldest)

    async def latest_entry(self, dsid: str) -> Event | None:
        """The newest request-stream entry of the datasource, or ``None``."""
        row = await self._point_read(_latest_row, _EVENT_COLUMNS, dsid)
        return None if row is None else rf.decode_event(row)

    async def latest_entry_wire(self, dsid: str) -> bytes | None:
        """The newest request-stream entry as stored JSON text, or ``None``."""
        row = await self._point_read(_latest_row, _ENTRY_TEXT, dsid)
        return None if row is None else cast(bytes, row[0])

    async def entries_since(
        self, dsid: str, timestamp: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Request-stream entries with ``timestamp >= timestamp`` and ``seq > after_seq``."""
        sql = _since_sql(_EVENT_COLUMNS)
        args = _since_args(dsid, timestamp, after_seq, limit)
        return await self._read(_fetch_events, sql, args)

    async def entries_since_wire(
        self, dsid: str, timestamp: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        """:meth:`entries_since` as ``(seq, stored JSON text)`` pairs."""
        sql = _since_sql(f"seq, {_ENTRY_TEXT}")
        args = _since_args(dsid, timestamp, after_seq, limit)
        if limit <= _INLINE_PAGE:
            return await self._point_read(_fetch_rows, sql, args)
        return await self._read(_fetch_rows, sql, args)

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
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE datasource_id = :ds"
        if client is not None:
            sql += " AND client = :client"
        if stream_only:
            sql += " AND type != 'status'"
        sql += " AND seq > :after ORDER BY seq LIMIT :limit"
        args = {"ds": dsid, "client": client, "after": after_seq, "limit": max(limit, 0)}
        return await self._read(_fetch_events, sql, args)

    async def last_seq(self) -> int:
        """The largest committed ``seq`` (0 for an empty log), purged events included."""

        def run(db: sqlite3.Connection) -> int:
            # The purge may have deleted the newest events: the log's max is then purged_through.
            row = db.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM events), 0),"
                " (SELECT purged_through FROM retention),"
                " coalesce((SELECT max(seq) FROM schedule_events), 0))"
            ).fetchone()
            return int(row[0])

        return await self._read(run)

    # schedules (rules: jobqueue_store.schedules) --------------------------------------------------
    async def create_schedule(
        self, dsid: str, spec: ScheduleSpec, client: str
    ) -> tuple[ScheduleRecord, bool]:
        """Create a schedule; return ``(record, created)``."""
        result = await self._write(ss.CreateSchedule(dsid, spec, client))
        return cast(tuple[ScheduleRecord, bool], result)

    async def change_schedule(
        self, dsid: str, schedule: str, action: ScheduleAction
    ) -> ScheduleRecord:
        """Pause, resume or soft-delete a schedule."""
        return cast(ScheduleRecord, await self._write(ss.ChangeSchedule(dsid, schedule, action)))

    async def get_schedule(self, dsid: str, schedule: str) -> ScheduleRecord | None:
        """The schedule's record, or ``None``."""
        return await self._point_read(ss.get_schedule, dsid, schedule)

    async def list_schedules(
        self, dsid: str, client: str | None, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        """A client's schedules, newest first."""
        return await self._read(ss.list_schedules, dsid, client, limit, cursor)

    async def list_runs(
        self, dsid: str, schedule: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        """A schedule's runs, newest first."""
        return await self._read(ss.list_runs, dsid, schedule, limit, cursor)

    async def schedule_events_after(
        self, dsid: str, client: str | None, after: int, upto: int, limit: int = 1000
    ) -> list[ScheduleEvent]:
        """Schedule events with ``after < seq <= upto``, by ``seq``."""
        return await self._read(ss.schedule_events_after, dsid, client, after, upto, limit)

    # retention ----------------------------------------------------------------------------------
    async def purge(self, older_than_ms: int, *, limit: int = 10_000) -> int:
        """Delete up to ``limit`` terminal jobs with ``updated_at < older_than_ms`` and their
        events, as one command of the writer (serialised with writes, group-committed)."""
        if limit < 1:
            raise ValueError(f"The purge limit must be at least 1, not {limit}.")
        return cast(int, await self._write(_Purge(older_than_ms, limit)))

    async def purged_through(self) -> int:
        """The largest ``seq`` deleted by :meth:`purge` so far (0 if none)."""

        def run(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT purged_through FROM retention").fetchone()
            return int(row[0])

        return await self._read(run)


def _purge(db: sqlite3.Connection, older_than_ms: int, limit: int) -> int:
    """Run on the writer thread, inside the batch's transaction: see :meth:`SQLiteStore.purge`."""
    jobs = db.execute(
        f"SELECT id, datasource_id, job FROM jobs WHERE {TERMINAL_SQL} AND updated_at < ? "
        "ORDER BY updated_at LIMIT ?",
        (older_than_ms, limit),
    ).fetchall()
    # The newest events may go: keep each datasource's last timestamp for the next start.
    for dsid in {dsid for _, dsid, _ in jobs}:
        db.execute(
            "INSERT INTO last_timestamps (datasource_id, timestamp) "
            "SELECT datasource_id, timestamp FROM events WHERE datasource_id = ? "
            "ORDER BY seq DESC LIMIT 1 "
            "ON CONFLICT (datasource_id) DO UPDATE "
            "SET timestamp = max(timestamp, excluded.timestamp)",
            (dsid,),
        )
    top = 0
    for _, dsid, job in jobs:
        deleted = db.execute(
            "DELETE FROM events WHERE datasource_id = ? AND job = ? RETURNING seq", (dsid, job)
        ).fetchall()
        top = max([top, *(seq for (seq,) in deleted)])
    db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id, _, _ in jobs])
    events, schedule_top = ss.purge_events(db, older_than_ms, limit)
    top = max(top, schedule_top)
    if top:
        db.execute("UPDATE retention SET purged_through = max(purged_through, ?)", (top,))
    return max(len(jobs), events)


def _checkpoint_passive(db: sqlite3.Connection) -> tuple[int, int]:
    """A PASSIVE checkpoint: (pages in the log, pages of it copied). The pragma's row is
    fetched: a statement left unfinished keeps a read snapshot (the log could not start over)
    and, on the writer's connection, makes the next COMMIT fail."""
    rows = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    if not rows or rows[0][1] is None or rows[0][1] < 0:
        return 0, 0
    return int(rows[0][1]), int(rows[0][2])


def _file_system_trouble(path: Path) -> str:
    """Why the file system holding ``path`` may refuse writes, as a clause; ``""`` if no clue.

    SQLite reports a read-only file system as a plain "disk I/O error": say which it is. The probe
    touches the directory's times; it never opens the database file, since closing another
    descriptor of it would drop SQLite's POSIX locks.
    """
    try:
        os.utime(path.parent)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return f"; the file system holding {path} is read-only"
    try:
        if os.statvfs(path.parent).f_bavail == 0:
            return f"; the disk holding {path} is full: free some space"
    except OSError:
        pass
    return ""


def _job_wire(db: sqlite3.Connection, dsid: str, job: str) -> tuple[str, bytes] | None:
    row = db.execute(
        f"SELECT client, record, {rf.ENTRY_OF_JOB} FROM jobs WHERE datasource_id = ? AND job = ?",
        (dsid, job),
    ).fetchone()
    return None if row is None else (row[0], rf.stored_text(row[1], row[2]))


def _latest_row(db: sqlite3.Connection, columns: str, dsid: str) -> Any:
    return db.execute(
        f"SELECT {columns} FROM events "
        "WHERE datasource_id = ? AND type != 'status' ORDER BY seq DESC LIMIT 1",
        (dsid,),
    ).fetchone()


def _since_sql(columns: str) -> str:
    # Timestamps never decrease along seq within a datasource, so "timestamp >= T" is "seq >= the
    # first seq at T or later": one probe of events_stream_time, then a range scan of
    # events_stream. A page costs the same however long the log is.
    return (
        f"SELECT {columns} FROM events "
        "WHERE datasource_id = :ds AND type != 'status' AND seq > max(:after, coalesce(("
        "  SELECT seq - 1 FROM events WHERE datasource_id = :ds AND type != 'status'"
        "  AND timestamp >= :ts ORDER BY timestamp, seq LIMIT 1), :never))"
        " ORDER BY seq LIMIT :limit"
    )


def _since_args(dsid: str, timestamp: int, after_seq: int, limit: int) -> dict[str, Any]:
    return {
        "ds": dsid,
        "after": after_seq,
        "ts": timestamp,
        "never": _MAX_INT64,
        "limit": max(limit, 0),
    }


def _fetch_rows(db: sqlite3.Connection, sql: str, args: dict[str, Any]) -> list[Any]:
    return db.execute(sql, args).fetchall()


def _fetch_events(db: sqlite3.Connection, sql: str, args: dict[str, Any]) -> list[Event]:
    return [rf.decode_event(row) for row in db.execute(sql, args).fetchall()]


def _migrate(db: sqlite3.Connection, steps: list[tuple[int, str]]) -> int:
    """Run on the writer thread: apply the migrations above the recorded version."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = int(row[0])
    for version, sql in steps:
        if version <= current:
            continue
        # executescript() runs each statement as written: BEGIN and COMMIT in the script make the
        # migration one transaction (the version row included).
        try:
            db.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\n;"
                f"INSERT INTO schema_version (version) VALUES ({version});\nCOMMIT;"
            )
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        current = version
    return current
