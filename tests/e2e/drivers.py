"""Drivers the end-to-end tests run in real ``jobqueue-store run-driver`` processes.

``counting`` appends each job id it handles to the file named by ``COUNT_LOG`` (one line per run
of the handler), so a test can check that each job ran exactly once; a request with
``"progress": x`` reports that progress first, and one with ``"until": path`` then waits until
that file exists (so a test decides when the job ends, without timing).
"""

from __future__ import annotations

import asyncio
import os
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
