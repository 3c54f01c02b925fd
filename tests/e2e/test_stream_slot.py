"""One worker at a time on a stream datasource, in real processes.

A second ``run-driver`` on the same stream datasource is refused with a sentence (exit status 1);
a ``--standby`` one waits, and when the first is SIGKILLed takes the worker slot over within the
slot's lease, resuming from the point the store kept (it has no state file of its own): every job
runs exactly once across the two.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from jobqueue_store.client import DriverClient, JobClient
from tests.e2e.conftest import DriverProcess, StoreProcess, jq

DSID = "one"
LEASE = 2


def _driver(store: StoreProcess, tmp_path: Path, name: str, count_log: Path) -> DriverProcess:
    d = DriverProcess(
        "tests/e2e/drivers.py:counting",
        store.url,
        store.token("driver"),
        DSID,
        tmp_path / f"state-{name}.json",
        env={"COUNT_LOG": str(count_log)},
    )
    d.args += ["--worker", name]
    return d


async def _all_complete(client: JobClient, jobs: list[str]) -> None:
    for job in jobs:
        record = await client.wait(DSID, job, timeout=30)
        assert record.status.value == "complete", record


@pytest.mark.timeout(120)
async def test_second_driver_refused_standby_takes_over_after_a_kill(
    store_proc: StoreProcess, tmp_path: Path, drivers: list[DriverProcess]
) -> None:
    count_log = tmp_path / "count.log"
    driver_token = store_proc.token("driver")
    async with DriverClient(store_proc.url, driver_token) as drv:
        await drv.put_datasource(DSID, "one worker", lease_seconds=LEASE)

    first = _driver(store_proc, tmp_path, "first", count_log)
    drivers.append(first)
    first.start()
    assert first.output is not None
    first.output.wait_for("worker first holds the worker slot")

    # A second driver is refused, with a sentence naming the holder.
    refused = jq(
        "run-driver",
        "tests/e2e/drivers.py:counting",
        "--url",
        store_proc.url,
        "--dsid",
        DSID,
        "--worker",
        "second",
        "--state-file",
        str(tmp_path / "state-second.json"),
        env={"JOBQUEUE_STORE_TOKEN": driver_token, "COUNT_LOG": str(count_log)},
    )
    assert refused.returncode == 1, refused
    assert "'first' holds the worker slot" in refused.stderr, refused.stderr
    assert "--standby" in refused.stderr and "Traceback" not in refused.stderr

    # A standby waits (its state file does not exist: it must resume from the store's mark).
    standby = _driver(store_proc, tmp_path, "standby", count_log)
    standby.args.append("--standby")
    drivers.append(standby)
    standby.start()
    assert standby.output is not None
    standby.output.wait_for("is standing by")
    assert not (tmp_path / "state-standby.json").exists()

    async with JobClient(store_proc.url, store_proc.token("client", "app")) as client:
        before = [f"a{i}" for i in range(20)]
        for job in before:
            await client.submit(DSID, {"n": job}, job)
        await _all_complete(client, before)
        # Wait until the first driver's heartbeat has stored its resume point past the last
        # entry (at most a third of the lease after the last job ended).
        async with DriverClient(store_proc.url, driver_token) as drv:
            latest = await drv.latest(DSID)
            assert latest is not None
            for _ in range(100):
                (ds,) = [d for d in await drv.catalogue() if d["datasource_id"] == DSID]
                workers = ds.get("workers") or []
                if workers and workers[0].get("resume") == latest.seq:
                    break
                await asyncio.sleep(0.1)
        assert workers and workers[0]["worker"] == "first", ds
        assert workers[0]["resume"] == latest.seq, ds

        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        killed = time.monotonic()
        after = [f"b{i}" for i in range(20)]
        for job in after:
            await client.submit(DSID, {"n": job}, job)
        standby.output.wait_for("worker standby holds the worker slot", timeout=30)
        took_over = time.monotonic() - killed
        # The slot lapses at most lease_seconds after the first driver's last heartbeat; the
        # standby polls for it every tenth of the lease.
        assert took_over <= LEASE + 1.0, took_over
        (started,) = [x for x in standby.output.lines if "worker standby holds" in x]
        assert f"started after seq {latest.seq} " in started, started
        await _all_complete(client, after)

    runs = Counter(count_log.read_text().split())
    assert set(runs) == set(before) | set(after)
    assert all(n == 1 for n in runs.values()), runs
    assert (tmp_path / "state-standby.json").exists()
