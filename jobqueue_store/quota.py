"""Per-client quotas: submits per second (a token bucket per client) and unfinished jobs.

The rate limit is per process: with several store processes behind a balancer a client may
submit up to ``processes x rate``. The unfinished-jobs limit is counted in the database, so it
holds across processes; it is checked before the write, so concurrent submits of one client may
overshoot it by the number of submits in flight (at most one per open connection).
"""

from __future__ import annotations

import time

from jobqueue_store.config import Limits
from jobqueue_store.errors import TooMany

UNFINISHED_RETRY_AFTER = 1.0
"""``Retry-After`` (seconds) when a client holds too many unfinished jobs: one may finish soon."""


class Quotas:
    """Per-client limits. ``submits_per_second`` 0 turns the rate limit off, and
    ``max_unfinished_jobs`` 0 the unfinished-jobs limit."""

    def __init__(
        self,
        submits_per_second: float = 0.0,
        burst: float | None = None,
        *,
        max_unfinished_jobs: int = 0,
    ) -> None:
        self.rate = submits_per_second
        self.burst = burst if burst is not None else max(1.0, 2 * submits_per_second)
        self.max_unfinished_jobs = max_unfinished_jobs
        self._buckets: dict[str, tuple[float, float]] = {}

    @classmethod
    def from_limits(cls, limits: Limits) -> Quotas:
        """The quotas that ``limits`` configure."""
        return cls(limits.submits_per_second, max_unfinished_jobs=limits.max_unfinished_jobs)

    def check_submit(self, client: str) -> None:
        """Take one submit from ``client``'s bucket or raise :class:`TooMany`."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            wait = (1 - tokens) / self.rate
            raise TooMany(
                f"Client '{client}' may submit {self.rate:g} jobs per second: retry in "
                f"{wait:.1f} s.",
                retry_after=wait,
            )
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > 100_000:
            self._buckets.clear()

    def check_unfinished(self, client: str, dsid: str, unfinished: int) -> None:
        """Raise :class:`TooMany` if ``client`` may not add a job to the ``unfinished`` ones it
        holds on datasource ``dsid``."""
        limit = self.max_unfinished_jobs
        if limit > 0 and unfinished >= limit:
            raise TooMany(
                f"Client '{client}' already has {unfinished} unfinished jobs on datasource "
                f"'{dsid}' (the limit is {limit}): retry when one has finished, or cancel one.",
                retry_after=UNFINISHED_RETRY_AFTER,
            )
