"""The store interface: domain records in, domain records out, only ``errors.*`` raised.

Every write is durable when its coroutine returns (committed; ``synchronous=FULL`` on SQLite) and
appends at most one :class:`~jobqueue_store.models.Event` to one store-wide log:

- ``seq`` is strictly increasing across the whole store and hands out no value twice;
- ``timestamp`` (ms) never decreases within a datasource (``max(now, last timestamp)``);
- the job's record and its event are written in the same transaction;
- the lifecycle rules of :mod:`jobqueue_store.lifecycle` decide each write against the
  committed row (single writer or row lock), never against process memory.

After a commit, the store hands the committed events, in ``seq`` order and with no gap, to the
``listener`` set with :meth:`Store.set_listener` (the pub/sub hub). A store shared by several
processes also hands over the events that other processes committed.

Reads of the log (``entries_since``, ``events_after``, ``latest_entry``) return only events below
the commit watermark: an event is never returned while an event with a smaller ``seq`` could
still commit.

Retention (:meth:`Store.purge`) deletes old terminal jobs with *every* event of theirs, in the
write path, atomically. Events of the jobs it keeps are never deleted, so the log that remains is
still read in ``seq`` order with no gap among what remains and no duplicate. The largest ``seq``
deleted so far is :meth:`Store.purged_through`: a reader resuming after a smaller ``seq`` may have
missed purged events.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from jobqueue_store import codec
from jobqueue_store.models import (
    Datasource,
    DesiredState,
    Event,
    JobPage,
    JobRecord,
    SlotLease,
    Status,
    StatusUpdate,
    WorkerInfo,
)
from jobqueue_store.schedules import (
    ScheduleAction,
    ScheduleEvent,
    SchedulePage,
    ScheduleRecord,
    ScheduleSpec,
)
from jobqueue_store.timers import Clock

Listener = Callable[[Sequence[Event | ScheduleEvent]], None]
CommitObserver = Callable[[int], None]

GROUP_FROM = 16
"""A write batch at least this large means many writers are waiting: the next batch is given
time to fill (:func:`let_batch_fill`)."""
GROUP_TURNS = 64
"""At most this many event-loop turns are given to a batch to fill (0: never wait)."""
GROUP_IDLE_TURNS = 2
"""The batch is taken once this many turns in a row queued no write."""


T = TypeVar("T")


class WriteQueue(Generic[T]):
    """The queue of a store's writer task: first in, first out, no bound, one task taking.

    ``asyncio.Queue`` does this with about nine Python calls per item (its bound checks, waiter
    lists and ``Event`` bookkeeping); here a write costs an ``append``, and the writer waits on
    one future only while the queue is empty. Every method runs on the event loop's thread.
    """

    __slots__ = ("_waiter", "items")

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        """The queued items, oldest first (the writer takes a batch with ``popleft``)."""
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        """Queue ``item`` and wake the waiting writer, if any."""
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, once there is one."""
        items = self.items
        while not items:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:  # cancelled while waiting
                    self._waiter = None
        return items.popleft()

    def qsize(self) -> int:
        """How many items are queued."""
        return len(self.items)


async def let_batch_fill(queue: WriteQueue[Any], last_batch: int, limit: int, turns: int) -> None:
    """Group commit under load: after the writer took the first write of a batch, when its last
    batch held at least :data:`GROUP_FROM` writes, let the event loop run up to ``turns`` turns
    while writes keep arriving, so that one commit (one ``fsync``) serves more of them.

    The wait counts loop turns, not time: it ends as soon as :data:`GROUP_IDLE_TURNS` turns in a
    row queue nothing, or the queue holds ``limit`` items. A lone write (the last batch small) is
    never held back. This is PostgreSQL's ``commit_delay`` with ``commit_siblings``, measured in
    the loop's own work instead of microseconds.
    """
    if turns <= 0 or last_batch < GROUP_FROM:
        return
    size = queue.qsize()
    idle = 0
    for _ in range(turns):
        if size >= limit:
            return
        await asyncio.sleep(0)
        grown = queue.qsize()
        idle = idle + 1 if grown == size else 0
        if idle >= GROUP_IDLE_TURNS:
            return
        size = grown


@dataclass(frozen=True, slots=True)
class DatasourceJobs:
    """A datasource's jobs as monitoring sees them (:meth:`Store.job_stats`)."""

    counts: Mapping[Status, int]
    """How many jobs are in each status (every status present, 0 included)."""
    oldest_unfinished_at: int | None
    """The ``submitted_at`` (ms) of its oldest job not in a terminal status; None if none."""


def job_stats_from(
    dsids: Iterable[str],
    counts: Iterable[tuple[str, str, int]],
    oldest: Mapping[str, int],
) -> dict[str, DatasourceJobs]:
    """Assemble :meth:`Store.job_stats` from ``(dsid, status, count)`` rows and the oldest
    unfinished ``submitted_at`` by datasource; statuses this version does not know are left out."""
    table: dict[str, dict[Status, int]] = {dsid: dict.fromkeys(Status, 0) for dsid in dsids}
    known = {s.value: s for s in Status}
    for dsid, status, n in counts:
        if dsid in table and status in known:
            table[dsid][known[status]] = int(n)
    return {dsid: DatasourceJobs(by_status, oldest.get(dsid)) for dsid, by_status in table.items()}


class Store(abc.ABC):
    """A job-queue store. Open with :meth:`open`, close with :meth:`close`.

    ``clock`` is where the store reads the time (timestamps, leases, due times); tests pass a
    :class:`~jobqueue_store.timers.ManualClock`.
    """

    _listener: Listener | None = None
    clock: Clock

    def set_listener(self, listener: Listener | None) -> None:
        """Receive committed events, in ``seq`` order, after each commit."""
        self._listener = listener

    def _publish(self, events: Sequence[Event | ScheduleEvent]) -> None:
        if events and self._listener is not None:
            self._listener(events)

    _commit_observer: CommitObserver | None = None

    def set_commit_observer(self, observer: CommitObserver | None) -> None:
        """Be told, after each group commit, how many writes it committed (for metrics)."""
        self._commit_observer = observer

    def _committed(self, writes: int) -> None:
        if self._commit_observer is not None:
            self._commit_observer(writes)

    # lifecycle ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, run migrations, start background tasks."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Create or upgrade the schema; return the schema version now in place."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`~jobqueue_store.errors.Unavailable` if the database is unreachable."""

    # datasources --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def put_datasource(self, datasource: Datasource) -> Datasource:
        """Create or replace a datasource's description and request schema."""

    @abc.abstractmethod
    async def get_datasource(self, dsid: str) -> Datasource | None:
        """The datasource, or ``None``."""

    @abc.abstractmethod
    async def list_datasources(self) -> list[Datasource]:
        """Every datasource, ordered by id."""

    # writes -------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def submit(
        self, dsid: str, job: str, client: str, request: Any, timeout: int | None = None
    ) -> tuple[JobRecord, bool]:
        """Submit a job; return ``(record, created)``.

        Raises ``NotFound`` for an unknown datasource and ``Conflict`` per
        :func:`~jobqueue_store.lifecycle.decide_submit`. A repeat appends nothing. ``timeout``
        (seconds, else the datasource's ``job_timeout``) sets the job's deadline.
        """

    @abc.abstractmethod
    async def cancel(self, dsid: str, job: str, client: str | None) -> JobRecord:
        """Request cancellation; ``client`` ``None`` is an admin. ``NotFound`` / ``Forbidden``.

        On a lease datasource a job that no lease holds ends ``cancelled`` at once.
        """

    @abc.abstractmethod
    async def update_status(self, dsid: str, job: str, update: StatusUpdate) -> JobRecord:
        """A driver's status report. ``NotFound`` / ``Conflict``; on a lease datasource
        ``LeaseLost`` unless ``update.lease`` holds the job (the update renews it)."""

    # long-running jobs (rules: jobqueue_store.revisions) ----------------------------------------
    @abc.abstractmethod
    async def revise(
        self, dsid: str, job: str, client: str | None, request: Any, rollback: bool
    ) -> tuple[JobRecord, bool]:
        """A client's update of ``job``'s request; return ``(record, revised)``.

        A new revision appends an ``update`` entry; the current request again changes nothing
        (``revised`` false). ``NotFound`` / ``Forbidden`` / ``Conflict`` per
        :func:`~jobqueue_store.revisions.decide_revise`; ``client`` ``None`` is an admin.
        """

    @abc.abstractmethod
    async def set_desired(
        self, dsid: str, job: str, client: str | None, state: DesiredState
    ) -> JobRecord:
        """A client's stop (``"stopped"``) or start (``"running"``): a ``stop`` / ``start``
        entry unless already asked. ``Conflict`` on a terminal job."""

    @abc.abstractmethod
    async def job_events(self, dsid: str, job: str) -> list[Event]:
        """Every event of one job, by ``seq`` (its revisions are their fold)."""

    # leases, timers and the worker slot (rules: jobqueue_store.leases) ------------------------
    @abc.abstractmethod
    async def claim(self, dsid: str, worker: str, max_jobs: int) -> list[JobRecord]:
        """Claim up to ``max_jobs`` claimable jobs of lease datasource ``dsid`` for ``worker``,
        oldest first by ``seq``, in one write: each ``accepted`` under a new lease (one
        ``status`` event each). No job is ever held by two leases, across processes.
        ``Conflict`` on a stream datasource."""

    @abc.abstractmethod
    async def heartbeat(self, dsid: str, job: str, lease: str) -> JobRecord:
        """Renew ``lease`` on ``job`` for the datasource's ``lease_seconds``: no event, version
        unchanged. ``LeaseLost`` if the lease does not hold the job."""

    @abc.abstractmethod
    async def fire_due(self, limit: int = 500) -> int:
        """Fire every due item (at most ``limit`` rows) at the clock's now as ordinary writes
        (:func:`jobqueue_store.leases.decide_fire`); return how many events were appended.
        Several processes may call it at once: each due item fires once."""

    @abc.abstractmethod
    async def take_slot(self, dsid: str, worker: str) -> SlotLease:
        """Take stream datasource ``dsid``'s worker slot; ``SlotTaken`` while another holds it,
        ``Conflict`` on a lease datasource. The reply carries the stored resume point."""

    @abc.abstractmethod
    async def renew_slot(self, dsid: str, lease: str, resume: int | None) -> SlotLease:
        """Renew the slot held by ``lease`` and store ``resume`` (kept if ``None``)."""

    @abc.abstractmethod
    async def release_slot(self, dsid: str, lease: str) -> None:
        """Free the slot held by ``lease``; its resume point stays for the next holder."""

    @abc.abstractmethod
    async def workers(self, dsid: str) -> list[WorkerInfo]:
        """The stream slot's holder, or the lease workers seen recently, of ``dsid``."""

    # reads --------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def get_job(self, dsid: str, job: str) -> JobRecord | None:
        """The job's current record, or ``None``."""

    async def get_job_wire(self, dsid: str, job: str) -> tuple[str, bytes] | None:
        """The job's owner and its current record as JSON text (the status record of
        protocol.md §8, as stored), or ``None``: what a status read answers, without decoding
        the record and encoding it again. Stores that keep the text override this."""
        record = await self.get_job(dsid, job)
        return None if record is None else (record.client, codec.dumps(record.to_wire()))

    @abc.abstractmethod
    async def list_jobs(
        self,
        dsid: str,
        client: str | None,
        *,
        status: Status | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """A client's jobs (every client's for ``None``), newest first, ``limit`` a page.

        ``cursor`` is the opaque ``next_cursor`` of the previous page; a malformed one raises
        ``BadRequest``.
        """

    async def count_unfinished(self, dsid: str, client: str) -> int:
        """How many of ``client``'s jobs on ``dsid`` are not in a terminal status.

        Backends override this with one count over an index of unfinished jobs; this default
        pages through :meth:`list_jobs` and so costs as much as the client's unfinished jobs.
        """
        count = 0
        for status in Status:
            if status.terminal:
                continue
            cursor: str | None = None
            while True:
                page = await self.list_jobs(dsid, client, status=status, limit=1000, cursor=cursor)
                count += len(page.jobs)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return count

    async def job_stats(self) -> dict[str, DatasourceJobs]:
        """Every declared datasource's job count per status and its oldest unfinished job's
        ``submitted_at``, read when ``/metrics`` is scraped.

        Backends override this with two grouped queries (a count over every job, and the oldest
        unfinished one over the index of unfinished jobs); this default pages through
        :meth:`list_jobs`.
        """
        dsids = [d.id for d in await self.list_datasources()]
        counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, int] = {}
        for dsid in dsids:
            cursor: str | None = None
            while True:
                page = await self.list_jobs(dsid, None, limit=1000, cursor=cursor)
                for job in page.jobs:
                    key = (dsid, job.status.value)
                    counts[key] = counts.get(key, 0) + 1
                    if not job.status.terminal:
                        oldest[dsid] = min(oldest.get(dsid, job.submitted_at), job.submitted_at)
                cursor = page.next_cursor
                if cursor is None:
                    break
        rows = [(dsid, status, n) for (dsid, status), n in counts.items()]
        return job_stats_from(dsids, rows, oldest)

    @abc.abstractmethod
    async def latest_entry(self, dsid: str) -> Event | None:
        """The newest request-stream entry (``request`` or ``cancel``) of the datasource."""

    async def latest_entry_wire(self, dsid: str) -> bytes | None:
        """:meth:`latest_entry` as the JSON text of its request-stream entry (protocol.md §6)."""
        entry = await self.latest_entry(dsid)
        return None if entry is None else codec.dumps(entry.stream_entry())

    async def entries_since_wire(
        self, dsid: str, timestamp: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        """:meth:`entries_since` as ``(seq, JSON text of the entry)`` pairs: a page is joined
        from them without decoding anything."""
        entries = await self.entries_since(dsid, timestamp, after_seq=after_seq, limit=limit)
        return [(e.seq, codec.dumps(e.stream_entry())) for e in entries]

    @abc.abstractmethod
    async def entries_since(
        self, dsid: str, timestamp: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Request-stream entries with ``timestamp >= timestamp`` and ``seq > after_seq``, oldest
        first (by ``seq``), at most ``limit``."""

    @abc.abstractmethod
    async def events_after(
        self,
        dsid: str,
        after_seq: int,
        *,
        client: str | None = None,
        stream_only: bool = False,
        limit: int = 1000,
    ) -> list[Event]:
        """Events of the datasource with ``seq > after_seq``, by ``seq``, at most ``limit``.

        ``client``: only that client's jobs (a client subscription's replay). ``stream_only``:
        only request-stream entries (a driver subscription's replay).
        """

    @abc.abstractmethod
    async def last_seq(self) -> int:
        """The largest committed ``seq`` (0 for an empty log), purged events included."""

    # schedules (rules: jobqueue_store.schedules) ----------------------------------------------
    @abc.abstractmethod
    async def create_schedule(
        self, dsid: str, spec: ScheduleSpec, client: str
    ) -> tuple[ScheduleRecord, bool]:
        """Create schedule ``spec`` of ``client``; return ``(record, created)`` (one schedule
        event if created). ``Conflict`` per :func:`~jobqueue_store.schedules.decide_create`,
        ``NotFound`` for an unknown datasource. Its runs are fired by :meth:`fire_due`: each
        an ordinary submit of id ``<schedule>.<fire ms>``, once per fire time."""

    @abc.abstractmethod
    async def change_schedule(
        self, dsid: str, schedule: str, action: ScheduleAction
    ) -> ScheduleRecord:
        """Pause, resume or soft-delete a schedule, decided against the committed row; one
        schedule event if it changed. ``NotFound``; ``Conflict`` for a deleted schedule."""

    @abc.abstractmethod
    async def get_schedule(self, dsid: str, schedule: str) -> ScheduleRecord | None:
        """The schedule's record (deleted ones included), or ``None``."""

    @abc.abstractmethod
    async def list_schedules(
        self, dsid: str, client: str | None, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        """A client's schedules (every client's for ``None``), newest first; ``cursor`` as for
        :meth:`list_jobs`."""

    @abc.abstractmethod
    async def list_runs(
        self, dsid: str, schedule: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        """A schedule's runs, newest first; ``cursor`` as for :meth:`list_jobs`."""

    @abc.abstractmethod
    async def schedule_events_after(
        self, dsid: str, client: str | None, after: int, upto: int, limit: int = 1000
    ) -> list[ScheduleEvent]:
        """Schedule events of ``dsid`` (of ``client``'s schedules) with ``after < seq <= upto``,
        by ``seq``, at most ``limit`` (a client subscription's replay)."""

    # retention ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def purge(self, older_than_ms: int, *, limit: int = 10_000) -> int:
        """Delete at most ``limit`` terminal jobs with ``updated_at < older_than_ms``, oldest
        first, and every event of those jobs; return how many jobs were deleted.

        Runs in the write path, serialised with writes, in one transaction: no reader sees half a
        purge. Raises the largest ``seq`` it deleted into :meth:`purged_through` in that same
        transaction. Call again while it returns ``limit``. A purged job's id is free again: a
        submit with it creates a new job.

        It also deletes at most ``limit`` schedule events older than ``older_than_ms`` (the
        schedules and their runs stay; runs are jobs like any other) and returns the larger of
        the two counts, so that a caller looping while it returns ``limit`` purges both.
        """

    @abc.abstractmethod
    async def purged_through(self) -> int:
        """The largest ``seq`` ever deleted by :meth:`purge` (0 if none): every event with a
        larger ``seq`` that was committed is still in the log, unless its job is purged later."""
