"""The store's Prometheus metrics (``GET /metrics``, admin tokens), kept with ``prometheus_client``.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (never the global one), so
several apps in one process (tests) do not collide. Families, by where their values come from:

- read from the database at scrape time, the same in every process sharing it:
  ``jobqueue_jobs{datasource,status}``, ``jobqueue_oldest_unfinished_job_age_seconds{datasource}``;
- observed from the committed log (every process sharing a PostgreSQL database observes every
  job): ``jobqueue_job_latency_seconds{datasource,status}``, submit to terminal status;
- this process only (sum over processes): ``jobqueue_http_requests_total{method,route,status}``,
  ``jobqueue_http_request_duration_seconds{method,route}`` (websockets excluded),
  ``jobqueue_driver_connected{datasource}`` (open driver request streams),
  ``jobqueue_driver_last_seen_timestamp_seconds{datasource}``, ``jobqueue_websockets``,
  ``jobqueue_subscriptions``, ``jobqueue_log_seq``, ``jobqueue_store_commits_total``,
  ``jobqueue_store_commit_batch_size`` and the standard ``process_*`` and ``python_*`` families.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobqueue_store.errors import StoreError
from jobqueue_store.models import Event, Role, Status
from jobqueue_store.schedules import ScheduleEvent

if TYPE_CHECKING:
    from jobqueue_store.auth import Principal
    from jobqueue_store.storage.base import DatasourceJobs, Store

__all__ = ["CONTENT_TYPE", "Metrics"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of the text exposition format."""

# ``*_created`` series double every counter and histogram for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WEBSOCKET_ROUTES = frozenset({"sub_client", "sub_driver"})
_INTEGRAL = re.compile(rb"^([^#\n][^\n]* -?[0-9]+)\.0$", re.M)


class _Requests(Collector):
    """Requests by route: a counter and a latency histogram, kept in plain dicts.

    Every request passes here, on the event loop's one thread: a dict lookup and a bisect cost
    a fraction of what ``prometheus_client``'s thread-safe values do (a lock per increment,
    several per observation); the families are built from these counts when scraped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        # (method, route) -> [count in each bucket (the last one +Inf), sum of seconds]
        self.seconds: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def add(self, method: str, route: str, status: int, seconds: float | None) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        if seconds is None or route in WEBSOCKET_ROUTES:
            return
        slot = self.seconds.get((method, route))
        if slot is None:
            slot = self.seconds[(method, route)] = ([0] * (len(REQUEST_BUCKETS) + 1), [0.0])
        slot[0][bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1
        slot[1][0] += seconds

    def collect(self) -> Iterable[Metric]:
        counter = CounterMetricFamily(
            "jobqueue_http_requests",
            "HTTP requests answered, by route and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), n in sorted(self.counts.items()):
            counter.add_metric([method, route, str(status)], n)
        histogram = HistogramMetricFamily(
            "jobqueue_http_request_duration_seconds",
            "Time to answer an HTTP request, by route (long polls included, websockets not).",
            labels=["method", "route"],
        )
        bounds = [floatToGoString(b) for b in REQUEST_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]
        for (method, route), (buckets, total) in sorted(self.seconds.items()):
            cumulative, running = [], 0
            for bound, n in zip(bounds, buckets, strict=True):
                running += n
                cumulative.append((bound, running))
            histogram.add_metric([method, route], cumulative, total[0])
        yield counter
        yield histogram


class _ScrapeCollector(Collector):
    """The families whose values are read when scraped: the store's job counts, the drivers'
    presence and the gauges registered with :meth:`Metrics.gauge`."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        stats, now = m.stats, m.stats_time
        jobs = GaugeMetricFamily(
            "jobqueue_jobs",
            "Jobs in the store, by datasource and status.",
            labels=["datasource", "status"],
        )
        oldest = GaugeMetricFamily(
            "jobqueue_oldest_unfinished_job_age_seconds",
            "Age of the datasource's oldest job not yet in a terminal status (0: none).",
            labels=["datasource"],
        )
        connected = GaugeMetricFamily(
            "jobqueue_driver_connected",
            "Driver request streams (websockets) open on this process for the datasource; 0: no "
            "driver is connected here.",
            labels=["datasource"],
        )
        last_seen = GaugeMetricFamily(
            "jobqueue_driver_last_seen_timestamp_seconds",
            "When this process last saw the datasource's driver (a request of a driver token, or "
            "an open request stream: then the scrape time). Absent: not seen since start.",
            labels=["datasource"],
        )
        for dsid, ds in sorted(stats.items()):
            for status in Status:
                jobs.add_metric([dsid, status.value], ds.counts.get(status, 0))
            age = 0.0
            if ds.oldest_unfinished_at is not None:
                age = max(0.0, now - ds.oldest_unfinished_at / 1000)
            oldest.add_metric([dsid], age)
            streams = m.driver_streams.get(dsid, 0)
            connected.add_metric([dsid], streams)
            seen = now if streams else m.driver_seen.get(dsid)
            if seen is not None:
                last_seen.add_metric([dsid], seen)
        yield from (jobs, oldest, connected, last_seen)
        yield GaugeMetricFamily(
            "jobqueue_store_read_ok",
            "1 if the job counts were read from the database at this scrape, 0 if it failed.",
            value=m.store_read_ok,
        )
        for name, (help_text, read) in sorted(m.gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=read())


class Metrics:
    """The metrics of one app: its registry, the hooks that feed it, and :meth:`scrape`."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.stats: dict[str, DatasourceJobs] = {}
        self.stats_time = 0.0
        self.store_read_ok = 1
        self.driver_streams: dict[str, int] = {}
        self.driver_seen: dict[str, float] = {}
        r = self.registry
        self.requests = _Requests()
        r.register(self.requests)
        self.job_seconds = Histogram(
            "jobqueue_job_latency_seconds",
            "Time from a job's submission to its terminal status, by datasource and status.",
            ["datasource", "status"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.commits = Counter(
            "jobqueue_store_commits", "Group commits of the store's writer.", registry=r
        )
        self.batch_size = Histogram(
            "jobqueue_store_commit_batch_size",
            "Writes committed together in one group commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        r.register(_ScrapeCollector(self))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # hooks ---------------------------------------------------------------------------------------
    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge whose value ``read()`` gives at scrape time."""
        self.gauges[name] = (help_text, read)

    def count_request(
        self, method: str, route: str, status: int, seconds: float | None = None
    ) -> None:
        """Count one answered request and, unless it was a websocket, its duration."""
        self.requests.add(method, route, status, seconds)

    def observe_commit(self, writes: int) -> None:
        """A group commit of ``writes`` writes (the store's commit observer)."""
        self.commits.inc()
        self.batch_size.observe(writes)

    def observe_events(self, events: Sequence[Event | ScheduleEvent]) -> None:
        """Committed events: a job's only terminal event gives its submit-to-terminal time."""
        for event in events:
            if isinstance(event, ScheduleEvent):
                continue
            record = event.record
            if record.terminal:
                self.job_seconds.labels(event.datasource_id, record.status.value).observe(
                    max(0, record.updated_at - record.submitted_at) / 1000
                )

    def observing(
        self, listener: Callable[[Sequence[Event | ScheduleEvent]], None]
    ) -> Callable[[Sequence[Event | ScheduleEvent]], None]:
        """``listener`` (the hub), with :meth:`observe_events` first."""

        def both(events: Sequence[Event | ScheduleEvent]) -> None:
            self.observe_events(events)
            listener(events)

        return both

    def presence(
        self, route: str | None, path: str, dsid: str | None, principal: Principal | None
    ) -> contextlib.AbstractContextManager[None] | None:
        """Around a request: a driver token's request on ``/jobs/<DSID>/...`` marks that
        datasource's driver seen; its request stream (``/sub/<DSID>/jobs``) counts as a
        connected driver for as long as it is open, in the context manager returned. ``None``:
        nothing to do around the request (a plain request needs no ``with``)."""
        if principal is None or principal.role is not Role.DRIVER or not dsid:
            return None
        if route == "sub_driver":
            return self._connected(dsid)
        if path.startswith("/jobs/"):
            self.driver_seen[dsid] = self.clock()
        return None

    @contextlib.contextmanager
    def _connected(self, dsid: str) -> Iterator[None]:
        self.driver_streams[dsid] = self.driver_streams.get(dsid, 0) + 1
        try:
            yield
        finally:
            self.driver_streams[dsid] -= 1
            self.driver_seen[dsid] = self.clock()

    # scrape --------------------------------------------------------------------------------------
    async def scrape(self, store: Store) -> bytes:
        """Read the store's job counts, then render every family (text format 0.0.4). A store
        that cannot be read leaves out the families read from it (``jobqueue_store_read_ok``
        says so) rather than failing the scrape: the process metrics matter most then."""
        try:
            self.stats = await store.job_stats()
            self.store_read_ok = 1
        except StoreError as exc:
            log.warning("metrics: the job counts could not be read: %s", exc.message)
            self.stats = {}
            self.store_read_ok = 0
        self.stats_time = self.clock()
        return self.render()

    def render(self) -> bytes:
        """The metrics as last read, in the text exposition format 0.0.4."""
        # Whole numbers without ".0" ("jobqueue_websockets 1"), as the first versions wrote them.
        return _INTEGRAL.sub(rb"\1", generate_latest(self.registry))
