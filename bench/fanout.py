"""Notification fan-out rate: every request entry delivered to K driver websockets.

Run: ``python -m bench.fanout [--subscribers 100] [--jobs 3000]``. The store runs pinned to core
0; K driver sockets on one datasource are held by a child process on core 1, which counts frames;
this process submits the jobs over 32 HTTP connections. Fan-out rate = frames delivered to all
subscribers / seconds from the first submit to the last frame (K x jobs frames in all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import STORE_COMMAND, free_port, store_proc
from bench.subscribers import raise_nofile


async def _receivers(url: str, token: str, count: int, expect: int) -> None:
    """Child process: hold ``count`` sockets; print 'ready', then when the last frame came, the
    frames received and how many sockets the store closed (a slow consumer gets 4008)."""
    got = 0
    closed = 0
    last = 0.0
    per_socket = expect // count
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [
            await session.ws_connect(
                f"{url}/sub/fan/jobs", headers={"Authorization": f"Bearer {token}"}
            )
            for _ in range(count)
        ]
        print("ready", flush=True)

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal got, last, closed
            mine = 0
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    got += 1
                    mine += 1
                    last = time.time()
                    if mine == per_socket:
                        return
            closed += 1

        await asyncio.wait_for(asyncio.gather(*(read(ws) for ws in sockets)), 300)
        print(f"last {last:.6f} {got} {closed}", flush=True)


async def _token(data: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        STORE_COMMAND, "token", *args, "--data-dir", str(data), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode().strip()


async def measure(subscribers: int, jobs: int) -> dict[str, float]:
    """Run the measure once; return the rate and counts."""
    with tempfile.TemporaryDirectory(prefix="jq-fanout-") as tmp:
        data = Path(tmp) / "data"
        rotate = await asyncio.create_subprocess_exec(  # the root key, before the first start
            STORE_COMMAND, "key", "rotate", "--data-dir", str(data), stdout=asyncio.subprocess.PIPE
        )
        await rotate.communicate()
        client = await _token(data, "--role", "client", "--client", "app")
        driver = await _token(data, "--role", "driver")
        port = free_port()
        store = store_proc(port, data)
        await store.start()
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                auth = {"Authorization": f"Bearer {driver}"}
                async with session.put(
                    f"{url}/jobs/fan", json={"description": "f"}, headers=auth
                ) as resp:
                    assert resp.status == 200
                child = await asyncio.create_subprocess_exec(
                    "taskset",
                    "-c",
                    "1",
                    sys.executable,
                    "-m",
                    "bench.fanout",
                    "--receive",
                    url,
                    driver,
                    str(subscribers),
                    str(subscribers * jobs),
                    stdout=asyncio.subprocess.PIPE,
                )
                assert child.stdout is not None
                assert (await child.stdout.readline()).strip() == b"ready"
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(jobs):
                    queue.put_nowait(i)
                headers = {"Authorization": f"Bearer {client}"}

                async def submitter() -> None:
                    while not queue.empty():
                        i = queue.get_nowait()
                        async with session.post(
                            f"{url}/fan/job/", json={"job": f"f{i}", "request": i}, headers=headers
                        ) as resp:
                            assert resp.status == 201

                start = time.time()
                await asyncio.gather(*(submitter() for _ in range(32)))
                submitted = time.time()
                line = (await asyncio.wait_for(child.stdout.readline(), 300)).split()
                await child.wait()
                last, frames, closed = float(line[1]), int(line[2]), int(line[3])
        finally:
            await store.stop()
    seconds = last - start
    return {
        "subscribers": subscribers,
        "jobs": jobs,
        "frames": frames,
        "closed": closed,
        "submit_rate": jobs / (submitted - start),
        "fanout_rate": frames / seconds,
    }


def main() -> None:
    """Print the fan-out rate."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--receive", nargs=4, metavar=("URL", "TOKEN", "COUNT", "EXPECT"))
    args = parser.parse_args()
    if args.receive:
        raise_nofile()
        url, token, count, expect = args.receive
        asyncio.run(_receivers(url, token, int(count), int(expect)))
        return
    os.environ.setdefault("PYTHONHASHSEED", "0")
    result = asyncio.run(measure(args.subscribers, args.jobs))
    print(" ".join(f"{k}={v:.0f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
