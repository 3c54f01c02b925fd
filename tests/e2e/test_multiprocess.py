"""Issue 5: two store processes on one PostgreSQL database behave as one store."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.procs import StoreProcess, cli, fresh_pg_database
from tests.wire import validate


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _next_frame(ws: aiohttp.ClientWebSocketResponse, schema: str) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = msg.json()
    validate(schema, frame)
    return frame


async def test_two_processes_share_jobs_notifications_and_durability(tmp_path: Path) -> None:
    key = f"k-shared:{secrets.token_hex(32)}"
    env = {"JOBQUEUE_STORE_ROOT_KEY": key, "JOBQUEUE_STORE_NAME": "shared-store"}
    async with fresh_pg_database() as dsn:
        # Each process has its own data dir: the key and name come from the environment.
        a = StoreProcess(tmp_path / "a", database=dsn, env=env)
        b = StoreProcess(tmp_path / "b", database=dsn, env=env)
        await asyncio.gather(a.start(), b.start())
        client = cli(
            "token", "--role", "client", "--client", "app", data_dir=tmp_path / "t", env=env
        )
        driver = cli("token", "--role", "driver", data_dir=tmp_path / "t", env=env)
        assert not (tmp_path / "t" / "root_keys.json").exists(), "the env key must be used"
        try:
            async with aiohttp.ClientSession() as s:
                async with s.put(
                    f"{a.url}/jobs/ds1", json={"description": "d"}, headers=_auth(driver)
                ) as resp:
                    assert resp.status == 200
                drv_b = await s.ws_connect(f"{b.url}/sub/ds1/jobs", headers=_auth(driver))
                cli_a = await s.ws_connect(f"{a.url}/sub/ds1/job?token={client}")

                # Submit on A: the driver subscribed on B gets the request entry.
                async with s.post(
                    f"{a.url}/ds1/job/",
                    json={"job": "j1", "request": {"n": 1}},
                    headers=_auth(client),
                ) as resp:
                    assert resp.status == 201
                entry = await _next_frame(drv_b, "stream_entry")
                assert (entry["type"], entry["job"]) == ("request", "j1")
                note = await _next_frame(cli_a, "notification")
                assert note["seq"] == entry["seq"] and note["data"]["status"] == "submitted"

                # Status posted on B: the client subscribed on A is notified.
                async with s.post(
                    f"{b.url}/jobs/ds1/job/j1",
                    json={"status": "complete", "response": 42},
                    headers=_auth(driver),
                ) as resp:
                    assert resp.status == 200
                note = await _next_frame(cli_a, "notification")
                assert note["data"]["status"] == "complete" and note["seq"] > entry["seq"]
                # The long-poll on A sees B's write too.
                async with s.get(f"{a.url}/ds1/job/j1?wait=5", headers=_auth(client)) as resp:
                    assert resp.status == 200 and (await resp.json())["response"] == 42

                # Cancel on B reaches A's client and B's driver.
                async with s.post(
                    f"{b.url}/ds1/job/", json={"job": "j2", "request": 2}, headers=_auth(client)
                ) as resp:
                    assert resp.status == 201
                async with s.post(f"{a.url}/ds1/job/j2/cancel", headers=_auth(client)) as resp:
                    assert resp.status == 200
                stream = [await _next_frame(drv_b, "stream_entry") for _ in range(2)]
                assert [(e["type"], e["job"]) for e in stream] == [
                    ("request", "j2"),
                    ("cancel", "j2"),
                ]
                await drv_b.close()
                await cli_a.close()

                # Resume with after= on either process replays the same log.
                for proc in (a, b):
                    ws = await s.ws_connect(
                        f"{proc.url}/sub/ds1/jobs?after={entry['seq']}", headers=_auth(driver)
                    )
                    got = [await _next_frame(ws, "stream_entry") for _ in range(2)]
                    assert [g["seq"] for g in got] == [e["seq"] for e in stream]
                    await ws.close()
                    ws = await s.ws_connect(
                        f"{proc.url}/sub/ds1/job?after=0", headers=_auth(client)
                    )
                    seqs = [(await _next_frame(ws, "notification"))["seq"] for _ in range(4)]
                    assert seqs == sorted(set(seqs))
                    await ws.close()

                # SIGKILL one process while both take submits: no acknowledged job is lost.
                acked: set[str] = set()

                async def submitter(proc: StoreProcess, n: int) -> None:
                    for i in range(10_000):
                        job = f"p{n}-{i}"
                        try:
                            async with s.post(
                                f"{proc.url}/ds1/job/",
                                json={"job": job, "request": i},
                                headers=_auth(client),
                            ) as resp:
                                if resp.status in (200, 201):
                                    acked.add(job)
                        except (aiohttp.ClientError, ConnectionError):
                            return
                        if proc is b and i >= 200:
                            return

                tasks = [
                    asyncio.create_task(submitter(p, n))
                    for n, p in enumerate([a, a, a, a, b, b, b, b])
                ]
                while len(acked) < 200:  # noqa: ASYNC110 (polling a plain set)
                    await asyncio.sleep(0.01)
                await a.kill()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                entries: list[dict[str, Any]] = []
                url = f"{b.url}/jobs/ds1/since/0?limit=10000"
                async with s.get(url, headers=_auth(driver)) as resp:
                    entries = await resp.json()
                counts = Counter(e["job"] for e in entries if e["type"] == "request")
                assert acked <= set(counts), f"lost: {sorted(acked - set(counts))[:5]}"
                assert max(counts.values()) == 1
        finally:
            for proc in (a, b):
                if proc.proc is not None and proc.proc.returncode is None:
                    await proc.stop()
