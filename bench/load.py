"""HTTP load generation: wrk with the lua scripts beside this file, or a Python fallback.

A :class:`Load` says what to send; :func:`run_load` sends it for a while over a fixed number of
connections (closed loop, as wrk does) and returns a :class:`LoadResult`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
WRK = shutil.which("wrk")


@dataclass(frozen=True, slots=True)
class Load:
    """One kind of request to repeat.

    ``script`` ``"submit"``: ``POST /<dsid>/job/`` with a job id unique to every request
    (``<run>-<thread>-<n>``, :file:`submit.lua`). ``script`` ``"walk"``: ``method path`` where
    ``{id}`` in ``path`` and ``body`` stands for ``<prefix>-<i>``, ``i`` walking over
    ``first .. first+count-1`` and wrapping, and ``{n}`` in ``body`` for the request's number
    (:file:`walk.lua`). A ``walk`` whose ``path`` has no ``{id}`` repeats one constant request
    (the Celery + Flower row's fixed JSON body).
    """

    script: str
    method: str = "GET"
    path: str = "/"
    body: str | None = None
    dsid: str = "bench"
    run: str = "run"
    prefix: str = "pre"
    first: int = 0
    count: int = 1

    def env(self, token: str, threads: int) -> dict[str, str]:
        """The environment the lua script reads."""
        env = {"TOKEN": token, "THREADS": str(threads)}
        if self.script == "submit":
            env.update(DSID=self.dsid, RUN=self.run)
        else:
            env.update(
                METHOD=self.method,
                REQ_PATH=self.path,
                PREFIX=self.prefix,
                FIRST=str(self.first),
                COUNT=str(self.count),
            )
            if self.body is not None:
                env["BODY"] = self.body
        return env

    def render(self, n: int) -> tuple[str, str, bytes | None]:
        """The ``n``-th request as ``(method, path, body)`` (the Python generator's view)."""
        if self.script == "submit":
            body = f'{{"job":"{self.run}-0-{n}","request":{{"n":{n}}}}}'
            return "POST", f"/{self.dsid}/job/", body.encode()
        job = f"{self.prefix}-{self.first + n % self.count}"
        path = self.path.replace("{id}", job)
        body_text = (
            None if self.body is None else self.body.replace("{id}", job).replace("{n}", str(n))
        )
        return self.method, path, None if body_text is None else body_text.encode()


@dataclass(slots=True)
class LoadResult:
    """What one load run measured. Latencies in milliseconds."""

    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Non-2xx/3xx answers plus socket errors: a run with errors is not a valid measure."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unrecognised wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Read wrk's ``--latency`` report."""
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.M))
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (total and rps and "50" in percentiles and "99" in percentiles):
        raise RuntimeError(f"wrk printed no report:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return LoadResult(
        tool="wrk",
        requests=int(total.group(1)),
        seconds=_ms(total.group(2) + total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        errors=errors,
    )


def pinned(argv: list[str], core: int | None) -> list[str]:
    """``argv`` under ``taskset -c core`` when the machine has that core and taskset."""
    if core is None or shutil.which("taskset") is None or core >= (os.cpu_count() or 1):
        return argv
    return ["taskset", "-c", str(core), *argv]


async def run_wrk(
    url: str,
    load: Load,
    token: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    core: int | None = 1,
) -> LoadResult:
    """Run wrk (pinned to ``core``) and parse its report."""
    assert WRK is not None
    script = HERE / ("submit.lua" if load.script == "submit" else "walk.lua")
    seconds = max(1, round(duration))
    argv = pinned(
        [
            WRK,
            f"-t{threads}",
            f"-c{max(connections, threads)}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        core,
    )
    env = {**os.environ, **load.env(token, threads)}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    return parse_wrk(text)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, nearest rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def run_python(
    url: str, load: Load, token: str, *, connections: int, duration: float
) -> LoadResult:
    """The fallback generator: ``connections`` workers in a closed loop for ``duration``."""
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    counter = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = loop.time() + duration

        async def worker() -> None:
            nonlocal errors, counter
            while loop.time() < deadline:
                n = counter
                counter += 1
                method, path, body = load.render(n)
                extra = {"Content-Type": "application/json"} if body is not None else {}
                began = time.perf_counter()
                try:
                    async with session.request(
                        method, url + path, data=body, headers={**headers, **extra}
                    ) as response:
                        await response.read()
                        ok = 200 <= response.status < 400
                except (aiohttp.ClientError, OSError):
                    ok = False
                latencies.append((time.perf_counter() - began) * 1000.0)
                if not ok:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        seconds = time.perf_counter() - began
    latencies.sort()
    return LoadResult(
        tool="python",
        requests=len(latencies),
        seconds=seconds,
        rps=len(latencies) / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        errors=errors,
    )


async def run_load(
    url: str,
    load: Load,
    token: str,
    *,
    tool: str,
    connections: int,
    duration: float,
    core: int | None = 1,
) -> LoadResult:
    """Run ``load`` with ``tool`` (``"wrk"`` or ``"python"``)."""
    if tool == "wrk":
        return await run_wrk(
            url, load, token, connections=connections, duration=duration, core=core
        )
    return await run_python(url, load, token, connections=connections, duration=duration)
