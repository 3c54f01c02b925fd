"""The Celery application of the benchmark's Celery + Flower row (``bench/celery_row.py``).

Started by the harness as ``celery -A bench.celery_app worker`` and ``celery -A bench.celery_app
flower``; it needs the ``bench`` extra (``pip install '.[bench]'``). The broker is the Redis
database named by ``JOBQUEUE_STORE_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/15``). No
result backend: a task that ran is counted by the task itself, one ``INCR`` of a counter in that
same database, which the harness reads after each measure.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from bench.celery_row import COUNTER, READY, TASK, default_redis

BROKER = default_redis()

app = Celery("jqbench", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_redis: redis.Redis | None = None


@app.task(name=TASK)
def noop(n: int) -> None:
    """The trivial task: count one run."""
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(BROKER)
    _redis.incr(COUNTER)


@worker_ready.connect
def _say_ready(**_: Any) -> None:
    # Straight to file descriptor 1: the worker redirects sys.stdout into its logger.
    os.write(1, READY + b"\n")
