"""Many workers on one lease datasource, in real processes: redelivery after a crash.

Four ``jobqueue-store run-driver`` processes claim 5,000 jobs; one driver is SIGKILLed mid-run
(and, on PostgreSQL, one of the two store processes serving the port). Each driver writes what it
ran to its own file (``tests/e2e/drivers.py:leased``): the test reads those files, not the store,
to show that every job ended ``complete`` exactly once, that none was lost, that no job ran on a
second worker while the first one's lease could still be valid, and that the killed driver's jobs
came back after their lease. A driver writes its ``done`` line once the store has answered its
``complete``: the few jobs whose ``complete`` the store committed in the instant before the kill,
before the killed driver could write that line, are checked in the store instead (one run, one
claim, that run's response). Jobs are submitted while the drivers run, at the rate this machine
allows (about 100-200 a second when it is shared), so the test takes 40-70 s.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from jobqueue_store.client import DriverClient, JobClient
from tests.e2e.conftest import DriverProcess
from tests.procs import StoreProcess, cli, fresh_pg_database

DSID = "work"
JOBS = 5_000
DRIVERS = 4
CONCURRENCY = 32
LEASE = 3
TIMEOUT = 110.0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _read_runs(files: list[Path]) -> list[list[list[str]]]:
    runs = []
    for path in files:
        lines = path.read_text().splitlines() if path.exists() else []
        # A line being written when the file was read may be cut short: keep complete ones.
        runs.append([line.split() for line in lines if line.count(" ") >= 3])
    return runs


def _done_count(files: list[Path]) -> int:
    return sum(1 for lines in _read_runs(files) for f in lines if f[0] == "done")


async def _until(files: list[Path], count: int, deadline: float) -> None:
    while _done_count(files) < count:
        assert time.monotonic() < deadline, f"only {_done_count(files)} of {count} jobs done"
        await asyncio.sleep(0.1)


async def _many_workers(tmp_path: Path, store: StoreProcess, data: Path, postgres: bool) -> None:
    began = time.monotonic()
    deadline = began + TIMEOUT
    env = {"JOBQUEUE_STORE_NAME": "jobqueue-store"}
    client_token = cli("token", "--role", "client", "--client", "app", data_dir=data, env=env)
    driver_token = cli("token", "--role", "driver", data_dir=data, env=env)
    async with DriverClient(store.url, driver_token) as drv:
        declared = await drv.put_datasource(
            DSID, "many workers", dispatch="lease", lease_seconds=LEASE, max_attempts=10
        )
    assert declared["dispatch"] == "lease" and declared["lease_seconds"] == LEASE

    files = [tmp_path / f"runs-{i}.txt" for i in range(DRIVERS)]
    drivers = []
    for i in range(DRIVERS):
        d = DriverProcess(
            "tests/e2e/drivers.py:leased",
            store.url,
            driver_token,
            DSID,
            tmp_path / f"state-{i}.json",
            env={"RUN_LOG": str(files[i])},
        )
        d.args += ["--worker", f"w{i}", "--concurrency", str(CONCURRENCY)]
        drivers.append(d)
    try:
        for d in drivers:
            d.start()
        rng = random.Random(11)
        jobs = [f"j{n:05d}" for n in range(JOBS)]
        async with JobClient(store.url, client_token) as client:
            sem = asyncio.Semaphore(64)

            async def submit(job: str) -> None:
                # One job in 20 runs for 2 s (heartbeats renew its lease), the rest briefly.
                sleep = 2.0 if int(job[1:]) % 20 == 0 else rng.uniform(0.05, 0.35)
                async with sem:
                    await client.submit(DSID, {"sleep": sleep}, job)

            submitting = asyncio.gather(*(submit(j) for j in jobs))

            # SIGKILL one driver mid-run, while it holds jobs.
            await _until(files, JOBS // 5, deadline)
            # ... while it runs a long job it started just now: that one surely comes back.
            while True:
                (w0, *_) = _read_runs(files)
                ended = {f[1] for f in w0 if f[0] == "done"}
                now = time.time()
                if any(
                    f[0] == "start"
                    and f[1] not in ended
                    and int(f[1][1:]) % 20 == 0
                    and float(f[3]) > now - 0.5
                    for f in w0
                ):
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            killed = drivers[0]
            assert killed.proc is not None
            killed.proc.send_signal(signal.SIGKILL)
            killed.proc.wait()
            killed_at = time.time()
            if postgres:
                # And one of the two store processes: the connections to it break, and the
                # kernel hands the new ones (clients and drivers retry) to the other process.
                await _until(files, JOBS // 2, deadline)
                assert store.proc is not None
                (child,) = _children(store.proc.pid)
                subprocess.run(["kill", "-KILL", str(child)], check=True)
            await submitting
            print(f"submitted in {time.monotonic() - began:.1f} s")

            # Wait until every job is done: reported by a driver, or (a few of the killed
            # driver's) complete in the store.
            pending = jobs
            while True:
                assert time.monotonic() < deadline, f"jobs left: {pending[:10]}"
                by_driver = _read_runs(files)
                done = {f[1] for lines in by_driver for f in lines if f[0] == "done"}
                pending = [j for j in jobs if j not in done]
                # A live driver's line may still be coming: wait for it.
                live = {f[1] for lines in by_driver[1:] for f in lines if f[0] == "start"}
                if len(pending) <= CONCURRENCY and not live & set(pending):
                    records = {j: await client.status(DSID, j) for j in pending}
                    if all(r.status.value == "complete" for r in records.values()):
                        break
                await asyncio.sleep(0.3)
            print(f"all done in {time.monotonic() - began:.1f} s")

            # The store agrees: every job complete.
            complete = [r async for r in client.jobs(DSID, status="complete", page_size=1000)]
            assert len(complete) == JOBS
    finally:
        for i, d in enumerate(drivers):
            d.stop(signal.SIGKILL)
            if d.output is not None:  # kept beside the run files, for a failure's post-mortem
                (tmp_path / f"driver-{i}.log").write_text(d.output.text())

    starts: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    dones: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, lines in enumerate(_read_runs(files)):
        for f in lines:
            if f[0] == "start":
                starts[f[1]].append((i, int(f[2]), float(f[3])))
            elif f[0] == "done":
                dones[f[1]].append((i, f[2]))
    # Complete exactly once in the drivers' own output; no job lost.
    assert set(starts) == set(jobs)
    assert all(len(d) == 1 and d[0][1] == "complete" for d in dones.values()), [
        (j, d) for j, d in dones.items() if len(d) != 1 or d[0][1] != "complete"
    ][:5]
    # The exception: a job whose complete the store committed just before the kill, when the
    # killed driver had not yet written its line. It ran once, on the killed driver, and the
    # store holds that run's response after a single claim.
    for job, record in records.items():
        assert [who for who, _, _ in starts[job]] == [0], (job, starts[job])
        assert (record.attempts, record.response) == (1, {"ran": job}), record
    assert set(dones) | set(records) == set(jobs)
    came_back = 0
    for job, runs in starts.items():
        runs.sort(key=lambda r: r[2])
        finisher = dones[job][0][0] if job in dones else 0
        assert runs[-1][0] == finisher, (job, runs, dones.get(job))
        for (who, attempt, began_at), (_, next_attempt, next_at) in itertools.pairwise(runs):
            # Only the killed driver left jobs unfinished, and nobody else started one of them
            # before its lease (taken at the claim, just before the start) could have run out.
            assert who == 0, (job, runs)
            assert next_attempt > attempt, (job, runs)
            assert next_at >= began_at + LEASE - 0.1, (job, runs)
            assert next_at >= killed_at, (job, runs)
            came_back += 1
    assert came_back >= 1, "the killed driver held no job when it was killed"
    print(f"{came_back} jobs came back; {len(records)} completed just before the kill")


@pytest.mark.timeout(180)
async def test_four_drivers_on_sqlite_one_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = StoreProcess(data)
    await store.start()
    try:
        await _many_workers(tmp_path, store, data, postgres=False)
    finally:
        await store.stop()


@pytest.mark.timeout(180)
async def test_four_drivers_two_postgresql_store_processes_one_of_each_killed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with fresh_pg_database() as dsn:
        store = StoreProcess(data, database=dsn, env={"JOBQUEUE_STORE_WORKERS": "2"})
        await store.start()
        assert store.proc is not None
        for _ in range(100):  # the second store process starts beside the first
            if _children(store.proc.pid):
                break
            await asyncio.sleep(0.05)
        try:
            await _many_workers(tmp_path, store, data, postgres=True)
        finally:
            await store.stop()
