"""The aiohttp application: routes, middlewares, start-up and shutdown."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from jobqueue_store.auth import TokenAuthority
from jobqueue_store.config import Settings
from jobqueue_store.hub import Hub
from jobqueue_store.keys import KeyRing
from jobqueue_store.metrics import Metrics
from jobqueue_store.quota import Quotas
from jobqueue_store.retention import Retention
from jobqueue_store.service import JobService
from jobqueue_store.storage import open_store
from jobqueue_store.storage.base import Store
from jobqueue_store.timers import TimerLoop
from jobqueue_store.web import driver_handlers, handlers, pipeline_handlers, ui, ws
from jobqueue_store.web import schedule_handlers as sh
from jobqueue_store.web.keys import (
    AUTHORITY,
    HUB,
    METRICS,
    SERVICE,
    SETTINGS,
    STORE,
    SUBSCRIBERS,
)
from jobqueue_store.web.middleware import store_middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_keyring(settings: Settings) -> KeyRing:
    """The root keys: from ``settings.root_key`` (shared by processes) or the data dir's file."""
    if settings.root_key:
        return KeyRing.from_env(settings.root_key)
    return KeyRing.load_or_create(settings.data_dir)


def _route(app: web.Application, method: str, path: str, handler: Handler, name: str) -> None:
    """Add ``path``, matched with and without a trailing slash (protocol.md §3)."""
    app.router.add_route(method, path + "{trailing_slash:/?}", handler, name=name)


def add_routes(app: web.Application) -> None:
    """Every endpoint of protocol.md §5, §6, §13, the websockets included."""
    # aiohttp tries the routes of one path prefix in the order they were added: the busiest come
    # first (a route is a regular expression to try on every request that reaches it).
    _route(app, "GET", "/{dsid}/job/{job}", handlers.job_status, "job_status")
    _route(app, "POST", "/{dsid}/job", handlers.submit, "submit")
    _route(app, "POST", "/{dsid}/job/{job}/cancel", handlers.cancel, "cancel")
    _route(app, "DELETE", "/{dsid}/job/{job}", handlers.cancel, "delete_job")
    _route(app, "GET", "/{dsid}/job", handlers.list_jobs, "list_jobs")
    _route(app, "PUT", "/{dsid}/job/{job}", pipeline_handlers.revise, "revise_job")
    _route(app, "POST", "/{dsid}/job/{job}/stop", pipeline_handlers.stop, "stop_job")
    _route(app, "POST", "/{dsid}/job/{job}/start", pipeline_handlers.start, "start_job")
    _route(app, "GET", "/{dsid}/job/{job}/revisions", pipeline_handlers.revisions, "revisions")
    _route(app, "POST", "/jobs/{dsid}/job/{job}", handlers.update_status, "update_status")
    _route(app, "GET", "/jobs/{dsid}/job/{job}", handlers.driver_job, "driver_job")
    _route(app, "POST", "/jobs/{dsid}/claim", driver_handlers.claim, "claim")
    _route(app, "POST", "/jobs/{dsid}/job/{job}/heartbeat", driver_handlers.heartbeat, "heartbeat")
    _route(app, "GET", "/jobs/{dsid}/latest", handlers.latest, "latest")
    _route(app, "GET", "/jobs/{dsid}/since/{time}", handlers.since, "since")
    _route(app, "PUT", "/jobs/{dsid}", handlers.put_datasource, "put_datasource")
    _route(app, "POST", "/jobs/{dsid}/worker", driver_handlers.take_slot, "take_slot")
    _route(app, "POST", "/jobs/{dsid}/worker/heartbeat", driver_handlers.renew_slot, "renew_slot")
    _route(app, "DELETE", "/jobs/{dsid}/worker", driver_handlers.release_slot, "release_slot")
    _route(app, "POST", "/{dsid}/schedule", sh.create, "create_schedule")
    _route(app, "GET", "/{dsid}/schedule", sh.list_schedules, "list_schedules")
    _route(app, "GET", "/{dsid}/schedule/{sid}", sh.get, "get_schedule")
    _route(app, "DELETE", "/{dsid}/schedule/{sid}", sh.delete, "delete_schedule")
    _route(app, "GET", "/{dsid}/schedule/{sid}/runs", sh.runs, "schedule_runs")
    _route(app, "POST", "/{dsid}/schedule/{sid}/pause", sh.pause, "pause_schedule")
    _route(app, "POST", "/{dsid}/schedule/{sid}/resume", sh.resume, "resume_schedule")
    _route(app, "DELETE", "/{dsid}/schedule/{sid}/run/{job}", sh.cancel_run, "cancel_run")
    _route(app, "GET", "/healthz", handlers.healthz, "healthz")
    _route(app, "GET", "/readyz", handlers.readyz, "readyz")
    _route(app, "GET", "/metrics", handlers.metrics, "metrics")
    _route(app, "GET", "/openapi.json", handlers.openapi_document, "openapi")
    _route(app, "GET", "/cat", handlers.catalogue, "catalogue")
    _route(app, "GET", "/sub/{dsid}/job", ws.client_subscription, "sub_client")
    _route(app, "GET", "/sub/{dsid}/jobs", ws.driver_subscription, "sub_driver")
    ui.add_routes(app)  # the dashboard: /ui/ and its own files only


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    authority: TokenAuthority | None = None,
) -> web.Application:
    """The store's application. ``store`` and ``authority`` default to those of ``settings``."""
    app = web.Application(
        client_max_size=settings.limits.max_body,
        middlewares=[store_middleware],
    )
    hub = Hub()
    the_store = store or open_store(
        settings.database, data_dir=settings.data_dir, synchronous=settings.synchronous
    )
    the_authority = authority or TokenAuthority(
        load_keyring(settings), settings.name, cache_size=settings.token_cache_size
    )
    metrics = Metrics()
    service = JobService(the_store, hub, Quotas.from_limits(settings.limits))
    app[SETTINGS] = settings
    app[STORE] = the_store
    app[HUB] = hub
    app[AUTHORITY] = the_authority
    app[METRICS] = metrics
    app[SERVICE] = service
    subscribers = ws.Subscribers(settings.limits)
    app[SUBSCRIBERS] = subscribers
    metrics.gauge(
        "jobqueue_log_seq", "The largest seq published by this process.", lambda: hub.last_seq
    )
    metrics.gauge(
        "jobqueue_subscriptions",
        "Open hub subscriptions in this process.",
        lambda: hub.subscriber_count,
    )
    metrics.gauge(
        "jobqueue_websockets",
        "Open subscription websockets in this process.",
        lambda: len(subscribers),
    )
    add_routes(app)

    retention = Retention(the_store, settings.retention_days)
    timers = TimerLoop(the_store)
    metrics.gauge(
        "jobqueue_timers_fired",
        "Due items (lease expiries, deadlines, grace ends) fired by this process.",
        lambda: timers.fired,
    )

    async def open_store_on_startup(app: web.Application) -> None:
        the_store.set_listener(metrics.observing(hub.publish))
        the_store.set_commit_observer(metrics.observe_commit)
        await the_store.open()
        retention.start()
        timers.start()

    async def close_websockets_on_shutdown(app: web.Application) -> None:
        await subscribers.close_all()

    async def stop_waits_on_shutdown(app: web.Application) -> None:
        service.stop_waiting()

    async def close_store_on_cleanup(app: web.Application) -> None:
        await timers.stop()
        await retention.stop()
        await the_store.close()

    app.on_startup.append(open_store_on_startup)
    app.on_shutdown.append(close_websockets_on_shutdown)
    app.on_shutdown.append(stop_waits_on_shutdown)
    app.on_cleanup.append(close_store_on_cleanup)
    return app
