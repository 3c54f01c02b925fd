"""Per-client quotas: submits per second (a token bucket per client)."""

from __future__ import annotations

import time

from jobqueue_store.errors import TooMany


class Quotas:
    """Submit rate limits per client; ``submits_per_second`` 0 turns them off."""

    def __init__(self, submits_per_second: float = 0.0, burst: float | None = None) -> None:
        self.rate = submits_per_second
        self.burst = burst if burst is not None else max(1.0, 2 * submits_per_second)
        self._buckets: dict[str, tuple[float, float]] = {}

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
