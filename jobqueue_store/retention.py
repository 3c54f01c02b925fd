"""Retention: a background task that purges old terminal jobs and their log entries.

Every ``interval_s`` seconds the task calls :meth:`Store.purge
<jobqueue_store.storage.base.Store.purge>` with ``older_than = now - retention_days``, in batches
of ``batch`` jobs until a call deletes fewer than that. Unfinished jobs are never purged, whatever
their age, and neither are the events of the jobs kept. ``retention_days <= 0`` disables the task.

Several store processes sharing one PostgreSQL database may each run it: every purge takes the
log lock, so purges and writes are serialised. A purge that fails (database unreachable) is logged
and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from jobqueue_store.errors import StoreError
from jobqueue_store.models import now_ms
from jobqueue_store.storage.base import Store

__all__ = ["DAY_MS", "Retention"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
"""Milliseconds in a day."""


class Retention:
    """The periodic purge of terminal jobs older than ``retention_days`` from ``store``.

    ``batch`` is the ``limit`` of each purge call: it bounds how long one purge holds the write
    path (writes wait for it). ``clock`` returns the current time in milliseconds (tests move it).
    """

    def __init__(
        self,
        store: Store,
        retention_days: float,
        interval_s: float = 60.0,
        *,
        batch: int = 1000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"The purge interval must be positive, not {interval_s}.")
        if batch < 1:
            raise ValueError(f"The purge batch must be at least 1, not {batch}.")
        self.store = store
        self.retention_days = retention_days
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self.purged = 0
        """Jobs purged by this object so far."""
        self.runs = 0
        """Completed purge runs (each one or more purge calls)."""
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether jobs are purged at all (``retention_days > 0``)."""
        return self.retention_days > 0

    def cutoff_ms(self) -> int:
        """Terminal jobs last updated before this time (ms) are purged now."""
        return self.clock() - round(self.retention_days * DAY_MS)

    async def run_once(self) -> int:
        """Purge everything due now, batch after batch; return how many jobs were purged."""
        if not self.enabled:
            return 0
        cutoff = self.cutoff_ms()
        total = 0
        while True:
            deleted = await self.store.purge(cutoff, limit=self.batch)
            total += deleted
            self.purged += deleted
            if deleted < self.batch:
                break
        self.runs += 1
        if total:
            log.info(
                "retention purged %d terminal jobs last updated before %d (%g days)",
                total,
                cutoff,
                self.retention_days,
            )
        return total

    def start(self) -> None:
        """Start the periodic task (a first run at once); nothing if disabled or started."""
        if not self.enabled or self._task is not None:
            return
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        """Stop the periodic task. A purge call already queued to the store's writer still
        commits (or not) as a whole: the store is never left with half a purge."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning(
                    "retention purge failed, retrying in %gs: %s", self.interval_s, exc.message
                )
            except Exception:
                log.exception("retention purge failed, retrying in %gs", self.interval_s)
            await asyncio.sleep(self.interval_s)
