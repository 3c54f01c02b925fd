"""Time, and the one mechanism that fires everything that comes due later.

Every time-driven change of the store (a job lease that expires, a deadline's cancel request and
the end of its grace, and later schedules) is a **due time stored with its row** (the ``due_at``
column of ``jobs``, indexed). One background task per store process, :class:`TimerLoop`, calls
:meth:`Store.fire_due <jobqueue_store.storage.base.Store.fire_due>` every ``interval`` seconds:
the store picks the rows whose due time has passed and applies the rule of each
(:func:`jobqueue_store.leases.decide_fire`) as an ordinary write, one event in the log each,
published to subscribers as usual. Nothing lives only in memory, so a store restarted after a
while fires, at its first round, what came due while it was down.

On SQLite the round is a command of the single writer. On PostgreSQL several processes run it
at once: each round locks its due rows with ``FOR UPDATE SKIP LOCKED`` inside a write
transaction that also holds the log lock, and decides against the committed row, so each due
item fires exactly once.

Time comes from a :class:`Clock` passed to the store (and the service): tests pass a
:class:`ManualClock` and move it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from jobqueue_store.errors import StoreError
from jobqueue_store.models import now_ms

log = logging.getLogger(__name__)

__all__ = ["Clock", "Firer", "ManualClock", "SystemClock", "TimerLoop"]


class Clock(Protocol):
    """Where the store reads the time."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, now."""
        return now_ms()


class ManualClock:
    """A clock that moves only when told to (tests). Starts at the wall clock's time."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._now = now_ms() if start_ms is None else start_ms

    def now_ms(self) -> int:
        """The clock's current time in ms."""
        return self._now

    def advance(self, ms: int) -> int:
        """Move the clock ``ms`` milliseconds forward; return the new time."""
        if ms < 0:
            raise ValueError("A clock never goes back.")
        self._now += ms
        return self._now


class Firer(Protocol):
    """What the timer loop drives: a store's :meth:`fire_due`."""

    async def fire_due(self, limit: int = 500) -> int:
        """Fire what is due now (at most ``limit`` items); return how many events fired."""
        ...


class TimerLoop:
    """The background task that fires due items of ``store`` every ``interval`` seconds.

    A round calls :meth:`Firer.fire_due` until it fires fewer than ``batch`` items. A failed
    round (database unreachable) is logged and retried at the next interval.
    """

    def __init__(self, store: Firer, interval: float = 0.25, *, batch: int = 500) -> None:
        if interval <= 0:
            raise ValueError(f"The timer interval must be positive, not {interval}.")
        self.store = store
        self.interval = interval
        self.batch = batch
        self.fired = 0
        """Events fired by this loop so far."""
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """One round: fire everything due now; return how many events fired."""
        total = 0
        while True:
            fired = await self.store.fire_due(self.batch)
            total += fired
            if fired < self.batch:
                break
        self.fired += total
        return total

    def start(self) -> None:
        """Start the loop (a first round at once); nothing if started."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="timers")

    async def stop(self) -> None:
        """Stop the loop; a round already queued to the store commits whole or not at all."""
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
                log.warning("firing due timers failed, retrying: %s", exc.message)
            except Exception:
                log.exception("firing due timers failed, retrying")
            await asyncio.sleep(self.interval)
