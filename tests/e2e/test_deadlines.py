"""Deadlines in real processes: a job its driver ignores is asked to cancel at its deadline and
ended ``cancelled`` after the grace, though the store was down when each came due.

The store is stopped before the deadline and started after it, then stopped again before the
grace ends and started after it: a restarted store fires what came due while it was down, once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jobqueue_store.client import DriverClient, JobClient
from tests.e2e.conftest import StoreProcess

DSID = "dl"
TIMEOUT = 2
GRACE = 5


async def _sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


@pytest.mark.timeout(60)
async def test_ignored_job_is_cancelled_at_its_deadline_across_restarts(
    store_proc: StoreProcess,
) -> None:
    client_token = store_proc.token("client", "app")
    driver_token = store_proc.token("driver")
    async with DriverClient(store_proc.url, driver_token) as drv:
        await drv.put_datasource(DSID, "deadlines", cancel_grace=GRACE)
        async with JobClient(store_proc.url, client_token) as client:
            record = await client.submit(DSID, {"x": 1}, "slow", timeout=TIMEOUT)
        # The driver accepts the job, then ignores it (and every cancel request).
        await drv.update(DSID, "slow", "accepted")
    deadline = record.submitted_at / 1000 + TIMEOUT

    store_proc.stop()  # down when the deadline passes
    await _sleep_until(deadline + 0.3)
    store_proc.start()
    async with (
        DriverClient(store_proc.url, driver_token) as drv,
        JobClient(store_proc.url, client_token) as client,
    ):
        for _ in range(100):  # the restarted store fires the deadline soon after it starts
            record = await client.status(DSID, "slow")
            if record.cancel_requested:
                break
            await asyncio.sleep(0.05)
        assert record.cancel_requested and record.status.value == "accepted", record
        entries = await drv.since(DSID, 0)
        cancels = [e for e in entries if e.type == "cancel"]
        assert len(cancels) == 1 and cancels[0].data.get("reason") == "timeout", entries
        assert cancels[0].job == "slow"

    store_proc.stop()  # down again when the grace ends
    await _sleep_until(deadline + GRACE + 0.3)
    store_proc.start()
    async with (
        DriverClient(store_proc.url, driver_token) as drv,
        JobClient(store_proc.url, client_token) as client,
    ):
        record = await client.wait(DSID, "slow", timeout=10)
        assert record.status.value == "cancelled", record
        assert record.error is not None and "deadline" in record.error, record
        # Still one cancel entry: each due time fired once.
        entries = await drv.since(DSID, 0)
        assert [e.type for e in entries] == ["request", "cancel"], entries
