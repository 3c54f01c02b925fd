"""Instructions per request, the store against the baseline, counted by callgrind.

Run: ``.venv/bin/python -m bench.instructions [--requests 2000] [--concurrency 32]``. It needs
valgrind (``apt-get install valgrind``).

Throughput ratios on a shared machine move by a tenth from one run to the next; the number of
instructions a server executes for a fixed set of requests barely moves (run to run, about 1%
for the store, less for the baseline). Each server runs under ``valgrind --tool=callgrind``
with counting off; a client sends warm-up requests, counting goes on (``callgrind_control -i
on``) for ``--requests`` requests at ``--concurrency`` at a time, then off, and the count is
dumped. The store and the bare handler (``bench/baseline.py``) answer the same requests: a
durable submit, a driver's status update (progress, on 500 jobs built beforehand, each updated
several times) and a status GET. The ratio baseline / store is what the throughput ratio would
be if an instruction cost the same everywhere; it leaves out the kernel (callgrind counts user
space) and the cache misses, so it is a guide for comparing two versions of the code, not a
substitute for ``bench.run``. Under valgrind the store runs about fifty times slower, so its
write batches are larger than at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import orjson

from bench.populate import populate
from bench.procs import PYTHON, free_port
from bench.run import DSID, Harness
from jobqueue_store.models import Role

HERE = Path(__file__).resolve().parent
MEASURES = ("submit", "update", "status")
PREBUILT = 5000
"""Jobs built beforehand, for the updates and status reads (walked in order, wrapping)."""
UPDATED = 500
"""Jobs the updates walk (the first of the prebuilt): the warm-up updates each once, so the counted
updates find their rows kept by the writer, as a driver's later updates do (``bench.run``'s
update rounds walk 20,000 jobs, each updated several times a run)."""


@dataclass(frozen=True, slots=True)
class Count:
    """One server's count for one measure."""

    server: str
    measure: str
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        """Instructions per request."""
        return self.instructions / self.requests


def available() -> bool:
    """Whether valgrind and callgrind_control are installed."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def read_total(path: Path) -> int:
    """The instructions a callgrind dump counted: its ``totals:`` line (near the end; the
    ``summary:`` line at the top stays 0 when counting started off)."""
    total = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            total = int(line.split()[1])
    if total is None:
        raise ValueError(f"{path} is not a callgrind dump")
    return total


def _request(
    measure: str, i: int, client_token: str, driver_token: str
) -> tuple[str, str, str, bytes | None]:
    """The ``i``-th request of ``measure``: (method, path, token, body)."""
    if measure == "submit":
        body = orjson.dumps({"job": f"ins-{i}", "request": {"n": i}})
        return "POST", f"/{DSID}/job/", client_token, body
    if measure == "update":
        body = orjson.dumps({"status": "accepted", "progress": (i % 997) / 1000})
        return "POST", f"/jobs/{DSID}/job/pre-{i % UPDATED}/", driver_token, body
    return "GET", f"/{DSID}/job/pre-{i % PREBUILT}/", client_token, None


async def _drive(
    url: str,
    make: Callable[[int], tuple[str, str, str, bytes | None]],
    first: int,
    count: int,
    concurrency: int,
) -> None:
    """Send requests ``first`` .. ``first + count - 1``, ``concurrency`` at a time."""
    next_index = first
    end = first + count

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < end:
            i = next_index
            next_index += 1
            method, path, token, body = make(i)
            headers = {"Authorization": f"Bearer {token}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            async with session.request(method, url + path, data=body, headers=headers) as reply:
                text = await reply.read()
                if reply.status >= 300:
                    raise RuntimeError(f"{method} {path}: {reply.status} {text[:200]!r}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


class _Server:
    """A server process under callgrind, counting only when told to."""

    def __init__(self, name: str, argv: list[str], out: Path, log: Path) -> None:
        self.name = name
        self.out = out
        self.argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *argv,
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        """Start the process (:meth:`wait_ready` waits for it to answer)."""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=HERE.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, url: str, timeout: float = 300.0) -> None:
        """Wait until ``url/healthz`` answers."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url + "/healthz") as reply:
                        if reply.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s")
                await asyncio.sleep(0.5)

    def control(self, *args: str) -> None:
        """``callgrind_control ARGS PID``."""
        assert self.proc is not None
        subprocess.run(
            ["callgrind_control", *args, str(self.proc.pid)], check=True, capture_output=True
        )

    def stop(self) -> None:
        """Kill it (its counts are dumped already)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


async def count(
    server: _Server,
    url: str,
    measure: str,
    make: Callable[[int], tuple[str, str, str, bytes | None]],
    requests: int,
    concurrency: int,
    warm: int,
) -> Count:
    """Warm up, then count ``requests`` requests of ``measure``."""
    await _drive(url, make, 0, warm, concurrency)
    before = set(server.out.parent.glob(server.out.name + ".*"))
    server.control("--instr=on")
    await _drive(url, make, warm, requests, concurrency)
    server.control("--instr=off")
    server.control(f"--dump={measure}")
    for _ in range(100):  # the dump is written by the server, soon after the request
        dumps = set(server.out.parent.glob(server.out.name + ".*")) - before
        if dumps:
            break
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError(f"{server.name} wrote no callgrind dump for {measure}")
    await asyncio.sleep(0.5)  # let it finish the file
    return Count(server.name, measure, requests, sum(read_total(p) for p in sorted(dumps)))


async def run(
    requests: int, concurrency: int, measures: tuple[str, ...], work: Path
) -> list[Count]:
    """Count ``measures`` on the store, then on the baseline."""
    data = work / "store"
    await populate(data / "jobqueue.sqlite3", DSID, PREBUILT, prefix="pre")
    authority = Harness.authority(data)
    client_token = authority.mint(Role.CLIENT, client="app")
    driver_token = authority.mint(Role.DRIVER)
    warm = min(500, requests)
    counts: list[Count] = []
    store_port, base_port = free_port(), free_port()
    servers = [
        (
            _Server(
                "store",
                # python -m, not the installed script: run in a checkout, it counts that
                # checkout's code (an editable install would run the other tree's).
                [
                    PYTHON,
                    "-m",
                    "jobqueue_store",
                    "serve",
                    "--port",
                    str(store_port),
                    "--data-dir",
                    str(data),
                    "--log-level",
                    "WARNING",
                ],
                work / "store.callgrind",
                work / "store.log",
            ),
            f"http://127.0.0.1:{store_port}",
        ),
        (
            _Server(
                "baseline",
                [PYTHON, "-m", "bench.baseline", str(base_port), "--uvloop"],
                work / "baseline.callgrind",
                work / "baseline.log",
            ),
            f"http://127.0.0.1:{base_port}",
        ),
    ]
    for server, url in servers:
        server.spawn()
        await server.wait_ready(url)
        try:
            if server.name == "store":
                await Harness.declare(url, driver_token)
            for measure in measures:

                def make(i: int, measure: str = measure) -> tuple[str, str, str, bytes | None]:
                    # Submits never repeat an id: each measure's warm-up and count differ.
                    return _request(measure, i, client_token, driver_token)

                counts.append(await count(server, url, measure, make, requests, concurrency, warm))
        finally:
            server.stop()
    return counts


def table(counts: list[Count]) -> str:
    """The counts as a Markdown table: per request, the store, the baseline, their ratio."""
    by = {(c.server, c.measure): c for c in counts}
    lines = [
        "| measure | store instructions per request | baseline | ratio (baseline / store) |",
        "|---|---:|---:|---:|",
    ]
    for measure in dict.fromkeys(c.measure for c in counts):
        store, base = by.get(("store", measure)), by.get(("baseline", measure))
        if store is None or base is None:
            continue
        lines.append(
            f"| {measure} | {store.per_request:,.0f} | {base.per_request:,.0f} | "
            f"{base.per_request / store.per_request:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    """Count, print the table, write the JSON next to bench.run's results; return its path."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per measure")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--measures", default=",".join(MEASURES), help=f"comma-separated, of {','.join(MEASURES)}"
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="count in DIR and keep it: the callgrind dumps (for callgrind_annotate) and logs",
    )
    args = parser.parse_args(argv)
    measures = tuple(m for m in args.measures.split(",") if m)
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or args.requests < 1 or args.concurrency < 1:
        parser.error(f"measures are {', '.join(MEASURES)}; requests and concurrency at least 1")
    if not available():
        raise SystemExit("bench.instructions needs valgrind: apt-get install valgrind")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        counts = asyncio.run(run(args.requests, args.concurrency, measures, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="jq-instructions-") as tmp:
            counts = asyncio.run(run(args.requests, args.concurrency, measures, Path(tmp)))
    print(table(counts))
    print(
        f"\ncommand: `python -m bench.instructions --requests {args.requests} "
        f"--concurrency {args.concurrency}`; {started}; valgrind --tool=callgrind"
    )
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"instructions-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "started": started,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "counts": [{**asdict(c), "per_request": round(c.per_request)} for c in counts],
            },
            indent=2,
        )
    )
    print(f"results: {path}")
    return path


if __name__ == "__main__":
    main()
