"""``serve --workers N``: several PostgreSQL store processes behind one port."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp

from tests.procs import COMMAND, StoreProcess, cli, fresh_pg_database


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_two_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with fresh_pg_database() as dsn:
        store = StoreProcess(data, database=dsn, env={"JOBQUEUE_STORE_WORKERS": "2"})
        await store.start()
        assert store.proc is not None
        client = cli("token", "--role", "client", "--client", "app", data_dir=data)
        driver = cli("token", "--role", "driver", data_dir=data)
        try:
            for _ in range(100):  # the child worker starts beside the parent
                if _children(store.proc.pid):
                    break
                await asyncio.sleep(0.05)
            assert len(_children(store.proc.pid)) == 1
            async with aiohttp.ClientSession() as s:
                async with s.put(
                    f"{store.url}/jobs/ds1",
                    json={"description": "d"},
                    headers={"Authorization": f"Bearer {driver}"},
                ) as resp:
                    assert resp.status == 200
                for i in range(50):
                    # A new connection each time, so the kernel may pick either process.
                    async with (
                        aiohttp.ClientSession() as fresh,
                        fresh.post(
                            f"{store.url}/ds1/job/",
                            json={"job": f"j{i}", "request": i},
                            headers={"Authorization": f"Bearer {client}"},
                        ) as resp,
                    ):
                        assert resp.status == 201
                async with s.get(
                    f"{store.url}/ds1/job/?limit=1000",
                    headers={"Authorization": f"Bearer {client}"},
                ) as resp:
                    assert len((await resp.json())["jobs"]) == 50
        finally:
            assert await store.stop() == 0


def test_workers_need_postgresql(tmp_path: Path) -> None:
    out = subprocess.run(
        [*COMMAND, "serve", "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "postgresql" in out.stderr
