"""Restarts: a driver killed and restarted catches up exactly once; a client subscription
survives a store restart without missing or repeating a notification."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

from jobqueue_store.client import DriverClient, JobClient, Notification
from jobqueue_store.driver import load_state
from tests.e2e.conftest import DriverProcess, StoreProcess

DSID = "restarts"


async def test_killed_driver_catches_up_exactly_once(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    state = tmp_path / "state.json"

    def new_driver() -> DriverProcess:
        driver = DriverProcess(
            "tests.e2e.drivers:counting",
            store_proc.url,
            store_proc.token("driver", dsid=DSID),
            DSID,
            state,
            env={"COUNT_LOG": str(runs)},
        )
        drivers.append(driver)
        driver.start()
        return driver

    first = new_driver()
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        before = [f"before-{i}" for i in range(3)]
        for job in before:
            await client.submit(DSID, {"n": job}, job)
        for job in before:
            assert (await client.wait(DSID, job, timeout=30)).status == "complete"
        first.stop(signal.SIGKILL)
        mark = load_state(state)
        assert mark is not None and mark > 0

        during = [f"during-{i}" for i in range(5)]
        for job in during:
            await client.submit(DSID, {"n": job}, job)
        for job in during:
            assert (await client.status(DSID, job)).status == "submitted"
        # As if the last writes of the resume mark were lost in the crash: the restarted driver
        # replays entries it already finished and must skip them.
        state.write_text(json.dumps({"after": 0}))

        new_driver()
        for job in during:
            done = await client.wait(DSID, job, timeout=30)
            assert done.status == "complete"
            assert done.response == {"echo": {"n": job}}
    assert Counter(runs.read_text().split()) == {job: 1 for job in before + during}
    assert (load_state(state) or 0) > mark


async def test_subscription_survives_store_restart(store_proc: StoreProcess) -> None:
    driver_token = store_proc.token("driver", dsid=DSID)
    client_token = store_proc.token("client", "app1")
    async with (
        DriverClient(store_proc.url, driver_token) as driver,
        JobClient(store_proc.url, client_token, backoff=0.2, max_backoff=1.0) as client,
    ):
        await driver.put_datasource(DSID)
        sub = client.subscribe(DSID)
        received: list[Notification] = []
        async with sub:
            await client.submit(DSID, {"step": 1}, "a")
            received.append(await anext(sub))
            await driver.update(DSID, "a", "accepted")
            received.append(await anext(sub))

            store_proc.stop()  # graceful: closes the websocket with 1001
            store_proc.start()
            # Written while the subscription is (probably) still reconnecting.
            await driver.update(DSID, "a", "accepted", progress=0.5)
            await client.submit(DSID, {"step": 2}, "b")
            await driver.update(DSID, "a", "complete", response=42)
            await driver.update(DSID, "b", "failed", error="no")
            while len(received) < 6:
                received.append(await anext(sub))
            assert sub.reconnects >= 1

            # And once more, live after the reconnect.
            await client.submit(DSID, {"step": 3}, "c")
            received.append(await anext(sub))

        full = client.subscribe(DSID, after=0)
        async with full:
            history = [await anext(full) for _ in range(7)]
    assert [n.seq for n in received] == [n.seq for n in history]
    assert [(n.job, n.record.status.value) for n in received] == [
        ("a", "submitted"),
        ("a", "accepted"),
        ("a", "accepted"),
        ("b", "submitted"),
        ("a", "complete"),
        ("b", "failed"),
        ("c", "submitted"),
    ]
    assert received[2].record.progress == 0.5
