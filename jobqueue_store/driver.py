"""A runtime for drivers: declare a datasource, follow its request stream, run a handler per job.

A driver in a few lines::

    from jobqueue_store.driver import Driver, Job

    driver = Driver("http://127.0.0.1:8080", token, "ds1", description="adds numbers")

    @driver.handler
    async def handle(job: Job) -> int:
        await job.progress(0.5)
        return sum(job.request["numbers"])

    driver.run_forever()   # or: await driver.run()

What the runtime does for each request-stream entry (protocol.md §6):

- ``request``: reads the job (skipping it if it is already terminal: a restarted driver never runs
  a finished job twice), waits for one of ``concurrency`` slots, posts ``accepted``, runs the
  handler, then posts ``complete`` with its return value, or ``failed`` with the error. A handler
  that raises :class:`RetryableError` is retried with exponential backoff and jitter, each retry
  reported as ``retrying``; one that raises :class:`ForbiddenJob` ends it ``forbidden``;
  :meth:`Job.progress` posts ``progress``.
- ``cancel``: cancels the job's task (the handler sees ``asyncio.CancelledError`` and cleans up)
  and posts ``cancelled``; a job not running here is marked ``cancelled`` unless it is terminal.

Resume: the runtime keeps ``{"after": <seq>}`` in a local state file (written atomically), the
largest ``seq`` below which every entry is fully handled (terminal status posted). It subscribes
with ``?after=`` that value, so a restarted driver catches up on what arrived while it was down;
an entry above the mark that was already finished is skipped by the terminal check. Without a
state file it starts from the beginning of the stream. A job interrupted by a crash (``accepted``
but not terminal) runs again after the restart: handlers see at-least-once delivery for crashes
and exactly-once otherwise.

One worker per stream datasource: the runtime first takes the datasource's worker slot, a lease
renewed by heartbeat every third of ``lease_seconds`` that carries the resume mark, so the store
keeps it. A second runtime on the same datasource is refused (:class:`SlotTaken`), or with
``standby=True`` waits and takes the slot over once the first one's lapses (a crashed driver's
slot lapses ``lease_seconds`` after its last heartbeat). Whoever takes the slot resumes from the
mark kept in the store (the local state file only serves when the store has none). The slot's
lease id is kept beside the state file (``<state file>.slot``), so a driver restarted on the same
machine after a crash takes its own slot back at once. A runtime that cannot renew its slot in
time stops its jobs at once, posts nothing more, and tries to take the slot again.

Lease datasources (declared with ``dispatch="lease"``): any number of runtimes, anywhere, claim
jobs (``POST /jobs/<DSID>/claim``, a long poll) and run up to ``concurrency`` at once each. Each
job is held under a lease, renewed by a heartbeat every third of ``lease_seconds`` and by every
update. A reply that shows a cancel request cancels the handler's task at once (it then posts
``cancelled``); a lost lease (``409 lease_lost``, or no renewal for ``lease_seconds`` while the
store cannot be reached) cancels it too, and nothing more is posted for that job: the store has
taken it back and will hand it to another worker. A handler that raises :class:`RetryableError`
gives the job back (``retrying`` with ``retry_in``), to be claimed again by any worker; the store
fails a job after the datasource's ``max_attempts`` claims. On stop, jobs still running after
``shutdown_grace`` are given back at once rather than left to their leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from jobqueue_store import codec
from jobqueue_store.client import (
    Claim,
    ConnectionFailed,
    DriverClient,
    Slot,
    StreamEntry,
    Subscription,
    backoff_delay,
)
from jobqueue_store.errors import Conflict, LeaseLost, SlotTaken, StoreError, Unavailable
from jobqueue_store.models import JobRecord, now_ms
from jobqueue_store.pipelines import PipelineHandler, PipelineRunner

__all__ = [
    "Driver",
    "ForbiddenJob",
    "Handler",
    "Job",
    "RetryableError",
    "SlotTaken",
    "default_worker_name",
    "load_state",
    "save_state",
]

log = logging.getLogger("jobqueue_store.driver")
T = TypeVar("T")


class RetryableError(Exception):
    """Raise from a handler when the job may succeed if run again (reported as ``retrying``).

    ``delay`` overrides the backoff before the next attempt, in seconds.
    """

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ForbiddenJob(Exception):
    """Raise from a handler to end the job as ``forbidden`` (the driver will not run it)."""


def default_worker_name() -> str:
    """This process's worker name: ``<host name>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Job:
    """A job handed to a handler: its id, client, request, and a way to report progress."""

    __slots__ = (
        "_driver",
        "_held",
        "_last_progress",
        "attempt",
        "client",
        "datasource_id",
        "id",
        "request",
    )

    def __init__(
        self,
        driver: Driver,
        entry: StreamEntry | JobRecord,
        attempt: int = 0,
        held: _Held | None = None,
    ) -> None:
        self._driver = driver
        self._held = held
        self.id: str = entry.job
        self.client: str = entry.client
        self.datasource_id: str = entry.datasource_id
        self.request: Any = entry.request
        self.attempt = attempt
        """0 for the first run, then 1, 2, ... for retries (on a lease datasource: earlier
        claims of the job, by any worker)."""
        self._last_progress: float | None = None

    async def progress(self, fraction: float) -> None:
        """Report progress from 0 to 1 (posted as ``accepted`` with ``progress``)."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if fraction == self._last_progress:
            return
        self._last_progress = fraction
        if self._held is not None:
            await self._driver._post_held(self._held, "accepted", progress=fraction)
        else:
            await self._driver._post(self.id, "accepted", progress=fraction)

    def __repr__(self) -> str:
        return f"Job({self.id!r}, client={self.client!r}, attempt={self.attempt})"


Handler = Callable[[Job], Awaitable[Any]]
"""A job handler: returns the job's ``response`` (any JSON value)."""


def load_state(path: Path) -> int | None:
    """The ``after`` seq kept in a driver state file, or None if there is none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    after = data.get("after") if isinstance(data, dict) else None
    if not isinstance(after, int) or after < 0:
        raise ValueError(f'{path}: not a driver state file (expected {{"after": <seq>}})')
    return after


def save_state(path: Path, after: int) -> None:
    """Write ``{"after": <seq>}`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"after": after}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _NotHeld(Exception):
    """This runtime lost the worker slot: it must post nothing more."""


class _Held:
    """A job this worker holds on a lease datasource: its lease, its task and their state.

    ``renewed`` and ``expires`` are event-loop times: when the lease was last surely renewed (a
    request's send time) and when it surely runs out if not renewed again.
    """

    __slots__ = ("cancel_requested", "claim", "expires", "finishing", "lost", "renewed", "task")

    def __init__(self, claim: Claim, renewed: float, expires: float) -> None:
        self.claim = claim
        self.task: asyncio.Task[None] | None = None
        self.renewed = renewed
        self.expires = expires
        self.lost = False
        """The lease is gone: nothing more may be posted for this job."""
        self.cancel_requested = False
        self.finishing = False
        """The handler is done and its outcome is being posted: too late to cancel."""

    @property
    def job(self) -> str:
        return self.claim.job


class _Running:
    """A job's task and whether a cancel entry may still interrupt it."""

    __slots__ = ("cancel_requested", "cancellable", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.cancellable = True
        self.cancel_requested = False


SETTINGS = ("dispatch", "lease_seconds", "max_attempts", "job_timeout", "cancel_grace")
"""The datasource settings a :class:`Driver` may declare; the ones left None keep their value."""

DEFAULT_LEASE_SECONDS = 30


class Driver:
    """The driver runtime of one datasource. See the module documentation.

    ``url``, ``token`` and ``dsid`` may be left out here and given later with :meth:`configure`
    (``jobqueue-store run-driver`` does that from its flags and environment). ``dispatch``,
    ``lease_seconds``, ``max_attempts``, ``job_timeout`` and ``cancel_grace`` are declared with
    the datasource when given; left None, the datasource keeps what it has. ``worker`` names this
    process to the store (default: host name and pid). ``claim_wait`` is the long poll of a claim
    on a lease datasource (also the longest a stop waits for a claim in flight).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        dsid: str | None = None,
        *,
        description: str = "",
        request_schema: dict[str, Any] | None = None,
        concurrency: int = 4,
        state_file: str | Path | None = None,
        max_retries: int = 3,
        retry_backoff: float = 1.0,
        max_retry_backoff: float = 60.0,
        shutdown_grace: float = 10.0,
        token_file: str | Path | None = None,
        dispatch: str | None = None,
        lease_seconds: int | None = None,
        max_attempts: int | None = None,
        job_timeout: int | None = None,
        cancel_grace: int | None = None,
        worker: str | None = None,
        standby: bool = False,
        claim_wait: float = 5.0,
    ) -> None:
        self.url = url
        self.token = token
        self.token_file = Path(token_file) if token_file is not None else None
        """A file holding the token, re-read when the store refuses the token (see the client)."""
        self.retries = 5
        """Retries of each request to the store on network errors, 503 and 429 (the client's)."""
        self.dsid = dsid
        self.description = description
        self.request_schema = request_schema
        self.concurrency = concurrency
        self.state_file = Path(state_file) if state_file is not None else None
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_retry_backoff = max_retry_backoff
        self.shutdown_grace = shutdown_grace
        self.dispatch = dispatch
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.job_timeout = job_timeout
        self.cancel_grace = cancel_grace
        self.worker = worker or default_worker_name()
        self.standby = standby
        self.claim_wait = claim_wait
        self.datasource: dict[str, Any] = {}
        """The datasource as the store declared it when :meth:`run` started."""
        self._handler: Handler | None = None
        self._pipeline: PipelineRunner | None = None
        self._anchors: dict[str, int] = {}
        """Pipelines: the seq of the entry that made each live job live (kept below the mark)."""
        self._on_outcome: Callable[[str, str], None] | None = None
        self._client: DriverClient | None = None
        self._running: dict[str, _Running] = {}
        self._held: dict[str, _Held] = {}
        self._pending: set[int] = set()
        self._max_seen = 0
        self._after = 0
        self._lost = False
        self._stop: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        """Set once the datasource is declared and jobs are coming (the request stream is open
        and the worker slot taken, or claims have started)."""

    # configuration ------------------------------------------------------------------------------
    def handler(self, fn: Handler) -> Handler:
        """Decorator: ``fn`` handles every job (``async def handle(job) -> response``)."""
        self._handler = fn
        return fn

    def pipeline(self, fn: PipelineHandler) -> PipelineHandler:
        """Decorator: ``fn`` runs every job as a long-running pipeline, one task per revision
        (``async def run(job: PipelineJob)``; see :mod:`jobqueue_store.pipelines`)."""
        self._pipeline = PipelineRunner(self, fn)
        return fn

    def on_outcome(self, fn: Callable[[str, str], None]) -> Callable[[str, str], None]:
        """Decorator: ``fn(job_id, status)`` is called each time the store has recorded a job's
        final status reported by this driver (for logs and metrics; it must not block)."""
        self._on_outcome = fn
        return fn

    def _reported(self, job: str, status: str) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(job, status)
            except Exception:
                log.exception("the on_outcome hook failed for job %s", job)

    def configure(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        dsid: str | None = None,
        state_file: str | Path | None = None,
        concurrency: int | None = None,
        token_file: str | Path | None = None,
        retries: int | None = None,
        worker: str | None = None,
        standby: bool | None = None,
    ) -> None:
        """Set the options that are given (None leaves an option as it is)."""
        if url is not None:
            self.url = url
        if token is not None:
            self.token = token
        if token_file is not None:
            self.token_file = Path(token_file)
        if retries is not None:
            self.retries = retries
        if dsid is not None:
            self.dsid = dsid
        if state_file is not None:
            self.state_file = Path(state_file)
        if concurrency is not None:
            self.concurrency = concurrency
        if worker is not None:
            self.worker = worker
        if standby is not None:
            self.standby = standby

    @property
    def after(self) -> int:
        """The resume mark: every entry with a ``seq`` up to it is fully handled."""
        return self._after

    @property
    def leased(self) -> bool:
        """Whether the datasource is a lease datasource (known once :meth:`run` declared it)."""
        return self.datasource.get("dispatch") == "lease"

    def _state_path(self) -> Path:
        if self.state_file is None:
            self.state_file = Path(f".jobqueue-driver-{self.dsid}.json")
        return self.state_file

    def _lease_seconds(self) -> float:
        return float(self.datasource.get("lease_seconds") or DEFAULT_LEASE_SECONDS)

    # running ------------------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Run until SIGINT or SIGTERM (blocking)."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
            await self.run()

        asyncio.run(main())

    def stop(self) -> None:
        """Ask :meth:`run` to return: running jobs get ``shutdown_grace`` seconds to finish."""
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Declare the datasource, then handle its jobs until :meth:`stop`.

        On a stream datasource :class:`SlotTaken` is raised if another worker holds the worker
        slot and this runtime is not a standby.
        """
        if self._handler is None and self._pipeline is None:
            raise ValueError(
                "The driver has no handler: decorate one with @driver.handler or @driver.pipeline."
            )
        if not self.url or not (self.token or self.token_file) or not self.dsid:
            raise ValueError("The driver needs a store URL, a driver token and a datasource id.")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        async with DriverClient(
            self.url, self.token, token_file=self.token_file, retries=self.retries
        ) as client:
            self._client = client
            try:
                self.datasource = await self._declare(client)
                if self.leased and self._pipeline is not None:
                    raise ValueError(
                        f"Datasource '{self.dsid}' is a lease datasource: pipelines run on a "
                        "stream datasource (one driver follows the request stream)."
                    )
                if self.leased:
                    await self._run_leased(client)
                else:
                    await self._run_stream(client)
            finally:
                self.ready.clear()
                self._client = None

    async def _declare(self, client: DriverClient) -> dict[str, Any]:
        """Declare the datasource, keeping the settings this driver does not set."""
        assert self.dsid
        current: dict[str, Any] = {}
        for ds in await client.catalogue():
            if ds.get("datasource_id") == self.dsid:
                current = ds
        settings = {k: getattr(self, k) for k in SETTINGS}
        settings = {k: v if v is not None else current.get(k) for k, v in settings.items()}
        return await client.put_datasource(
            self.dsid, self.description, self.request_schema, **settings
        )

    async def _until_stopped(self, delay: float) -> bool:
        """Sleep ``delay`` seconds or until :meth:`stop`; whether the driver is stopping."""
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # stream datasources: the worker slot ---------------------------------------------------------
    async def _run_stream(self, client: DriverClient) -> None:
        while True:
            slot = await self._take_slot(client)
            if slot is None:
                return  # stopped while standing by
            if not await self._follow(client, slot):
                return  # stopped
            log.error(
                "driver for %s: the worker slot was lost; jobs stopped, trying to take it again",
                self.dsid,
            )

    def _slot_path(self) -> Path:
        """Where the slot's lease id is kept, beside the state file: a driver restarted on the
        same machine after a crash takes its slot back at once instead of waiting it out."""
        state = self._state_path()
        return state.with_name(state.name + ".slot")

    async def _take_back(self, client: DriverClient) -> Slot | None:
        """The slot this driver held before a restart, if its lease still holds."""
        assert self.dsid
        path = self._slot_path()
        try:
            lease = path.read_text().strip()
        except FileNotFoundError:
            return None
        if not lease:
            return None
        try:
            slot = await client.slot_heartbeat(self.dsid, lease, None)
        except StoreError:
            path.unlink(missing_ok=True)
            return None
        log.info("driver for %s took back the worker slot it held before a restart", self.dsid)
        return slot

    def _keep_slot_lease(self, slot: Slot | None) -> None:
        path = self._slot_path()
        if slot is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(slot.lease)
        os.replace(tmp, path)

    async def _take_slot(self, client: DriverClient) -> Slot | None:
        """The worker slot; a standby waits for it. None if stopped while waiting."""
        assert self.dsid
        slot = await self._take_back(client)
        if slot is not None:
            return slot
        poll = max(0.1, min(1.0, self._lease_seconds() / 10))
        announced = False
        attempt = 0
        while True:
            try:
                slot = await client.take_slot(self.dsid, self.worker)
                self._keep_slot_lease(slot)
                return slot
            except SlotTaken as exc:
                if not self.standby:
                    raise
                if not announced:
                    log.info("driver for %s is standing by: %s", self.dsid, exc.message)
                    announced = True
                delay = poll
            except (ConnectionFailed, Unavailable) as exc:
                delay = backoff_delay(attempt, 0.5, 10.0)
                attempt += 1
                log.warning("store unavailable (%s); retry in %.1fs", exc.message, delay)
            if await self._until_stopped(delay):
                return None

    async def _follow(self, client: DriverClient, slot: Slot) -> bool:
        """Handle the request stream while holding ``slot``: True if the slot was lost."""
        assert self._stop is not None and self.dsid
        state = self._state_path()
        self._after = slot.resume if slot.resume is not None else (load_state(state) or 0)
        self._max_seen = self._after
        self._pending.clear()
        self._running.clear()
        self._anchors.clear()
        self._lost = False
        stream = client.stream(self.dsid, after=self._after)
        await stream.open()
        log.info(
            "driver for %s started after seq %d (worker %s holds the worker slot)",
            self.dsid,
            self._after,
            self.worker,
        )
        self.ready.set()
        reader = asyncio.create_task(self._read(stream))
        stopper = asyncio.create_task(self._stop.wait())
        keeper = asyncio.create_task(self._keep_slot(client, slot))
        lost = False
        try:
            await asyncio.wait({reader, stopper, keeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await stream.close()
            lost = keeper.done()
            if self._pipeline is not None:
                self._lost = lost  # a pipeline posts nothing once the slot is lost
                await self._pipeline.close()
            if lost:
                # Another worker may hold the slot now: stop at once and post nothing more.
                self._lost = True
                for task in list(self._tasks):
                    task.cancel()
                if self._tasks:
                    await asyncio.wait(list(self._tasks))
            else:
                await self._drain()
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
                await self._release_slot(client, slot)
            self.ready.clear()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
        return lost

    async def _keep_slot(self, client: DriverClient, slot: Slot) -> None:
        """Renew the slot every third of ``lease_seconds``; return when it is lost."""
        assert self.dsid
        loop = asyncio.get_running_loop()
        lease_seconds = self._lease_seconds()
        period = lease_seconds / 3
        renewed = loop.time()
        lease = slot.lease
        while True:
            await asyncio.sleep(max(0.0, renewed + period - loop.time()))
            left = renewed + lease_seconds - loop.time()
            sent = loop.time()
            try:
                await asyncio.wait_for(
                    client.slot_heartbeat(self.dsid, lease, self._after), max(left, 0.001)
                )
            except (ConnectionFailed, Unavailable, TimeoutError) as exc:
                if loop.time() >= renewed + lease_seconds:
                    log.error("driver for %s: worker slot not renewed in time (%s)", self.dsid, exc)
                    return
                await asyncio.sleep(min(0.5, period))
                continue
            except StoreError as exc:
                log.error("driver for %s: worker slot lost: %s", self.dsid, exc.message)
                return
            renewed = sent

    async def _release_slot(self, client: DriverClient, slot: Slot) -> None:
        """Store the final resume mark and free the slot (a standby takes over at once)."""
        assert self.dsid
        try:
            await asyncio.wait_for(client.slot_heartbeat(self.dsid, slot.lease, self._after), 5)
            await asyncio.wait_for(client.release_slot(self.dsid, slot.lease), 5)
            self._keep_slot_lease(None)
        except (StoreError, TimeoutError) as exc:
            log.warning("driver for %s: worker slot not released: %s", self.dsid, exc)

    async def _read(self, stream: Subscription[StreamEntry]) -> None:
        limit = max(100, self.concurrency * 10)
        async for entry in stream:
            while len(self._pending) >= limit:  # bound the backlog held in memory
                self._room.clear()
                await self._room.wait()
            self._pending.add(entry.seq)
            self._max_seen = max(self._max_seen, entry.seq)
            if self._pipeline is not None:
                self._spawn(self._pipeline.entry(entry))
            elif entry.type in ("stop", "start"):
                self._done(entry.seq)  # for long-running jobs: a pipeline driver's business
            elif entry.type == "cancel":
                self._spawn(self._cancel(entry))
            elif entry.job in self._running:
                self._done(entry.seq)  # the same job is already running here
            else:
                self._running[entry.job] = _Running(self._spawn(self._job(entry)))

    def _done(self, seq: int) -> None:
        """Entry ``seq`` is fully handled: advance the resume mark if it can."""
        if self._lost:
            return
        self._pending.discard(seq)
        held = self._pending.union(self._anchors.values())
        mark = min(held) - 1 if held else self._max_seen
        if mark > self._after:
            self._after = mark
            save_state(self._state_path(), mark)
        self._room.set()

    # one job ------------------------------------------------------------------------------------
    async def _job(self, entry: StreamEntry) -> None:
        assert self._client is not None and self._slots is not None and self.dsid
        client, dsid = self._client, self.dsid
        running = self._running[entry.job]
        finished = False
        try:
            record = await self._persist(lambda: client.job(dsid, entry.job))
            if record.terminal:
                finished = True
                return
            if record.cancel_requested:
                await self._post_terminal(entry.job, "cancelled", error="cancelled before it ran")
                finished = True
                return
            async with self._slots:
                status, response, has_response, error = await self._attempts(entry)
                running.cancellable = False
            await self._post_terminal(
                entry.job, status, response=response, has_response=has_response, error=error
            )
            finished = True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not running.cancel_requested or task is None or self._lost:
                raise  # shutdown or a lost slot: the job runs again, here or elsewhere
            task.uncancel()
            await self._post_terminal(entry.job, "cancelled", error="cancelled by its client")
            finished = True
        except _NotHeld:
            pass  # the worker slot was lost: another worker runs the stream now
        except Exception:
            # Not transient (those are waited out): nothing more this driver can do for it.
            log.exception("job %s could not be handled", entry.job)
            finished = True
        finally:
            if self._running.get(entry.job) is running:
                del self._running[entry.job]
            if finished:
                self._done(entry.seq)

    async def _attempts(self, entry: StreamEntry) -> tuple[str, Any, bool, str | None]:
        """Run the handler, retrying: ``(status, response, has_response, error)``."""
        assert self._handler is not None
        attempt = 0
        while True:
            await self._persist(lambda: self._post(entry.job, "accepted"))
            job = Job(self, entry, attempt)
            try:
                response = await self._handler(job)
            except RetryableError as exc:
                text = str(exc) or type(exc).__name__
                if attempt >= self.max_retries:
                    return "failed", None, False, f"gave up after {attempt + 1} attempts: {text}"
                delay = exc.delay
                if delay is None:
                    delay = backoff_delay(attempt, self.retry_backoff, self.max_retry_backoff)
                log.info(
                    "job %s: attempt %d failed (%s); retry in %.2fs", job.id, attempt, text, delay
                )
                await self._persist(partial(self._post, entry.job, "retrying", error=text))
                await asyncio.sleep(delay)
                attempt += 1
                continue
            except ForbiddenJob as exc:
                return "forbidden", None, False, str(exc) or "the driver refused this job"
            except Exception as exc:
                log.info("job %s failed: %r", job.id, exc)
                return "failed", None, False, f"{type(exc).__name__}: {exc}"
            try:
                codec.dumps(response)
            except TypeError as exc:
                return "failed", None, False, f"the handler's response is not JSON: {exc}"
            return "complete", response, True, None

    async def _cancel(self, entry: StreamEntry) -> None:
        assert self._client is not None and self.dsid
        client, dsid = self._client, self.dsid
        try:
            running = self._running.get(entry.job)
            if running is not None:
                running.cancel_requested = True
                if running.cancellable:
                    running.task.cancel()
                return  # the job's own task posts the outcome
            record = await self._persist(lambda: client.job(dsid, entry.job))
            if not record.terminal:
                await self._post_terminal(entry.job, "cancelled", error="cancelled by its client")
        except _NotHeld:
            pass
        except Exception:
            log.exception("cancel of job %s could not be handled", entry.job)
        finally:
            self._done(entry.seq)

    # posting ------------------------------------------------------------------------------------
    async def _post(
        self,
        job: str,
        status: str,
        *,
        response: Any = None,
        has_response: bool = False,
        error: str | None = None,
        progress: float | None = None,
    ) -> None:
        assert self._client is not None and self.dsid
        if self._lost:
            raise _NotHeld
        await self._client.update(
            self.dsid,
            job,
            status,
            response=response,
            has_response=has_response,
            error=error,
            progress=progress,
        )

    async def _persist(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, waiting out store outages (the client already retried a few times)."""
        attempt = 0
        while True:
            try:
                return await call()
            except (ConnectionFailed, Unavailable) as exc:
                delay = backoff_delay(attempt, 0.5, 10.0)
                log.warning("store unavailable (%s); retry in %.1fs", exc.message, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _post_terminal(
        self,
        job: str,
        status: str,
        *,
        response: Any = None,
        has_response: bool = False,
        error: str | None = None,
    ) -> None:
        """Post a terminal status, waiting out store outages: the job is not done until then."""
        try:
            await self._persist(
                lambda: self._post(
                    job, status, response=response, has_response=has_response, error=error
                )
            )
            self._reported(job, status)
        except _NotHeld:
            return  # the worker slot was lost: nothing more is posted
        except Conflict as exc:
            log.info("job %s was already terminal: %s", job, exc.message)
        except StoreError as exc:
            if status == "failed":
                raise
            # e.g. a response over the store's body limit: the job must still end.
            refused = f"the store refused the {status} report: {exc.message}"
            await self._post_terminal(job, "failed", error=refused)

    # lease datasources -------------------------------------------------------------------------
    async def _run_leased(self, client: DriverClient) -> None:
        assert self._stop is not None
        self._held.clear()
        log.info(
            "driver for %s started: worker %s claims up to %d jobs at once (lease %gs)",
            self.dsid,
            self.worker,
            self.concurrency,
            self._lease_seconds(),
        )
        self.ready.set()
        claimer = asyncio.create_task(self._claim_loop(client))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({claimer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            self._stop.set()
            # A claim in flight is waited for (at most claim_wait): its jobs are given back.
            with contextlib.suppress(Exception):
                await claimer
            await self._drain()
        if claimer.exception() is not None:
            raise claimer.exception()  # type: ignore[misc]

    async def _claim_loop(self, client: DriverClient) -> None:
        assert self._stop is not None and self.dsid
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stop.is_set():
            free = self.concurrency - len(self._held)
            if free <= 0:
                self._room.clear()
                room = asyncio.create_task(self._room.wait())
                stop = asyncio.create_task(self._stop.wait())
                await asyncio.wait({room, stop}, return_when=asyncio.FIRST_COMPLETED)
                room.cancel()
                stop.cancel()
                continue
            try:
                claims = await client.claim(
                    self.dsid, self.worker, max=min(free, 100), wait=self.claim_wait
                )
            except (ConnectionFailed, Unavailable) as exc:
                delay = backoff_delay(attempt, 0.2, 5.0)
                attempt += 1
                log.warning("claim failed (%s); retry in %.1fs", exc.message, delay)
                await self._until_stopped(delay)
                continue
            attempt = 0
            received = loop.time()
            lease_seconds = self._lease_seconds()
            for claim in claims:
                # The store's clock says when the lease ends; never trust it past lease_seconds.
                left = min(lease_seconds, (claim.lease.expires_at - now_ms()) / 1000)
                held = _Held(claim, received, received + left)
                self._held[claim.job] = held
                if self._stop.is_set():
                    held.task = self._spawn(self._give_back(held, "it was claimed as it stopped"))
                else:
                    held.task = self._spawn(self._leased(held))

    async def _leased(self, held: _Held) -> None:
        """Run one claimed job under its lease."""
        keeper = asyncio.create_task(self._keep_lease(held))
        try:
            if held.claim.record.cancel_requested:
                held.finishing = True
                await self._finish_held(held, "cancelled", error="cancelled before it ran")
                return
            status, response, has_response, error, retry_in = await self._attempt_leased(held)
            held.finishing = True
            await self._finish_held(
                held,
                status,
                response=response,
                has_response=has_response,
                error=error,
                retry_in=retry_in,
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            if held.lost:
                log.info("job %s stopped: this worker no longer holds it", held.job)
            elif held.cancel_requested:
                held.finishing = True
                await self._finish_held(held, "cancelled", error="cancelled on request")
            else:
                await self._give_back(held, "it was still running when the worker stopped")
        except Exception:
            log.exception("job %s could not be handled", held.job)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if self._held.get(held.job) is held:
                del self._held[held.job]
            self._room.set()

    async def _attempt_leased(self, held: _Held) -> tuple[str, Any, bool, str | None, float | None]:
        """Run the handler once: ``(status, response, has_response, error, retry_in)``."""
        assert self._handler is not None
        attempt = max(0, held.claim.lease.attempt - 1)
        job = Job(self, held.claim.record, attempt, held)
        try:
            response = await self._handler(job)
        except RetryableError as exc:
            # The store counts the claims: it fails the job after max_attempts of them.
            text = str(exc) or type(exc).__name__
            delay = exc.delay
            if delay is None:
                delay = backoff_delay(attempt, self.retry_backoff, self.max_retry_backoff)
            log.info(
                "job %s: attempt %d failed (%s); given back for %.2fs", job.id, attempt, text, delay
            )
            return "retrying", None, False, text, delay
        except ForbiddenJob as exc:
            return "forbidden", None, False, str(exc) or "the driver refused this job", None
        except Exception as exc:
            log.info("job %s failed: %r", job.id, exc)
            return "failed", None, False, f"{type(exc).__name__}: {exc}", None
        try:
            codec.dumps(response)
        except TypeError as exc:
            return "failed", None, False, f"the handler's response is not JSON: {exc}", None
        return "complete", response, True, None, None

    async def _keep_lease(self, held: _Held) -> None:
        """Renew the job's lease every third of ``lease_seconds`` until the job's task ends."""
        assert self._client is not None and self.dsid
        client, dsid = self._client, self.dsid
        loop = asyncio.get_running_loop()
        lease_seconds = self._lease_seconds()
        period = lease_seconds / 3
        while not held.lost:
            await asyncio.sleep(max(0.0, held.renewed + period - loop.time()))
            left = held.expires - loop.time()
            if left <= 0:
                self._lose(held, "its lease ran out while the store could not be reached")
                return
            sent = loop.time()
            try:
                record = await asyncio.wait_for(
                    client.heartbeat(dsid, held.job, held.claim.lease.id), left
                )
            except (ConnectionFailed, Unavailable) as exc:
                log.warning("job %s: heartbeat failed (%s)", held.job, exc.message)
                await asyncio.sleep(min(0.5, period))
                continue
            except TimeoutError:
                continue  # the check above now finds the lease run out
            except StoreError as exc:
                self._lose(held, exc.message)
                return
            held.renewed = sent
            held.expires = sent + lease_seconds
            if record.cancel_requested:
                self._cancel_held(held)

    def _lose(self, held: _Held, why: str) -> None:
        """The job's lease is gone: stop its handler at once; nothing more is posted for it."""
        if held.lost:
            return
        held.lost = True
        if held.finishing:
            # A heartbeat crossing the job's last update, most likely: that update decides.
            log.debug("job %s: lease lost while its outcome was being posted (%s)", held.job, why)
            return
        log.warning("job %s: lease lost (%s); stopping it", held.job, why)
        if held.task is not None:
            held.task.cancel()

    def _cancel_held(self, held: _Held) -> None:
        """The job's client asked for a cancel: stop its handler at once (it posts cancelled)."""
        if held.finishing or held.cancel_requested or held.lost:
            return
        held.cancel_requested = True
        log.info("job %s: cancel requested; cancelling it", held.job)
        if held.task is not None:
            held.task.cancel()

    async def _post_held(
        self,
        held: _Held,
        status: str,
        *,
        response: Any = None,
        has_response: bool = False,
        error: str | None = None,
        progress: float | None = None,
        retry_in: float | None = None,
        persist: bool = True,
    ) -> JobRecord | None:
        """Post an update under the job's lease: None if the lease is lost (or was already).

        The store's answer decides: the update is applied (the lease renewed) or refused with
        ``lease_lost``. Store outages are waited out until it answers (``persist``); a request in
        flight is never abandoned, so an outcome the store recorded is never taken for lost.
        """
        assert self._client is not None and self.dsid
        client, dsid = self._client, self.dsid
        loop = asyncio.get_running_loop()
        if held.lost:
            return None
        attempt = 0
        while True:
            sent = loop.time()
            try:
                record = await client.update(
                    dsid,
                    held.job,
                    status,
                    response=response,
                    has_response=has_response,
                    error=error,
                    progress=progress,
                    lease=held.claim.lease.id,
                    retry_in=retry_in,
                )
            except LeaseLost as exc:
                self._lose(held, exc.message)
                return None
            except (ConnectionFailed, Unavailable) as exc:
                if not persist:
                    raise
                delay = backoff_delay(attempt, 0.5, 10.0)
                attempt += 1
                log.warning("job %s: update failed (%s); retry in %.1fs", held.job, exc, delay)
                await asyncio.sleep(delay)
                continue
            held.renewed = sent
            held.expires = sent + self._lease_seconds()
            if record.cancel_requested and not record.terminal:
                self._cancel_held(held)
            return record

    async def _finish_held(
        self,
        held: _Held,
        status: str,
        *,
        response: Any = None,
        has_response: bool = False,
        error: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        """Post the job's outcome under its lease (a refused report ends it ``failed``)."""
        try:
            record = await self._post_held(
                held,
                status,
                response=response,
                has_response=has_response,
                error=error,
                retry_in=retry_in,
            )
            if record is not None:
                self._reported(held.job, status)
        except Conflict as exc:
            log.info("job %s was already terminal: %s", held.job, exc.message)
        except StoreError as exc:
            if status == "failed":
                raise
            refused = f"the store refused the {status} report: {exc.message}"
            await self._finish_held(held, "failed", error=refused)

    async def _give_back(self, held: _Held, why: str) -> None:
        """Hand a held job back to the queue at once, for another worker (one try: stopping)."""
        held.finishing = True
        try:
            await asyncio.wait_for(
                self._post_held(
                    held,
                    "retrying",
                    error=f"worker {self.worker} gave the job back: {why}",
                    retry_in=0,
                    persist=False,
                ),
                5,
            )
        except (StoreError, TimeoutError) as exc:
            log.warning("job %s not given back (%s): it returns when its lease ends", held.job, exc)
        finally:
            if self._held.get(held.job) is held:
                del self._held[held.job]
