"""End-to-end latency: submit -> driver notified -> driver posts complete -> client notified.

An open-loop generator submits jobs at a fixed rate (each at its scheduled time, whatever the
answers before it did). A driver websocket (``/sub/<DSID>/jobs``) answers every ``request``
entry with ``POST /jobs/<DSID>/job/<id>/ {"status": "complete"}``; a client websocket
(``/sub/<DSID>/job``) records when the ``complete`` notification arrives. Latency is that time
minus the submit's scheduled send time, so a lagging generator is counted against the result,
never hidden (its own lag is reported beside it).

Run: ``python -m bench.e2e URL DSID CLIENT_TOKEN DRIVER_TOKEN RATE SECONDS``; prints one JSON line.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from bench.load import percentile
from bench.rawhttp import RawHttpPool, ResponseError

SETTLE = 5.0
"""Seconds to wait, after the last submit, for the last notifications."""


async def end_to_end(
    url: str, dsid: str, client_token: str, driver_token: str, rate: float, seconds: float
) -> dict[str, Any]:
    """Run the measure; latencies in milliseconds."""
    run = "e2e-" + uuid.uuid4().hex[:8]
    total = max(1, int(rate * seconds))
    scheduled: dict[str, float] = {}
    lag: list[float] = []
    latencies: list[float] = []
    errors = 0
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    client_auth = {"Authorization": f"Bearer {client_token}"}
    driver_auth = {"Authorization": f"Bearer {driver_token}"}
    json_type = {"Content-Type": "application/json"}
    complete_body = orjson.dumps({"status": "complete", "response": {"ok": True}})
    ws_url = url.replace("http://", "ws://", 1)
    parsed = urlsplit(url)
    # The job requests go through a lighter client than aiohttp's (bench/rawhttp.py), so that
    # the generator's own Python does not queue behind itself and add to the latencies.
    pool = RawHttpPool(parsed.hostname or "127.0.0.1", parsed.port or 80)

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: bytes, auth: dict[str, str]) -> None:
            nonlocal errors
            try:
                status = await pool.request(
                    pool.request_bytes("POST", path, {**auth, **json_type}, body)
                )
                if status >= 300:
                    errors += 1
            except (ResponseError, OSError):
                errors += 1

        driver_ws = await session.ws_connect(f"{ws_url}/sub/{dsid}/jobs", headers=driver_auth)
        client_ws = await session.ws_connect(f"{ws_url}/sub/{dsid}/job", headers=client_auth)

        async def driver() -> None:
            async for msg in driver_ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                entry = orjson.loads(msg.data)
                job = entry.get("job", "")
                if entry.get("type") == "request" and job in scheduled:
                    spawn(post(f"/jobs/{dsid}/job/{job}/", complete_body, driver_auth))

        async def client() -> None:
            async for msg in client_ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                now = time.perf_counter()
                note = orjson.loads(msg.data)
                job = note.get("job", "")
                if note.get("data", {}).get("status") == "complete" and job in scheduled:
                    latencies.append((now - scheduled[job]) * 1000.0)
                    if len(latencies) >= total:
                        done.set()

        readers = [asyncio.create_task(driver()), asyncio.create_task(client())]
        began = time.perf_counter()
        for i in range(total):
            at = began + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            job = f"{run}-{i}"
            scheduled[job] = at
            lag.append((time.perf_counter() - at) * 1000.0)
            body = orjson.dumps({"job": job, "request": {"n": i}})
            spawn(post(f"/{dsid}/job/", body, client_auth))
        sent_in = time.perf_counter() - began
        try:
            async with asyncio.timeout(SETTLE):
                await done.wait()
        except TimeoutError:
            pass
        await driver_ws.close()
        await client_ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, *tasks, return_exceptions=True)
        pool.close()
    latencies.sort()
    lag.sort()
    return {
        "jobs": total,
        "completed": len(latencies),
        "errors": errors,
        "rate": rate,
        "achieved_rate": total / sent_in if sent_in else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "generator_lag_p99_ms": percentile(lag, 0.99),
    }


def main() -> None:
    """Command line: run once, print the result as JSON."""
    url, dsid, client_token, driver_token, rate, seconds = sys.argv[1:7]
    coro = end_to_end(url, dsid, client_token, driver_token, float(rate), float(seconds))
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
