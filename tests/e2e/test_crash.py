"""A store killed with SIGKILL under 16 concurrent submitters loses no acknowledged job."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.procs import StoreProcess, cli, fresh_pg_database

SUBMITTERS = 16


async def _submitter(
    session: aiohttp.ClientSession, url: str, token: str, n: int, acked: set[str]
) -> None:
    i = 0
    while True:
        job = f"s{n}-{i}"
        i += 1
        try:
            async with session.post(
                f"{url}/ds1/job/",
                json={"job": job, "request": {"n": i}},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                if resp.status in (200, 201):
                    acked.add(job)
                else:
                    assert resp.status >= 500, await resp.text()
        except (aiohttp.ClientError, ConnectionError):
            return


@pytest.mark.slow
async def test_sigkill_during_concurrent_submits_loses_no_acknowledged_job(
    backend: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        database = ""
        if backend == "postgres":
            database = await stack.enter_async_context(fresh_pg_database())
        data = tmp_path / "data"
        cli("key", "rotate", data_dir=data)  # the root key, before the store's first start
        client = cli("token", "--role", "client", "--client", "app", data_dir=data)
        driver = cli("token", "--role", "driver", data_dir=data)
        store = StoreProcess(data, database=database)
        await store.start()
        auth = {"Authorization": f"Bearer {driver}"}
        async with aiohttp.ClientSession() as session:
            async with session.put(
                f"{store.url}/jobs/ds1", json={"description": "d"}, headers=auth
            ) as resp:
                assert resp.status == 200
            acked: set[str] = set()
            tasks = [
                asyncio.create_task(_submitter(session, store.url, client, n, acked))
                for n in range(SUBMITTERS)
            ]
            while len(acked) < 300:  # noqa: ASYNC110 (polling a plain set is the point)
                await asyncio.sleep(0.01)
            await store.kill()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert len(acked) >= 300

        restarted = StoreProcess(data, database=database)
        await restarted.start()
        try:
            async with aiohttp.ClientSession() as session:
                entries: list[dict[str, object]] = []
                url: str | None = f"{restarted.url}/jobs/ds1/since/0?limit=10000"
                while url:
                    async with session.get(url, headers=auth) as resp:
                        assert resp.status == 200
                        entries += await resp.json()
                        url = resp.links.get("next", {}).get("url")  # type: ignore[assignment]
                        if url:
                            url = f"{restarted.url}{url}" if str(url).startswith("/") else url
                counts = Counter(str(e["job"]) for e in entries)
                missing = acked - set(counts)
                assert not missing, f"{len(missing)} acknowledged jobs lost"
                assert max(counts.values()) == 1, "a job appears twice in the request stream"
                seqs = [e["seq"] for e in entries]
                assert seqs == sorted(set(seqs))  # type: ignore[type-var]
                for job in sorted(acked)[:50]:
                    async with session.get(
                        f"{restarted.url}/jobs/ds1/job/{job}", headers=auth
                    ) as resp:
                        assert resp.status == 200
        finally:
            await restarted.stop()
