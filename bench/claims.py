"""Claim throughput: worker processes doing claim -> complete round trips on a lease datasource.

One worker process (``python -m bench.claims URL TOKEN DSID CONCURRENCY START DURATION``) runs
``CONCURRENCY`` loops from wall-clock time ``START`` for ``DURATION`` seconds, each loop:
``POST /jobs/<DSID>/claim`` with ``max`` 1 (``wait`` 1 s), then ``POST /jobs/<DSID>/job/<id>/``
``complete`` under the lease the claim returned. It prints one JSON line: the round trips done in
the window, their latency percentiles (claim sent -> complete answered), the claims that found
the queue empty and any errors. :func:`measure` starts several such processes at once and sums
them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.load import HERE, pinned

PYTHON = sys.executable


@dataclass(slots=True)
class ClaimResult:
    """What the worker processes of one measure did together (latencies in milliseconds)."""

    workers: int
    concurrency: int
    seconds: float
    completed: int
    empty_claims: int
    errors: int
    p50_ms: float
    p99_ms: float
    per_worker: list[int] = field(default_factory=list)
    rate: float = 0.0
    """Claim -> complete round trips per second: each process's count over its own window,
    summed."""

    def as_dict(self) -> dict[str, Any]:
        """Everything, for the results JSON."""
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _worker(
    url: str, token: str, dsid: str, concurrency: int, start: float, duration: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    claim_url = f"{url}/jobs/{dsid}/claim"
    claim_body = orjson.dumps({"worker": f"bench-{os.getpid()}", "max": 1, "wait": 1})
    latencies: list[float] = []
    counts = {"completed": 0, "empty": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await asyncio.sleep(max(0.0, start - time.time()))
        # A process that started late (a loaded machine) still measures a whole window.
        began = time.time()
        end = began + duration

        async def loop() -> None:
            while time.time() < end:
                began = time.perf_counter()
                async with session.post(claim_url, data=claim_body) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        counts["errors"] += 1
                        continue
                jobs = orjson.loads(body)["jobs"]
                if not jobs:
                    counts["empty"] += 1
                    continue
                job = jobs[0]
                update = orjson.dumps(
                    {"status": "complete", "response": 1, "lease": job["lease"]["id"]}
                )
                async with session.post(f"{url}/jobs/{dsid}/job/{job['job']}/", data=update) as r:
                    await r.read()
                    if r.status != 200:
                        counts["errors"] += 1
                        continue
                if time.time() <= end:
                    counts["completed"] += 1
                    latencies.append((time.perf_counter() - began) * 1000)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {
        **counts,
        "seconds": duration,
        "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99),
    }


async def measure(
    url: str,
    token: str,
    dsid: str,
    *,
    workers: int = 4,
    concurrency: int = 64,
    duration: float = 5.0,
    core: int | None = None,
) -> ClaimResult:
    """Run ``workers`` worker processes (pinned to ``core``) for ``duration`` seconds."""
    start = time.time() + 1.5  # time for the processes to start and connect
    argv = [
        PYTHON,
        "-m",
        "bench.claims",
        url,
        token,
        dsid,
        str(concurrency),
        f"{start:.3f}",
        str(duration),
    ]
    procs = [
        await asyncio.create_subprocess_exec(
            *pinned(argv, core), cwd=HERE.parent, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(workers)
    ]
    outs = [orjson.loads((await p.communicate())[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a claim worker failed: {[p.returncode for p in procs]}")
    return ClaimResult(
        workers=workers,
        concurrency=concurrency,
        seconds=duration,
        completed=sum(o["completed"] for o in outs),
        empty_claims=sum(o["empty"] for o in outs),
        errors=sum(o["errors"] for o in outs),
        p50_ms=statistics.median(o["p50_ms"] for o in outs),
        p99_ms=max(o["p99_ms"] for o in outs),
        per_worker=[o["completed"] for o in outs],
        rate=sum(o["completed"] / o["seconds"] for o in outs if o["seconds"] > 0),
    )


def main(argv: list[str]) -> None:
    """Entry point of one worker process."""
    url, token, dsid, concurrency, start, duration = argv
    coro = _worker(url, token, dsid, int(concurrency), float(start), float(duration))
    try:
        import uvloop

        out = uvloop.run(coro)
    except ImportError:
        out = asyncio.run(coro)
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
