"""The Celery + Flower row: tasks submitted through Flower's HTTP API, in the store's rounds.

What it measures: ``POST /api/task/async-apply/bench.noop`` with the fixed body
``{"args": [1]}`` (wrk, like the store's durable submit), against Flower (``celery -A
bench.celery_app flower``, pinned to the store's core) with a Redis broker and one Celery worker
(``--pool solo``, pinned to the store's core too). Redis is the machine's own server (not pinned:
it is not the harness's process); its database (default ``redis://127.0.0.1:6379/15``, or
``JOBQUEUE_STORE_BENCH_REDIS``, or ``--celery-redis``) is flushed before and after, so it must be
one kept for the benchmark. After each measure the harness waits until the worker has run every
queued task, and counts the runs (the task increments a Redis counter): the row says how many of
the accepted submits ran.

Everything here is optional: it needs the ``bench`` extra (``celery[redis]``, ``flower``); without
it, or without Redis, :func:`unavailable` gives the one-line reason the harness prints instead of
the row. This module imports neither celery nor redis at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.load import Load, LoadResult, pinned
from bench.procs import PYTHON, Proc, free_port

REDIS_ENV = "JOBQUEUE_STORE_BENCH_REDIS"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
APP = "bench.celery_app"
TASK = "bench.noop"
"""The task's name, as Flower's ``/api/task/async-apply/<name>`` takes it."""
COUNTER = "jqbench:celery:ran"
"""The Redis key every run of the task increments."""
QUEUE = "celery"
"""Celery's default queue: a Redis list in the broker's database."""
READY = b"jqbench celery worker ready"
"""The line the worker prints once it consumes."""
BODY = '{"args": [1]}'
LABEL = "task submit, Celery + Flower (Redis broker, 1 worker)"
"""The row's measure (followed by whether every accepted task ran)."""
CELERY_COMMAND = str(Path(PYTHON).with_name("celery"))
INSTALL_HINT = "`make bench` or `.venv/bin/pip install -e '.[bench]'`"

Measure = Callable[[str, Load, str], Awaitable[LoadResult]]
"""The harness's load runner: ``(url, load, token) -> result``."""


def default_redis() -> str:
    """The broker URL: ``JOBQUEUE_STORE_BENCH_REDIS`` or :data:`DEFAULT_REDIS`."""
    return os.environ.get(REDIS_ENV, DEFAULT_REDIS)


def missing() -> str | None:
    """Why the row cannot run on this install (a sentence), or ``None``."""
    for module in ("celery", "flower", "redis"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({INSTALL_HINT})"
    if not Path(CELERY_COMMAND).exists():
        return f"no {CELERY_COMMAND} ({INSTALL_HINT})"
    return None


def redis_db(url: str) -> int | None:
    """The database number in a ``redis://host:port/N`` URL, ``None`` when it names none."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else None


async def unavailable(url: str) -> str | None:
    """Why the row cannot run against the broker ``url`` (one line), or ``None``."""
    reason = missing()
    if reason:
        return reason
    if not redis_db(url):
        return (
            f"{url} names no dedicated Redis database (redis://host:port/N, N > 0): it is flushed"
        )
    import redis
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {url} does not answer ({exc})"
    finally:
        await client.aclose()
    return None


def numbers(results: list[LoadResult]) -> dict[str, Any]:
    """The row's own figures, from the rounds' :meth:`CeleryFlower.measure` results."""
    accepted = [r.requests for r in results]
    ran = [int(r.extra.get("tasks_ran", 0)) for r in results]
    return {
        "accepted_per_round": accepted,
        "tasks_ran_per_round": ran,
        "backlog_at_end_per_round": [r.extra.get("backlog_at_end") for r in results],
        "drain_seconds_per_round": [r.extra.get("drain_seconds") for r in results],
        # Ran can exceed accepted: requests still in flight when the load stopped were
        # published but not counted by the load generator.
        "every_task_ran": all(
            r.extra.get("drained") and n >= a
            for r, n, a in zip(results, ran, accepted, strict=True)
        ),
    }


def note(figures: dict[str, Any]) -> str:
    """What the row's label adds: whether every accepted task ran."""
    if figures["every_task_ran"]:
        return ": every accepted task ran"
    ran, accepted = sum(figures["tasks_ran_per_round"]), sum(figures["accepted_per_round"])
    return f": **only {ran:,} of {accepted:,} accepted tasks ran**"


class CeleryFlower:
    """Flower and one Celery worker on the broker ``redis_url``; the counter of tasks that ran."""

    def __init__(self, redis_url: str, *, flower_core: int | None, worker_core: int | None) -> None:
        import redis.asyncio as aioredis

        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, REDIS_ENV: redis_url, "FLOWER_UNAUTHENTICATED_API": "true"}
        self.worker = Proc(
            "celery worker",
            pinned(
                [
                    CELERY_COMMAND,
                    "-A",
                    APP,
                    "worker",
                    "--pool",
                    "solo",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                worker_core,
            ),
            ready=READY,
            env=env,
        )
        self.flower = Proc(
            "flower",
            pinned(
                [
                    CELERY_COMMAND,
                    "-A",
                    APP,
                    "flower",
                    f"--port={self.port}",
                    "--address=127.0.0.1",
                    # Flower as an HTTP front only: no event capture (its monitoring), no
                    # per-request access log.
                    "--enable_events=False",
                    "--logging=warning",
                ],
                flower_core,
            ),
            ready=None,
            env=env,
        )
        self.redis: Any = aioredis.Redis.from_url(redis_url)

    def load(self) -> Load:
        """The request wrk repeats: a constant-body POST (``walk`` with no ``{id}``/``{n}``)."""
        return Load("walk", "POST", f"/api/task/async-apply/{TASK}", body=BODY)

    async def start(self) -> None:
        """Flush the broker's database, start the worker, then Flower; wait until it answers."""
        await self.redis.flushdb()
        await self.worker.start()
        await self.flower.start()
        async with asyncio.timeout(60), aiohttp.ClientSession() as session:
            while True:
                assert self.flower.proc is not None
                if self.flower.proc.returncode is not None:
                    raise RuntimeError("flower exited:\n" + "\n".join(self.flower.tail))
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/healthcheck") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)

    async def ran(self) -> int:
        """How many tasks have run since :meth:`start`."""
        value = await self.redis.get(COUNTER)
        return int(value or 0)

    async def queued(self) -> int:
        """Tasks in the broker not yet taken, plus those taken and not yet acknowledged."""
        waiting = await self.redis.llen(QUEUE)
        unacked = await self.redis.hlen("unacked")
        return int(waiting) + int(unacked)

    async def settle(self, timeout: float) -> tuple[int, float, bool]:
        """Wait until the queue is empty and the counter still; ``(ran, seconds, settled)``."""
        began = time.monotonic()
        last, still_since = -1, began
        while time.monotonic() - began < timeout:
            ran, queued = await self.ran(), await self.queued()
            now = time.monotonic()
            if ran != last or queued:
                last, still_since = ran, now
            elif now - still_since >= 0.3:
                return ran, now - began, True
            await asyncio.sleep(0.05)
        return await self.ran(), time.monotonic() - began, False

    async def measure(self, load: Measure, *, drain_timeout: float) -> LoadResult:
        """One load on Flower, then the drain; ``extra`` says how many tasks ran."""
        before = await self.ran()
        result = await load(self.url, self.load(), "")
        backlog = await self.queued()
        after, seconds, settled = await self.settle(drain_timeout)
        result.extra.update(
            tasks_ran=after - before,
            backlog_at_end=backlog,
            drain_seconds=seconds,
            drained=settled,
        )
        return result

    async def stop(self) -> None:
        """Stop Flower and the worker; flush the database."""
        try:
            await self.flower.stop()
            await self.worker.stop()
        finally:
            with contextlib.suppress(Exception):
                await self.redis.flushdb()
            await self.redis.aclose()
