"""Micro-benchmarks of the request path, layer by layer, beside the bare handler's.

Run: ``.venv/bin/python -m bench.layers [--calls 20000] [--rounds 5]``. In-process, no socket:
each layer of a status GET and of a durable submit is timed on its own (microseconds per call,
median of the rounds), next to what the baseline (``bench.baseline``) pays for the same step, so
that what the store adds can be read off one table:

- route match: the store's dispatcher (``web/dispatch.py``, what serves requests) and aiohttp's
  router on the store's routes (what served them before), against the baseline's router;
- the token check (extract, verify through the cache, authorize the path);
- the middleware's own work around a handler (metrics, audit, timing);
- the service and store read of a status GET (the stored record text), from the record cache
  and from SQLite itself (a store opened with ``record_cache=0``);
- building the response.

It needs a store to read from: it builds a SQLite store of ``--jobs`` jobs in a temporary
directory (through ``SQLiteStore``, like ``bench.populate``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bench import baseline
from bench.populate import populate
from jobqueue_store import audit, codec
from jobqueue_store.auth import TokenAuthority, extract_token
from jobqueue_store.config import Settings
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import Role
from jobqueue_store.storage.sqlite import SQLiteStore
from jobqueue_store.web.app import create_app
from jobqueue_store.web.dispatch import Dispatcher
from jobqueue_store.web.keys import AUTHORITY, METRICS, PRINCIPAL, SERVICE
from jobqueue_store.web.middleware import authenticate
from jobqueue_store.web.responses import json_response, json_text_response

DSID = "bench"


def _median_us(rounds: list[float], calls: int) -> float:
    return statistics.median(rounds) / calls * 1e6


async def _time_async(fn: Callable[[], Awaitable[Any]], calls: int, rounds: int) -> float:
    for _ in range(min(calls, 1000)):
        await fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            await fn()
        times.append(time.perf_counter() - start)
    return _median_us(times, calls)


def _time_sync(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    for _ in range(min(calls, 1000)):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append(time.perf_counter() - start)
    return _median_us(times, calls)


def baseline_app() -> web.Application:
    """The bare handler's application (``bench.baseline``'s routes)."""
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", baseline.post)
    app.router.add_route("GET", "/{tail:.*}", baseline.get)
    return app


async def measure(calls: int, rounds: int, jobs: int) -> list[tuple[str, float, float | None]]:
    """``(layer, store us, baseline us or None)`` rows."""
    work = Path(tempfile.mkdtemp(prefix="jq-layers-"))
    await populate(work / "jobqueue.sqlite3", DSID, jobs, prefix="pre")
    settings = Settings(data_dir=work)
    authority = TokenAuthority(KeyRing.load_or_create(work), settings.name)
    app = create_app(settings, authority=authority)
    for hook in app.on_startup:
        await hook(app)
    token = authority.mint(Role.CLIENT, client="app")
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/{DSID}/job/pre-{jobs // 2}/"
    base = baseline_app()
    app.freeze()
    base.freeze()
    rows: list[tuple[str, float, float | None]] = []
    try:

        def req(target: web.Application, method: str = "GET", p: str = path) -> web.Request:
            return make_mocked_request(method, p, headers=headers, app=target)

        store_get, base_get = req(app), req(base)
        store_post = req(app, "POST", f"/{DSID}/job/")
        dispatcher = Dispatcher(app)
        base_match = await _time_async(lambda: base.router.resolve(base_get), calls, rounds)
        for label, method, target in (
            ("status GET", "GET", path),
            ("submit POST", "POST", f"/{DSID}/job/"),
        ):
            rows.append(
                (
                    f"route match, {label} (dispatcher)",
                    _time_sync(
                        lambda m=method, t=target: dispatcher.match(m, t),  # type: ignore[misc]
                        calls,
                        rounds,
                    ),
                    base_match,
                )
            )
        rows.append(
            (
                "route match, status GET (aiohttp router, before)",
                await _time_async(lambda: app.router.resolve(store_get), calls, rounds),
                base_match,
            )
        )
        rows.append(
            (
                "route match, submit POST (aiohttp router, before)",
                await _time_async(lambda: app.router.resolve(store_post), calls, rounds),
                base_match,
            )
        )
        match = await app.router.resolve(store_get)
        match.add_app(app)
        store_get._match_info = match
        rows.append(
            (
                "token: extract",
                _time_sync(
                    lambda: extract_token(store_get.headers, store_get.query, False), calls, rounds
                ),
                None,
            )
        )
        auth = app[AUTHORITY]
        rows.append(
            ("token: verify (cached)", _time_sync(lambda: auth.verify(token), calls, rounds), None)
        )
        principal = auth.verify(token)
        rows.append(
            (
                "token: authorize path",
                _time_sync(
                    lambda: auth.authorize(
                        principal, method="GET", path=store_get.raw_path, dsid=DSID
                    ),
                    calls,
                    rounds,
                ),
                None,
            )
        )
        rows.append(
            (
                "authenticate (all of it)",
                _time_sync(lambda: authenticate(store_get), calls, rounds),
                None,
            )
        )
        store_get[PRINCIPAL] = principal
        metrics = app[METRICS]

        def middleware_own() -> None:
            started = time.perf_counter()
            with metrics.presence("job_status", store_get.path, DSID, principal):
                pass
            metrics.count_request("GET", "job_status", 200, time.perf_counter() - started)
            audit.emit(store_get, 200, None, principal)

        rows.append(
            ("middleware: metrics + audit (GET)", _time_sync(middleware_own, calls, rounds), None)
        )
        service = app[SERVICE]
        job = f"pre-{jobs // 2}"
        rows.append(
            (
                "service + store: status read (record cache)",
                await _time_async(lambda: service.status_wire(principal, DSID, job), calls, rounds),
                None,
            )
        )
        uncached = SQLiteStore(work / "jobqueue.sqlite3", record_cache=0)
        await uncached.open()
        try:
            rows.append(
                (
                    "store: status read from SQLite (no record cache)",
                    await _time_async(lambda: uncached.get_job_wire(DSID, job), calls, rounds),
                    None,
                )
            )
        finally:
            await uncached.close()
        rows.append(
            (
                "store: decoded record (before)",
                await _time_async(lambda: service.store.get_job(DSID, job), calls, rounds),
                None,
            )
        )
        text = await service.status_wire(principal, DSID, job)
        rows.append(
            (
                "response: from stored text",
                _time_sync(lambda: json_text_response(text), calls, rounds),
                _time_sync(
                    lambda: web.Response(
                        body=codec.dumps({"job": job, "status": "submitted", "version": 1}),
                        content_type="application/json",
                    ),
                    calls,
                    rounds,
                ),
            )
        )
        value = codec.loads(text)
        rows.append(
            (
                "response: encode a record (before)",
                _time_sync(lambda: json_response(value), calls, rounds),
                None,
            )
        )
    finally:
        for hook in app.on_cleanup:
            await hook(app)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.calls, args.rounds, args.jobs))
    print("| layer | store us | baseline us |")
    print("|---|---:|---:|")
    for name, mine, theirs in rows:
        print(f"| {name} | {mine:.2f} | {'-' if theirs is None else f'{theirs:.2f}'} |")


if __name__ == "__main__":
    main()
