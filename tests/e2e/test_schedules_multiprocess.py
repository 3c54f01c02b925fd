"""Schedules against two real PostgreSQL store processes, one SIGKILLed between fire times: each
fire time has exactly one run, and none is missed.

To keep the test short it sets ``JOBQUEUE_STORE_TEST_CRON_SECONDS=1``, a test-only switch that
lets a cron expression carry a sixth, leading seconds field (here: every 2 seconds). Production
cron expressions have 5 fields; everything else (the timer rounds, the locks) is as in
production.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp

from jobqueue_store.schedules import TEST_SECONDS_ENV, fire_times
from tests.procs import StoreProcess, cli, fresh_pg_database

EVERY = 2_000  # ms between fire times
CRON = "*/2 * * * * *"  # seconds first (test-only)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _sleep_until_between_fire_times() -> None:
    """Sleep until 40% of the way between two fire times."""
    now = time.time() * 1000
    await asyncio.sleep(((EVERY - now % EVERY) + 0.4 * EVERY) / 1000)


async def _runs(s: aiohttp.ClientSession, url: str, token: str, sid: str) -> list[Any]:
    runs: list[Any] = []
    path = f"{url}/ds1/schedule/{sid}/runs?limit=1000"
    while True:
        async with s.get(path, headers=_auth(token)) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        runs += page["jobs"]
        if page["next"] is None:
            return runs
        path = f"{url}/ds1/schedule/{sid}/runs?limit=1000&cursor={page['next']}"


async def test_each_fire_time_has_one_run_when_a_store_process_is_killed(tmp_path: Path) -> None:
    key = f"k-shared:{secrets.token_hex(32)}"
    env = {
        "JOBQUEUE_STORE_ROOT_KEY": key,
        "JOBQUEUE_STORE_NAME": "shared-store",
        TEST_SECONDS_ENV: "1",
    }
    async with fresh_pg_database() as dsn:
        a = StoreProcess(tmp_path / "a", database=dsn, env=env)
        b = StoreProcess(tmp_path / "b", database=dsn, env=env)
        await asyncio.gather(a.start(), b.start())
        client = cli(
            "token", "--role", "client", "--client", "app", data_dir=tmp_path / "t", env=env
        )
        driver = cli("token", "--role", "driver", data_dir=tmp_path / "t", env=env)
        restarted: StoreProcess | None = None
        try:
            async with aiohttp.ClientSession() as s:
                async with s.put(
                    f"{a.url}/jobs/ds1", json={"description": "d"}, headers=_auth(driver)
                ) as resp:
                    assert resp.status == 200
                body = {"schedule": "tick", "request": {"n": 1}, "cron": CRON, "catch_up": "all"}
                async with s.post(f"{a.url}/ds1/schedule/", json=body, headers=_auth(client)) as r:
                    assert r.status == 201, await r.text()
                    created = await r.json()
                # both processes fire for a while, then A dies between two fire times
                await asyncio.sleep(3 * EVERY / 1000)
                await _sleep_until_between_fire_times()
                await a.kill()
                await asyncio.sleep(3 * EVERY / 1000)
                # A comes back (a new process) and races B again
                restarted = StoreProcess(tmp_path / "a2", database=dsn, env=env)
                await restarted.start()
                await asyncio.sleep(3 * EVERY / 1000)
                await _sleep_until_between_fire_times()
                async with s.post(
                    f"{b.url}/ds1/schedule/tick/pause", headers=_auth(client)
                ) as resp:
                    assert resp.status == 200
                    paused = await resp.json()
                runs = await _runs(s, restarted.url, client, "tick")
        finally:
            await b.stop()
            if restarted is not None:
                await restarted.stop()
    fired = sorted(r["scheduled_for"] for r in runs)
    assert len(fired) >= 8
    # exactly the fire times from the first to the last: one run each, none missed
    expected = fire_times(CRON, "UTC", created["created_at"], paused["updated_at"])
    assert fired == expected
    assert paused["runs"] == len(fired)
    assert {r["job"] for r in runs} == {f"tick.{t}" for t in fired}
    # B kept firing on time while A was down
    late = [r["submitted_at"] - r["scheduled_for"] for r in runs]
    assert max(late) < EVERY, late
