"""Drivers the end-to-end tests run in real ``jobqueue-store run-driver`` processes.

``counting`` appends each job id it handles to the file named by ``COUNT_LOG`` (one line per run
of the handler), so a test can check that each job ran exactly once; a request with
``"progress": x`` reports that progress first, and one with ``"until": path`` then waits until
that file exists (so a test decides when the job ends, without timing).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from jobqueue_store.driver import Driver, Job

counting = Driver(description="counts its runs", concurrency=2)


@counting.handler
async def count(job: Job) -> Any:
    """Record the run, report progress if asked, and echo the request back."""
    with open(os.environ["COUNT_LOG"], "a") as log:
        log.write(job.id + "\n")
    request = job.request if isinstance(job.request, dict) else {}
    if "progress" in request:
        await job.progress(request["progress"])
    if "until" in request:
        until = Path(request["until"])
        while not await asyncio.to_thread(until.exists):  # noqa: ASYNC110 (a test creates it)
            await asyncio.sleep(0.02)
    return {"echo": job.request}


leased = Driver(description="records its runs", concurrency=16)
"""For lease datasources: appends ``start <job> <attempt> <time>`` to the file named by
``RUN_LOG`` when its handler starts a job, and ``done <job> <status> <time>`` once the store has
recorded the job's final status from this process. A request ``{"sleep": s}`` runs for s
seconds."""


def _record(*fields: object) -> None:
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(" ".join(str(f) for f in (*fields, f"{time.time():.4f}")) + "\n")


@leased.handler
async def run_leased(job: Job) -> Any:
    """Record the start, sleep as asked, answer."""
    _record("start", job.id, job.attempt)
    request = job.request if isinstance(job.request, dict) else {}
    await asyncio.sleep(float(request.get("sleep", 0)))
    return {"ran": job.id}


@leased.on_outcome
def leased_done(job: str, status: str) -> None:
    """Record the outcome the store accepted."""
    _record("done", job, status)
