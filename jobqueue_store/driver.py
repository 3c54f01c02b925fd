"""A runtime for drivers: declare a datasource, follow its request stream, run a handler per job.

A driver in a few lines::

    from jobqueue_store.driver import Driver, Job

    driver = Driver("http://127.0.0.1:8080", token, "ds1", description="adds numbers")

    @driver.handler
    async def handle(job: Job) -> int:
        await job.progress(0.5)
        return sum(job.request["numbers"])

    driver.run_forever()   # or: await driver.run()

What the runtime does for each request-stream entry (SPEC 4):

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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from jobqueue_store import codec
from jobqueue_store.client import (
    ConnectionFailed,
    DriverClient,
    StreamEntry,
    Subscription,
    backoff_delay,
)
from jobqueue_store.errors import Conflict, StoreError, Unavailable

__all__ = ["Driver", "ForbiddenJob", "Handler", "Job", "RetryableError", "load_state", "save_state"]

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


class Job:
    """A job handed to a handler: its id, client, request, and a way to report progress."""

    __slots__ = ("_driver", "_last_progress", "attempt", "client", "datasource_id", "id", "request")

    def __init__(self, driver: Driver, entry: StreamEntry, attempt: int = 0) -> None:
        self._driver = driver
        self.id: str = entry.job
        self.client: str = entry.client
        self.datasource_id: str = entry.datasource_id
        self.request: Any = entry.request
        self.attempt = attempt
        """0 for the first run, then 1, 2, ... for retries."""
        self._last_progress: float | None = None

    async def progress(self, fraction: float) -> None:
        """Report progress from 0 to 1 (posted as ``accepted`` with ``progress``)."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if fraction == self._last_progress:
            return
        self._last_progress = fraction
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


class _Running:
    """A job's task and whether a cancel entry may still interrupt it."""

    __slots__ = ("cancel_requested", "cancellable", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.cancellable = True
        self.cancel_requested = False


class Driver:
    """The driver runtime of one datasource. See the module documentation.

    ``url``, ``token`` and ``dsid`` may be left out here and given later with :meth:`configure`
    (``jobqueue-store run-driver`` does that from its flags and environment).
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
        self._handler: Handler | None = None
        self._client: DriverClient | None = None
        self._running: dict[str, _Running] = {}
        self._pending: set[int] = set()
        self._max_seen = 0
        self._after = 0
        self._stop: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        """Set once the datasource is declared and the request stream is open."""

    # configuration ------------------------------------------------------------------------------
    def handler(self, fn: Handler) -> Handler:
        """Decorator: ``fn`` handles every job (``async def handle(job) -> response``)."""
        self._handler = fn
        return fn

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

    @property
    def after(self) -> int:
        """The resume mark: every entry with a ``seq`` up to it is fully handled."""
        return self._after

    def _state_path(self) -> Path:
        if self.state_file is None:
            self.state_file = Path(f".jobqueue-driver-{self.dsid}.json")
        return self.state_file

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
        """Declare the datasource, then handle its request stream until :meth:`stop`."""
        if self._handler is None:
            raise ValueError("The driver has no handler: decorate one with @driver.handler.")
        if not self.url or not (self.token or self.token_file) or not self.dsid:
            raise ValueError("The driver needs a store URL, a driver token and a datasource id.")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._stop = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        state = self._state_path()
        self._after = self._max_seen = load_state(state) or 0
        async with DriverClient(
            self.url, self.token, token_file=self.token_file, retries=self.retries
        ) as client:
            self._client = client
            await client.put_datasource(self.dsid, self.description, self.request_schema)
            stream = client.stream(self.dsid, after=self._after)
            await stream.open()
            log.info("driver for %s started after seq %d", self.dsid, self._after)
            self.ready.set()
            reader = asyncio.create_task(self._read(stream))
            stopper = asyncio.create_task(self._stop.wait())
            try:
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                await stream.close()
                await self._drain()
                self.ready.clear()
                self._client = None
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _read(self, stream: Subscription[StreamEntry]) -> None:
        limit = max(100, self.concurrency * 10)
        async for entry in stream:
            while len(self._pending) >= limit:  # bound the backlog held in memory
                self._room.clear()
                await self._room.wait()
            self._pending.add(entry.seq)
            self._max_seen = max(self._max_seen, entry.seq)
            if entry.type == "cancel":
                self._spawn(self._cancel(entry))
            elif entry.job in self._running:
                self._done(entry.seq)  # the same job is already running here
            else:
                self._running[entry.job] = _Running(self._spawn(self._job(entry)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _done(self, seq: int) -> None:
        """Entry ``seq`` is fully handled: advance the resume mark if it can."""
        self._pending.discard(seq)
        mark = min(self._pending) - 1 if self._pending else self._max_seen
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
            if not running.cancel_requested or task is None:
                raise  # shutdown: the job runs again after a restart
            task.uncancel()
            await self._post_terminal(entry.job, "cancelled", error="cancelled by its client")
            finished = True
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
        except Conflict as exc:
            log.info("job %s was already terminal: %s", job, exc.message)
        except StoreError as exc:
            if status == "failed":
                raise
            # e.g. a response over the store's body limit: the job must still end.
            refused = f"the store refused the {status} report: {exc.message}"
            await self._post_terminal(job, "failed", error=refused)
