"""The driver runtime for long-running jobs (pipelines): one handler task per job, per revision.

A pipeline driver::

    from jobqueue_store.driver import Driver
    from jobqueue_store.pipelines import PipelineJob

    driver = Driver("http://127.0.0.1:8080", token, "counter")

    @driver.pipeline
    async def count(job: PipelineJob) -> None:
        n = job.request["start"]
        while True:                      # runs until stopped, replaced or cancelled
            await job.report({"count": n})
            n += job.request["step"]
            await asyncio.sleep(1)

What the runtime does: every request-stream entry of a job (``request``, ``update``, ``stop``,
``start``, ``cancel``) makes it read the job's record and bring what runs here in line with it,
one job at a time (a lock per job), so that no two revisions of a job ever run at once:

- the current revision, not stopped, not cancelled, not finished: it posts ``running`` (naming
  the revision) and starts the handler with the revision's request;
- a handler still running an older revision is cancelled first (it sees
  ``asyncio.CancelledError``) and that revision is reported ``stopped`` (retired: the update
  naming it changes only its history);
- ``desired_state`` ``stopped``: the handler is cancelled and the revision reported ``stopped``;
  ``start`` runs it again from its request;
- ``cancel_requested``: the handler is cancelled and the job reported ``cancelled``;
- a handler that returns ends the revision ``complete`` with its return value as the response;
  one that raises ends it ``failed`` with the error (the store then rolls back if the revision
  was submitted with ``rollback``: the new revision's ``update`` entry starts it here).

Resume: the entry that made a job live stays below the driver's resume mark until the job is
finished, so a restarted driver reads it again and restarts the job's current revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobqueue_store import codec
from jobqueue_store.errors import Conflict, StoreError, Unavailable
from jobqueue_store.models import JobRecord, Status

if TYPE_CHECKING:
    from jobqueue_store.client import StreamEntry
    from jobqueue_store.driver import Driver

__all__ = ["PipelineHandler", "PipelineJob", "PipelineRunner"]

log = logging.getLogger("jobqueue_store.pipelines")


class PipelineJob:
    """One revision of a long-running job, as its handler sees it."""

    __slots__ = ("_runner", "client", "datasource_id", "id", "request", "revision")

    def __init__(self, runner: PipelineRunner, record: JobRecord) -> None:
        self._runner = runner
        self.id: str = record.job
        self.client: str = record.client
        self.datasource_id: str = record.datasource_id
        self.request: Any = record.request
        self.revision: int = record.revision

    async def report(self, response: Any = None, *, progress: float | None = None) -> None:
        """Post ``running`` with ``response`` (and ``progress``) for this revision."""
        try:
            await self._runner.post(
                self.id,
                "running",
                self.revision,
                response=response,
                has_response=response is not None,
                progress=progress,
            )
        except Conflict as exc:  # finished meanwhile: the runtime is about to stop this handler
            log.info("job %s r%d: report refused: %s", self.id, self.revision, exc.message)

    def __repr__(self) -> str:
        return f"PipelineJob({self.id!r}, revision={self.revision})"


PipelineHandler = Callable[[PipelineJob], Awaitable[Any]]
"""A pipeline handler: runs one revision until cancelled; a return value ends it ``complete``."""


@dataclass
class _Live:
    """What runs here for one job."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    revision: int | None = None
    task: asyncio.Task[tuple[str, Any, str | None]] | None = None


class PipelineRunner:
    """Runs a :class:`~jobqueue_store.driver.Driver`'s pipeline handler (see the module doc)."""

    def __init__(self, driver: Driver, handler: PipelineHandler) -> None:
        self.driver = driver
        self.handler = handler
        self._jobs: dict[str, _Live] = {}

    # entries ------------------------------------------------------------------------------------
    async def entry(self, entry: StreamEntry) -> None:
        """Handle one request-stream entry: reconcile its job, then release the entry."""
        try:
            live_after = await self.reconcile(entry.job)
            if live_after:
                self.driver._anchors.setdefault(entry.job, entry.seq)
            else:
                self.driver._anchors.pop(entry.job, None)
        except Exception:
            log.exception("entry %d of job %s could not be handled", entry.seq, entry.job)
        finally:
            self.driver._done(entry.seq)

    async def reconcile(self, job: str) -> bool:
        """Bring what runs here for ``job`` in line with its record; whether it is still live."""
        live = self._jobs.setdefault(job, _Live())
        async with live.lock:
            record = await self.driver._persist(lambda: self._client().job(self._dsid(), job))
            await self._converge(live, record)
            return not record.terminal and not record.cancel_requested

    async def _converge(self, live: _Live, record: JobRecord) -> None:
        current = record.revision
        keep = (
            live.revision == current
            and not record.terminal
            and not record.cancel_requested
            and record.desired_state == "running"
        )
        if live.task is not None and not keep:
            await self._halt(live, record.job, stopped=live.revision != current)
        if record.terminal:
            return
        if record.cancel_requested:
            await self._post_quietly(
                record.job, "cancelled", current, error="cancelled by its client"
            )
            return
        if record.desired_state == "stopped":
            if record.status is not Status.STOPPED:
                await self._post_quietly(record.job, "stopped", current)
            return
        if live.task is None:
            await self._start(live, record)

    async def _halt(self, live: _Live, job: str, *, stopped: bool) -> None:
        """Stop the handler task; report a natural end it had reached, else (``stopped``) the
        revision retired."""
        task, revision = live.task, live.revision
        assert task is not None and revision is not None
        live.task, live.revision = None, None
        if task.done() and not task.cancelled() and task.exception() is None:
            status, response, error = task.result()
            await self._post_quietly(
                job,
                status,
                revision,
                response=response,
                has_response=status == "complete",
                error=error,
            )
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        log.info("job %s r%d stopped", job, revision)
        if stopped:
            await self._post_quietly(job, "stopped", revision)

    async def _start(self, live: _Live, record: JobRecord) -> None:
        now = await self._post_quietly(record.job, "running", record.revision)
        if now is None:
            return  # refused (finished meanwhile): the entry that finished it is on its way
        if now.revision != record.revision:
            # Replaced while starting: retire it at once; the update's entry starts the new one.
            await self._post_quietly(record.job, "stopped", record.revision)
            return
        log.info("job %s r%d running", record.job, record.revision)
        live.revision = record.revision
        task = asyncio.create_task(self._run(PipelineJob(self, record)))
        live.task = task
        task.add_done_callback(lambda t: self._ended(record.job, live, t))

    async def _run(self, job: PipelineJob) -> tuple[str, Any, str | None]:
        try:
            response = await self.handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("job %s r%d failed: %r", job.id, job.revision, exc)
            return "failed", None, f"{type(exc).__name__}: {exc}"
        try:
            codec.dumps(response)
        except TypeError as exc:
            return "failed", None, f"the handler's response is not JSON: {exc}"
        return "complete", response, None

    def _ended(self, job: str, live: _Live, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or live.task is not task:
            return  # stopped by a reconcile, which reported it
        self.driver._spawn(self._finish(job, live, task))

    async def _finish(self, job: str, live: _Live, task: asyncio.Task[Any]) -> None:
        async with live.lock:
            if live.task is not task:
                return
            await self._halt(live, job, stopped=False)

    # posting ------------------------------------------------------------------------------------
    def _client(self) -> Any:
        assert self.driver._client is not None
        return self.driver._client

    def _dsid(self) -> str:
        assert self.driver.dsid
        return self.driver.dsid

    async def post(
        self,
        job: str,
        status: str,
        revision: int,
        *,
        response: Any = None,
        has_response: bool = False,
        error: str | None = None,
        progress: float | None = None,
    ) -> JobRecord:
        """Post a status for ``revision`` of ``job``, waiting out store outages."""
        client, dsid = self._client(), self._dsid()
        if getattr(self.driver, "_lost", False):
            raise Unavailable("The worker slot was lost: this driver posts nothing more.")
        record: JobRecord = await self.driver._persist(
            lambda: client.update(
                dsid,
                job,
                status,
                response=response,
                has_response=has_response,
                error=error,
                progress=progress,
                revision=revision,
            )
        )
        return record

    async def _post_quietly(
        self, job: str, status: str, revision: int, **kw: Any
    ) -> JobRecord | None:
        """:meth:`post`, logging a refusal (a finished job, a stale view) instead of raising."""
        try:
            return await self.post(job, status, revision, **kw)
        except StoreError as exc:
            log.info("job %s r%d: %s refused: %s", job, revision, status, exc.message)
            return None

    async def close(self) -> None:
        """Cancel every handler (driver shutdown): the jobs run again after a restart."""
        tasks = [live.task for live in self._jobs.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
