"""A long-running job (a pipeline): a counter that reports its count while it runs.

    JOBQUEUE_STORE_TOKEN=<driver token> jobqueue-store run-driver \\
        examples/counter_pipeline.py:driver

It serves datasource ``counter``. A job's request is ``{"start": <int>, "step": <int>, "every":
<seconds>}``: the handler counts from ``start`` by ``step``, reporting ``{"count": n}`` (status
``running``) every ``every`` seconds, until it is stopped, updated or cancelled. A ``step`` of 0
is refused: the revision fails, and with ``--rollback`` the store rolls back to the last revision
that ran. See the README's section on long-running jobs for a walkthrough.
"""

from __future__ import annotations

import asyncio
import os

from jobqueue_store.driver import Driver
from jobqueue_store.pipelines import PipelineJob

REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "start": {"type": "integer"},
        "step": {"type": "integer"},
        "every": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    },
    "additionalProperties": False,
}

driver = Driver(
    os.environ.get("JOBQUEUE_STORE_URL", "http://127.0.0.1:8080"),
    os.environ.get("JOBQUEUE_STORE_TOKEN"),
    os.environ.get("JOBQUEUE_STORE_DSID", "counter"),
    description="counts while it runs (a pipeline)",
    request_schema=REQUEST_SCHEMA,
)


@driver.pipeline
async def count(job: PipelineJob) -> None:
    """Count until cancelled (a stop, an update or a cancel cancels this task)."""
    step = job.request.get("step", 1)
    if step == 0:
        raise ValueError("step must not be 0")
    n = job.request.get("start", 0)
    every = job.request.get("every", 1.0)
    while True:
        await job.report({"count": n})
        n += step
        await asyncio.sleep(every)


if __name__ == "__main__":
    driver.run_forever()
