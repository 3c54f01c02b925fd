"""The benchmark harness: the store against a bare aiohttp JSON handler, in one run.

Run from the repository root::

    .venv/bin/python -m bench.run [--rounds 3] [--duration 5] [--quick] [--profile]
                                  [--database postgresql://postgres@127.0.0.1:5432/test]
                                  [--celery-redis redis://127.0.0.1:6379/15 | --no-celery]

What it does, in order (see ``bench/README.md`` for the reading of each row):

1. Builds a SQLite store with pre-created jobs (through ``SQLiteStore``), starts it and the
   baseline (``bench.baseline --uvloop``), both pinned to core 0, with the load generator (wrk,
   or the Python one where wrk is missing) on core 1, 64 connections.
2. Rounds: baseline POST, store submit, Celery + Flower task submit (``bench.celery_row``; only
   with the ``bench`` extra and Redis, ``--no-celery`` skips it), update, cancel, baseline GET,
   store status, ``since``, ``latest``. Ratios are per round, against that round's baseline; the
   table shows medians.
3. End-to-end latency at a fixed open-loop rate (``bench.e2e``).
4. Memory per idle websocket subscriber, then submit with 10,000 subscribers connected
   (``bench.subscribers``, a process of its own).
5. ``since`` page latency on a 10k-job store and on a 1M-job store.
6. PostgreSQL submit with one store process and with ``serve --workers 2`` (``--database``;
   ``--no-postgres`` skips).
7. Claims on a lease datasource: 4 worker processes of 64 concurrent claim -> complete round
   trips each (``bench.claims``), on SQLite and on PostgreSQL, in rounds alternating with the
   baseline POST (``--only claims`` runs just these rows).

It prints a markdown table and writes everything to ``bench/results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import celery_row, claims, cpu, profile
from bench.load import HERE, WRK, Load, LoadResult, run_load
from bench.populate import Populated, populate
from bench.procs import PYTHON, baseline_proc, free_port, store_proc
from jobqueue_store.auth import TokenAuthority
from jobqueue_store.config import DEFAULT_NAME
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import Role

DSID = "bench"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SINCE_TARGET = round(3 * 1526 / 43665, 3)
STORE_CORE = 0
LOAD_CORE = 1


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of one run."""

    rounds: int
    duration: float
    connections: int
    tool: str
    status_jobs: int
    """Jobs walked by the status GET and the driver update measures."""
    cancel_jobs: int
    """Jobs per round for the cancel walk: each is cancelled once while the walk does not wrap."""
    e2e_rate: float
    e2e_seconds: float
    idle_subscribers: int
    loaded_subscribers: int
    per_client: int
    since_small: int
    since_big: int
    since_seconds: float
    postgres: str | None
    profile: bool
    settle: float
    """Seconds to let the store settle after opening sockets, before reading its memory."""
    only: str = "all"
    """``all`` measures, or ``claims``: only the claim rows (with their own baseline rounds)."""
    claim_workers: int = 4
    claim_concurrency: int = 64
    celery_redis: str | None = None
    """Broker of the Celery + Flower row (a Redis database it flushes); ``None``: no such row."""


@dataclass(slots=True)
class Row:
    """One line of the results table."""

    measure: str
    value: str
    reference: str
    ratio: float | None
    p50_ms: float | None
    p99_ms: float | None
    target: str
    met: bool | None
    numbers: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        """The row as a markdown table line."""

        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        met = {True: "yes", False: "**no**", None: "-"}[self.met]
        return (
            f"| {self.measure} | {self.value} | {self.reference} | {num(self.ratio, '.2f')} | "
            f"{num(self.p50_ms, '.2f')} | {num(self.p99_ms, '.2f')} | {self.target} | {met} |"
        )


HEADER = (
    "| measure | store | reference | ratio | p50 ms | p99 ms | target | met |\n"
    "|---|---:|---:|---:|---:|---:|---|---|"
)


def median(values: list[float]) -> float:
    """The median, 0.0 for no values."""
    return statistics.median(values) if values else 0.0


def _cpu_medians(results: list[LoadResult]) -> dict[str, float]:
    """The median of each CPU-per-request figure over the rounds that have one ({} if none)."""
    readings = [r.extra["cpu_us"] for r in results if "cpu_us" in r.extra]
    if not readings:
        return {}
    return {key: round(median([x[key] for x in readings]), 1) for key in readings[0]}


def rps(x: float) -> str:
    """Requests per second, rounded."""
    return f"{x:,.0f} req/s"


class Harness:
    """One run of the benchmark: its processes, tokens and results."""

    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.nonce = uuid.uuid4().hex[:6]
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}
        self.profiles: dict[str, Any] = {}
        self.log: list[str] = []
        self.celery_skipped = ""

    def say(self, text: str) -> None:
        """Progress on standard error (the table goes to standard output)."""
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", file=sys.stderr, flush=True)
        self.log.append(f"{stamp} {text}")

    async def load(self, url: str, load: Load, token: str, **kw: Any) -> LoadResult:
        """Run one load with the plan's generator; a load that saw errors fails the run."""
        kw.setdefault("connections", self.plan.connections)
        kw.setdefault("duration", self.plan.duration)
        result = await run_load(url, load, token, tool=self.plan.tool, core=LOAD_CORE, **kw)
        if result.errors:
            raise RuntimeError(
                f"{result.errors} of {result.requests} requests failed on {url} ({load})"
            )
        return result

    # set-up -------------------------------------------------------------------------------------
    @staticmethod
    def authority(data_dir: Path | None = None, root_key: str = "") -> TokenAuthority:
        """The authority whose tokens the store in ``data_dir`` (or with ``root_key``) accepts."""
        if root_key:
            return TokenAuthority(KeyRing.from_env(root_key), DEFAULT_NAME)
        assert data_dir is not None
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return TokenAuthority(KeyRing.load_or_create(data_dir), DEFAULT_NAME)

    async def start_celery(self) -> celery_row.CeleryFlower | None:
        """Flower and a Celery worker for the Celery row, or ``None`` (the reason said once)."""
        url = self.plan.celery_redis
        reason = "--no-celery" if url is None else await celery_row.unavailable(url)
        if reason is None:
            assert url is not None
            # Flower on the store's core, like the store; the worker there too (the store's
            # writer shares its core); Redis is the machine's server, not pinned.
            started = celery_row.CeleryFlower(url, flower_core=STORE_CORE, worker_core=STORE_CORE)
            try:
                await started.start()
                return started
            except Exception as exc:  # an optional row: report it, measure the rest
                await started.stop()
                reason = f"Celery or Flower did not start: {exc!r}"[:300]
        self.celery_skipped = "celery row skipped: " + " ".join(str(reason).split())
        self.raw["celery_skipped"] = self.celery_skipped
        self.say(self.celery_skipped)
        return None

    @staticmethod
    async def declare(url: str, driver_token: str) -> None:
        """``PUT /jobs/<DSID>`` as the driver."""
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"{url}/jobs/{DSID}",
                data=orjson.dumps({"description": "benchmark datasource"}),
                headers={
                    "Authorization": f"Bearer {driver_token}",
                    "Content-Type": "application/json",
                },
            ) as response,
        ):
            if response.status != 200:
                raise RuntimeError(f"PUT /jobs/{DSID}: {response.status} {await response.text()}")

    # the HTTP rounds ----------------------------------------------------------------------------
    async def http_rounds(self) -> None:
        """Submit, update, cancel, status, since, latest against the baseline, in rounds."""
        plan = self.plan
        data = self.work / "main"
        built = await populate(
            data / "jobqueue.sqlite3",
            DSID,
            plan.status_jobs + (plan.rounds + 1) * plan.cancel_jobs,
            prefix="pre",
        )
        self.say(f"main store built: {built.count} jobs in {built.seconds:.1f} s")
        auth = self.authority(data)
        self.client_token = auth.mint(Role.CLIENT, client="app")
        self.driver_token = auth.mint(Role.DRIVER)
        self.store = store_proc(free_port(), data, core=STORE_CORE)
        self.store_url = f"http://127.0.0.1:{self.store.argv[self.store.argv.index('--port') + 1]}"
        base_port = free_port()
        baseline = baseline_proc(base_port, core=STORE_CORE)
        base_url = f"http://127.0.0.1:{base_port}"
        await self.store.start()
        await baseline.start()
        celery: celery_row.CeleryFlower | None = None
        try:
            celery = await self.start_celery()
            await self.declare(self.store_url, self.driver_token)
            ct, dt = self.client_token, self.driver_token
            status = Load(
                "walk", "GET", f"/{DSID}/job/{{id}}/", prefix="pre", count=plan.status_jobs
            )
            measures: dict[str, Callable[[int], Awaitable[LoadResult]]] = {
                "baseline POST": lambda r: self.load(
                    base_url, Load("submit", dsid=DSID, run=f"b{self.nonce}-{r}"), ct
                ),
                "submit": lambda r: self.load(
                    self.store_url, Load("submit", dsid=DSID, run=f"s{self.nonce}-{r}"), ct
                ),
                **({"celery": lambda r: self.celery_round(celery)} if celery else {}),
                "update": lambda r: self.load(
                    self.store_url,
                    Load(
                        "walk",
                        "POST",
                        f"/jobs/{DSID}/job/{{id}}/",
                        # progress differs on every request: each update is a real change.
                        body='{"status":"accepted","progress":0.{n}}',
                        prefix="pre",
                        count=plan.status_jobs,
                    ),
                    dt,
                ),
                "cancel": lambda r: self.load(
                    self.store_url,
                    Load(
                        "walk",
                        "POST",
                        f"/{DSID}/job/{{id}}/cancel",
                        prefix="pre",
                        first=plan.status_jobs + r * plan.cancel_jobs,
                        count=plan.cancel_jobs,
                    ),
                    ct,
                ),
                "baseline GET": lambda r: self.load(base_url, status, ct),
                "status": lambda r: self.load(self.store_url, status, ct),
                "since": lambda r: self.load(
                    self.store_url,
                    Load("walk", "GET", f"/jobs/{DSID}/since/{built.middle_timestamp}?limit=100"),
                    dt,
                ),
                "latest": lambda r: self.load(
                    self.store_url, Load("walk", "GET", f"/jobs/{DSID}/latest"), dt
                ),
            }
            self.measures = measures
            self.say("warm-up")
            warm = min(1.0, plan.duration)
            await self.load(
                base_url, Load("submit", dsid=DSID, run=f"wb{self.nonce}"), ct, duration=warm
            )
            await self.load(
                self.store_url, Load("submit", dsid=DSID, run=f"ws{self.nonce}"), ct, duration=warm
            )
            if celery:
                await self.celery_measure(celery, duration=warm)
            results: dict[str, list[LoadResult]] = {name: [] for name in measures}
            for r in range(plan.rounds):
                for name, measure in measures.items():
                    # The server measured (the Celery row's processes are not read).
                    server = {"celery": None, "baseline": baseline}.get(name.split()[0], self.store)
                    before = cpu.threads(server.pid) if server else {}
                    result = await measure(r)
                    results[name].append(result)
                    used = server and cpu.per_request(
                        server.pid, before, cpu.threads(server.pid), result.requests
                    )
                    if used:
                        result.extra["cpu_us"] = used.as_dict()
                    self.say(
                        f"round {r + 1}/{plan.rounds} {name}: {result.rps:,.0f} req/s "
                        f"p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms"
                        + (f"; {cpu.describe(used.as_dict())}" if used else "")
                    )
            if celery:
                await celery.stop()  # not left idle on the store's core for the other measures
                celery = None
            self.raw["http"] = {k: [x.as_dict() for x in v] for k, v in results.items()}
            self.http = results
            self._http_rows(results)
            if plan.profile:
                await self.profile_http(measures)
            await self.end_to_end()
            await self.subscribers()
        finally:
            if celery:
                await celery.stop()
            await baseline.stop()
            await self.store.stop()

    async def celery_round(self, celery: celery_row.CeleryFlower | None) -> LoadResult:
        """:meth:`celery_measure` of a round (the row runs only when Flower started)."""
        assert celery is not None
        return await self.celery_measure(celery)

    async def celery_measure(self, celery: celery_row.CeleryFlower, **kw: Any) -> LoadResult:
        """One load on Flower (no token), then until the worker has run every queued task."""

        async def load(url: str, spec: Load, token: str) -> LoadResult:
            return await self.load(url, spec, token, **kw)

        return await celery.measure(load, drain_timeout=max(60.0, 10 * self.plan.duration))

    def _http_rows(self, results: dict[str, list[LoadResult]]) -> None:
        plan = self.plan
        specs = [
            ("durable submit (synchronous=FULL)", "submit", "baseline POST", 0.50),
            ("status GET", "status", "baseline GET", 0.60),
            ("driver status update", "update", "baseline POST", 0.45),
            ("cancel (each job once)", "cancel", "baseline POST", 0.45),
            # Three times the ratio of the last run before the read path served stored bytes
            # (1,526 req/s against a baseline GET of 43,665 req/s: 0.035), so that the target
            # means the same on a faster or slower machine.
            ("`since` page (limit=100)", "since", "baseline GET", SINCE_TARGET),
            ("`latest`", "latest", "baseline GET", None),
        ]
        if "celery" in results:
            specs.insert(1, (celery_row.LABEL, "celery", "baseline POST", None))
        for label, name, base, target in specs:
            mine, theirs = results[name], results[base]
            ratios = [m.rps / b.rps for m, b in zip(mine, theirs, strict=False) if b.rps]
            ratio = median(ratios)
            numbers: dict[str, Any] = {
                "rps": median([m.rps for m in mine]),
                "baseline_rps": median([b.rps for b in theirs]),
                "round_ratios": ratios,
            }
            cpu_mine = _cpu_medians(mine)
            if cpu_mine:
                numbers["cpu_us_per_request"] = cpu_mine
                numbers["baseline_cpu_us_per_request"] = _cpu_medians(theirs)
            if name == "cancel":
                numbers["distinct_jobs_per_round"] = plan.cancel_jobs
                numbers["requests_per_round"] = [m.requests for m in mine]
                numbers["wrapped"] = any(m.requests > plan.cancel_jobs for m in mine)
                if numbers["wrapped"]:
                    label = "cancel (walk wrapped: some repeats)"
            if name == "celery":
                numbers.update(celery_row.numbers(mine))
                label += celery_row.note(numbers)
            self.rows.append(
                Row(
                    label,
                    rps(numbers["rps"]),
                    f"{base} {rps(numbers['baseline_rps'])}",
                    ratio,
                    median([m.p50_ms for m in mine]),
                    median([m.p99_ms for m in mine]),
                    "-" if target is None else f"ratio >= {target:.3g}",
                    None if target is None else ratio >= target,
                    numbers,
                )
            )

    async def profile_http(
        self, measures: dict[str, Callable[[int], Awaitable[LoadResult]]]
    ) -> None:
        """py-spy the store under each HTTP measure whose target was missed."""
        names = {
            "durable submit (synchronous=FULL)": "submit",
            "status GET": "status",
            "driver status update": "update",
        }
        for row in self.rows:
            name = names.get(row.measure) or ("cancel" if row.measure.startswith("cancel") else "")
            if not name or row.met is not False:
                continue
            self.say(f"profiling the store under {name}")
            # Round index ``rounds``: the cancel walk's spare range of jobs not yet cancelled.
            measure = measures[name]
            self.profiles[name] = await self.profiled(
                lambda measure=measure: measure(self.plan.rounds)  # type: ignore[misc]
            )

    async def profiled(self, work: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
        """Run ``work`` while py-spy samples the store; the summary of the samples."""
        if not profile.available():
            return {"error": "py-spy is not installed"}
        out = self.work / f"profile-{len(self.profiles)}.txt"
        recording = asyncio.create_task(profile.record(self.store.pid, self.plan.duration, out))
        await asyncio.sleep(0.3)
        try:
            await work()
        finally:
            try:
                await recording
            except RuntimeError as exc:
                return {"error": str(exc)}
        return profile.summarise(out)

    # end-to-end ---------------------------------------------------------------------------------
    async def end_to_end(self) -> None:
        """Submit -> driver -> complete -> client, at a fixed open-loop rate."""
        plan = self.plan
        self.say(f"end-to-end at {plan.e2e_rate:.0f} jobs/s for {plan.e2e_seconds:.0f} s")

        async def once() -> dict[str, Any]:
            argv = [
                PYTHON,
                "-m",
                "bench.e2e",
                self.store_url,
                DSID,
                self.client_token,
                self.driver_token,
                str(plan.e2e_rate),
                str(plan.e2e_seconds),
            ]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=HERE.parent,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"bench.e2e failed: {err.decode(errors='replace')}")
            result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
            return result

        result = await once()
        self.raw["e2e"] = result
        if result["completed"] < result["jobs"] or result["errors"]:
            raise RuntimeError(f"end-to-end lost jobs: {result}")
        met = result["p50_ms"] <= 4.0 and result["p99_ms"] <= 20.0
        self.rows.append(
            Row(
                f"end-to-end at {plan.e2e_rate:,.0f} jobs/s (open loop)",
                f"{result['completed']:,} jobs",
                f"generator lag p99 {result['generator_lag_p99_ms']:.2f} ms",
                None,
                result["p50_ms"],
                result["p99_ms"],
                "p50 <= 4 ms, p99 <= 20 ms",
                met,
                result,
            )
        )
        if plan.profile and not met:
            self.say("profiling the store under end-to-end")
            self.profiles["e2e"] = await self.profiled(once)

    # websockets ---------------------------------------------------------------------------------
    async def subscribers(self) -> None:
        """Memory per idle subscriber, then submit with many subscribers connected."""
        plan = self.plan
        clients = -(-plan.loaded_subscribers // plan.per_client)
        auth = self.authority(self.work / "main")
        tokens = self.work / "idle-tokens.txt"
        tokens.write_text(
            "\n".join(auth.mint(Role.CLIENT, client=f"idle-{i}") for i in range(clients)) + "\n"
        )
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "bench.subscribers",
            self.store_url,
            DSID,
            str(tokens),
            str(plan.per_client),
            cwd=HERE.parent,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None

        async def command(text: str) -> str:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(text.encode() + b"\n")
            await proc.stdin.drain()
            return (await proc.stdout.readline()).decode().strip()

        try:
            if (await proc.stdout.readline()).strip() != b"ready":
                raise RuntimeError("bench.subscribers did not start")
            await asyncio.sleep(plan.settle)
            before = self.store.rss_kib()
            self.say(f"opening {plan.idle_subscribers} idle subscribers")
            answer = await command(f"open {plan.idle_subscribers}")
            opened, failed = (int(x) for x in answer.split()[1:3])
            if failed or opened != plan.idle_subscribers:
                raise RuntimeError(f"idle subscribers: {answer}")
            await asyncio.sleep(plan.settle)
            after = self.store.rss_kib()
            per = (after - before) / plan.idle_subscribers
            self.raw["memory"] = {"rss_before_kib": before, "rss_after_kib": after, "per_kib": per}
            self.rows.append(
                Row(
                    f"memory per idle websocket subscriber ({plan.idle_subscribers:,} open)",
                    f"{per:.1f} KiB",
                    f"RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB",
                    None,
                    None,
                    None,
                    "<= 25 KiB",
                    per <= 25.0,
                    self.raw["memory"],
                )
            )
            more = plan.loaded_subscribers - plan.idle_subscribers
            self.say(f"opening {more} more subscribers")
            answer = await command(f"open {more}")
            opened, failed = (int(x) for x in answer.split()[1:3])
            if failed or opened != plan.loaded_subscribers:
                raise RuntimeError(f"subscribers: {answer}")
            await asyncio.sleep(plan.settle)
            # Each round pairs the submit with a baseline POST, as the submit rounds without
            # subscribers did minutes earlier: the ratio compares the two submits' shares of
            # their same-minute baselines, so a machine that slowed down in between does not
            # count against the store (the raw ratio is kept beside it).
            loaded: list[LoadResult] = []
            bases: list[LoadResult] = []
            for r in range(plan.rounds):
                base = await self.measures["baseline POST"](100 + r)
                bases.append(base)
                result = await self.measures["submit"](100 + r)
                loaded.append(result)
                self.say(
                    f"submit with {opened} subscribers: {result.rps:,.0f} req/s "
                    f"(baseline POST {base.rps:,.0f} req/s)"
                )
            without = median([x.rps for x in self.http["submit"]])
            with_subs = median([x.rps for x in loaded])
            pairs = zip(self.http["submit"], self.http["baseline POST"], strict=True)
            share_without = median([x.rps / b.rps for x, b in pairs])
            share_with = median([x.rps / b.rps for x, b in zip(loaded, bases, strict=True)])
            ratio = share_with / share_without if share_without else 0.0
            raw_ratio = with_subs / without if without else 0.0
            self.raw["submit_with_subscribers"] = [x.as_dict() for x in loaded]
            self.raw["submit_with_subscribers_baselines"] = [x.as_dict() for x in bases]
            self.rows.append(
                Row(
                    f"submit with {opened:,} idle subscribers connected",
                    rps(with_subs),
                    f"submit without {rps(without)}; shares {share_with:.3f} / "
                    f"{share_without:.3f}; raw ratio {raw_ratio:.2f}",
                    ratio,
                    median([x.p50_ms for x in loaded]),
                    median([x.p99_ms for x in loaded]),
                    "ratio >= 0.90",
                    ratio >= 0.90,
                    {
                        "rps": with_subs,
                        "without_rps": without,
                        "share_with": share_with,
                        "share_without": share_without,
                        "raw_ratio": raw_ratio,
                        "subscribers": opened,
                    },
                )
            )
            if plan.profile and ratio < 0.90:
                self.say("profiling the store under submit with subscribers")
                self.profiles["submit_with_subscribers"] = await self.profiled(
                    lambda: self.measures["submit"](200)
                )
        finally:
            with contextlib.suppress(ConnectionError):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    # since at 10k vs 1M -------------------------------------------------------------------------
    async def since_scaling(self) -> None:
        """``since`` page p50 on a small and a big store, for T in the middle and near the end."""
        plan = self.plan
        built: dict[int, Populated] = {}
        p50: dict[tuple[int, str], LoadResult] = {}
        for size in (plan.since_small, plan.since_big):
            data = self.work / f"since-{size}"
            built[size] = await populate(data / "jobqueue.sqlite3", DSID, size, prefix="s")
            self.say(f"store of {size:,} jobs built in {built[size].seconds:.1f} s")
            token = self.authority(data).mint(Role.DRIVER)
            server = store_proc(free_port(), data, core=STORE_CORE, name=f"store-{size}")
            await server.start()
            url = f"http://127.0.0.1:{server.argv[server.argv.index('--port') + 1]}"
            try:
                for where, stamp in (
                    ("middle", built[size].middle_timestamp),
                    ("end", built[size].end_timestamp),
                ):
                    load = Load("walk", "GET", f"/jobs/{DSID}/since/{stamp}?limit=100")
                    await self.load(
                        url, load, token, connections=1, duration=min(1.0, plan.since_seconds)
                    )
                    result = await self.load(
                        url, load, token, connections=1, duration=plan.since_seconds
                    )
                    p50[(size, where)] = result
                    self.say(f"since on {size:,} jobs, T at {where}: p50 {result.p50_ms:.3f} ms")
            finally:
                await server.stop()
        self.raw["since_scaling"] = {
            f"{size}-{where}": r.as_dict() for (size, where), r in p50.items()
        }
        for where in ("middle", "end"):
            small, big = p50[(plan.since_small, where)], p50[(plan.since_big, where)]
            ratio = big.p50_ms / small.p50_ms if small.p50_ms else 0.0
            self.rows.append(
                Row(
                    f"`since` p50, {plan.since_big:,} vs {plan.since_small:,} jobs (T {where})",
                    f"{big.p50_ms:.3f} ms",
                    f"{small.p50_ms:.3f} ms",
                    ratio,
                    big.p50_ms,
                    big.p99_ms,
                    "ratio <= 1.3",
                    ratio <= 1.3,
                    {"big": big.as_dict(), "small": small.as_dict()},
                )
            )

    # PostgreSQL ---------------------------------------------------------------------------------
    async def postgres(self, dsn: str) -> None:
        """Submit against the PostgreSQL store: one process, then two sharing the database."""
        import asyncpg

        name = f"jqbench_{self.nonce}"
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        database = f"{dsn.rsplit('/', 1)[0]}/{name}"
        root_key = f"bench:{secrets.token_hex(32)}"
        auth = self.authority(root_key=root_key)
        client, driver = auth.mint(Role.CLIENT, client="app"), auth.mint(Role.DRIVER)
        baseline = median([x.rps for x in self.http["baseline POST"]])
        try:
            for count in (1, 2):
                # One port: `serve --workers 2` is the parent and one child sharing it
                # (SO_REUSEPORT), as an operator runs it.
                server = store_proc(
                    free_port(),
                    self.work / f"pg-{count}",
                    database=database,
                    root_key=root_key,
                    core=None,
                    name=f"pg-store-{count}",
                    workers=count,
                )
                await server.start()
                url = f"http://127.0.0.1:{server.argv[server.argv.index('--port') + 1]}"
                try:
                    await self.declare(url, driver)
                    runs: list[list[LoadResult]] = []
                    for r in range(self.plan.rounds + 1):  # the first is a warm-up
                        load = Load("submit", dsid=DSID, run=f"pg{count}-{r}-{self.nonce}")
                        duration = min(1.0, self.plan.duration) if r == 0 else self.plan.duration
                        runs.append([await self.load(url, load, client, duration=duration)])
                    measured = runs[1:]
                    total = median([sum(x.rps for x in run) for run in measured])
                    self.say(f"PostgreSQL submit, {count} process(es): {total:,.0f} req/s")
                    self.raw[f"postgres_{count}"] = [[x.as_dict() for x in run] for run in measured]
                    self.rows.append(
                        Row(
                            "durable submit, PostgreSQL, "
                            + ("1 store process" if count == 1 else f"`serve --workers {count}`"),
                            rps(total),
                            f"baseline POST {rps(baseline)}",
                            total / baseline if baseline else None,
                            median([statistics.fmean(x.p50_ms for x in run) for run in measured]),
                            median([max(x.p99_ms for x in run) for run in measured]),
                            "- (issue 5: figures)",
                            None,
                            {"rps": total},
                        )
                    )
                finally:
                    await server.stop()
        finally:
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    # claims on a lease datasource --------------------------------------------------------------
    async def claims(self) -> None:
        """Claim -> complete round trips by worker processes, SQLite then PostgreSQL."""
        backends: list[tuple[str, str]] = [("SQLite", "")]
        if self.plan.postgres:
            backends.append(("PostgreSQL", self.plan.postgres))
        for label, dsn in backends:
            try:
                await self._claims_on(label, dsn)
            except Exception as exc:  # report the failure in the row, go on
                self.say(f"claims on {label} failed: {exc!r}")
                self.raw[f"claims_{label}_error"] = repr(exc)
                self.rows.append(
                    Row(
                        self._claims_label(label),
                        "failed",
                        repr(exc)[:80],
                        None,
                        None,
                        None,
                        "- (issue 11: figures)",
                        None,
                    )
                )

    def _claims_label(self, backend: str) -> str:
        plan = self.plan
        return (
            f"claim -> complete, {plan.claim_workers} workers x {plan.claim_concurrency} jobs, "
            f"{backend}"
        )

    async def _claims_on(self, backend: str, dsn: str) -> None:
        import asyncpg

        plan = self.plan
        database = ""
        name = f"jqclaims_{self.nonce}"
        if dsn:
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            database = f"{dsn.rsplit('/', 1)[0]}/{name}"
        data = self.work / f"claims-{backend}"
        auth = self.authority(data)
        client, driver = auth.mint(Role.CLIENT, client="app"), auth.mint(Role.DRIVER)
        # SQLite: the store pinned to its core as in the HTTP rows; PostgreSQL: unpinned (the
        # database server needs a core too). Worker processes on the load core.
        core = None if dsn else STORE_CORE
        port = free_port()
        store = store_proc(port, data, database=database, core=core, name=f"claims-{backend}")
        url = f"http://127.0.0.1:{port}"
        base_port = free_port()
        baseline = baseline_proc(base_port, core=core)
        base_url = f"http://127.0.0.1:{base_port}"
        await store.start()
        await baseline.start()
        try:
            await self._declare_leased(url, driver)
            baselines: list[LoadResult] = []
            results: list[claims.ClaimResult] = []
            for r in range(plan.rounds + 1):  # the first is a warm-up
                warm = r == 0
                duration = min(1.0, plan.duration) if warm else plan.duration
                base = await self.load(
                    base_url,
                    Load("submit", dsid=DSID, run=f"cb{r}{self.nonce}"),
                    client,
                    duration=duration,
                )
                # Fill the queue (not measured): as long as a claim round, at the submit rate.
                await self.load(
                    url,
                    Load("submit", dsid=DSID, run=f"cf{r}{self.nonce}"),
                    client,
                    duration=duration,
                )
                result = await claims.measure(
                    url,
                    driver,
                    DSID,
                    workers=plan.claim_workers,
                    concurrency=plan.claim_concurrency,
                    duration=duration,
                    core=LOAD_CORE,
                )
                if result.errors:
                    raise RuntimeError(f"{result.errors} claim round trips failed on {backend}")
                self.say(
                    f"claims {backend} round {r}{' (warm-up)' if warm else ''}: "
                    f"{result.rate:,.0f}/s (baseline POST {base.rps:,.0f} req/s), "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                    f"empty claims {result.empty_claims}"
                )
                if not warm:
                    baselines.append(base)
                    results.append(result)
            ratios = [c.rate / b.rps for c, b in zip(results, baselines, strict=True) if b.rps]
            rate = median([c.rate for c in results])
            base_rps = median([b.rps for b in baselines])
            dry = any(c.empty_claims for c in results)
            self.raw[f"claims_{backend}"] = {
                "claims": [c.as_dict() for c in results],
                "baseline": [b.as_dict() for b in baselines],
            }
            self.rows.append(
                Row(
                    self._claims_label(backend) + (" (queue ran dry)" if dry else ""),
                    f"{rate:,.0f} claims/s",
                    f"baseline POST {rps(base_rps)}",
                    median(ratios),
                    median([c.p50_ms for c in results]),
                    median([c.p99_ms for c in results]),
                    "- (issue 11: figures)",
                    None,
                    {"rate": rate, "baseline_rps": base_rps, "round_ratios": ratios},
                )
            )
        finally:
            await baseline.stop()
            await store.stop()
            if dsn:
                admin = await asyncpg.connect(dsn)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await admin.close()

    async def _declare_leased(self, url: str, driver_token: str) -> None:
        """``PUT /jobs/<DSID>`` as a lease datasource (leases long enough never to expire)."""
        import aiohttp

        body = {"description": "claims benchmark", "dispatch": "lease", "lease_seconds": 300}
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"{url}/jobs/{DSID}",
                data=orjson.dumps(body),
                headers={
                    "Authorization": f"Bearer {driver_token}",
                    "Content-Type": "application/json",
                },
            ) as response,
        ):
            if response.status != 200:
                raise RuntimeError(f"PUT /jobs/{DSID}: {response.status} {await response.text()}")

    # the whole run ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Every measure in turn."""
        if self.plan.only == "claims":
            await self.claims()
            return
        await self.http_rounds()
        await self.since_scaling()
        if self.plan.postgres:
            try:
                await self.postgres(self.plan.postgres)
            except Exception as exc:  # the PostgreSQL store may not be ready: report, go on
                self.say(f"PostgreSQL measures failed: {exc!r}")
                self.raw["postgres_error"] = repr(exc)
                for count in (1, 2):
                    self.rows.append(
                        Row(
                            "durable submit, PostgreSQL, "
                            + ("1 store process" if count == 1 else f"`serve --workers {count}`"),
                            "failed",
                            repr(exc)[:80],
                            None,
                            None,
                            None,
                            "- (issue 5: figures)",
                            None,
                        )
                    )
        await self.claims()

    def table(self) -> str:
        """The markdown table."""
        return "\n".join([HEADER, *(row.markdown() for row in self.rows)])

    def cpu_lines(self) -> list[str]:
        """Where each HTTP row's time went: the store's CPU per request (its loop's thread, its
        other threads) beside the baseline's, medians of the rounds."""
        lines = []
        for row in self.rows:
            mine = row.numbers.get("cpu_us_per_request")
            theirs = row.numbers.get("baseline_cpu_us_per_request")
            if not mine or not theirs:
                continue
            ratio = f"{theirs['total'] / mine['total']:.2f}" if mine["total"] else "-"
            lines.append(
                f"- {row.measure}: {cpu.describe(mine)}; the baseline {theirs['total']:.1f} us "
                f"(CPU ratio {ratio})"
            )
        return lines


def build_plan(args: argparse.Namespace) -> Plan:
    """Sizes from the command line; ``--quick`` shrinks everything to a smoke run."""
    tool = args.loadgen
    if tool == "auto":
        tool = "wrk" if WRK else "python"
    postgres = None if args.no_postgres else args.database
    celery_redis = None if args.no_celery else args.celery_redis
    if args.quick:
        return Plan(
            rounds=args.rounds or 1,
            duration=args.duration or 1.0,
            connections=16,
            tool=tool,
            status_jobs=500,
            cancel_jobs=20_000 if tool == "wrk" else 5_000,
            e2e_rate=100.0,
            e2e_seconds=1.0,
            idle_subscribers=40,
            loaded_subscribers=80,
            per_client=20,
            since_small=1_000,
            since_big=5_000,
            since_seconds=args.duration or 1.0,
            postgres=postgres,
            profile=args.profile,
            settle=0.2,
            only=args.only,
            claim_workers=2,
            claim_concurrency=8,
            celery_redis=celery_redis,
        )
    return Plan(
        rounds=args.rounds or 3,
        duration=args.duration or 5.0,
        connections=64,
        tool=tool,
        status_jobs=20_000,
        cancel_jobs=100_000,
        e2e_rate=1000.0,
        e2e_seconds=5.0,
        idle_subscribers=5_000,
        loaded_subscribers=10_000,
        per_client=50,
        since_small=10_000,
        since_big=1_000_000,
        since_seconds=3.0,
        postgres=postgres,
        profile=args.profile,
        settle=2.0,
        only=args.only,
        celery_redis=celery_redis,
    )


def raise_nofile() -> None:
    """Raise the open-files soft limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin_self() -> None:
    """Keep the harness (and the load generators it starts) off the servers' core."""
    if (os.cpu_count() or 1) > LOAD_CORE and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {LOAD_CORE})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 3; quick 1)")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds per measure (default 5; quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument(
        "--loadgen", choices=["auto", "wrk", "python"], default="auto", help="load generator"
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("JOBQUEUE_STORE_TEST_PG", DEFAULT_PG),
        help="PostgreSQL server DSN; a fresh database is created on it (default %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument(
        "--no-celery", action="store_true", help="skip the Celery + Flower row (bench extra)"
    )
    parser.add_argument(
        "--celery-redis",
        default=celery_row.default_redis(),
        help="Redis database of the Celery row's broker, FLUSHED before and after "
        "(default %(default)s; env " + celery_row.REDIS_ENV + ")",
    )
    parser.add_argument(
        "--only",
        choices=["all", "claims"],
        default="all",
        help="claims: only the claim rows on a lease datasource, with their own baseline rounds",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the store under each missed target"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=HERE / "results", help="where the JSON goes"
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


async def amain(args: argparse.Namespace) -> Path:
    """Run, print the table, write the JSON; return the JSON file's path."""
    plan = build_plan(args)
    raise_nofile()
    pin_self()
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="jqbench-") as work:
        harness = Harness(plan, Path(work))
        harness.say(f"plan: {plan}")
        await harness.run()
    elapsed = time.time() - began
    command = shlex.join(["python", "-m", "bench.run", *args.argv])
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(began))
    table = harness.table()
    print(
        f"\n{table}\n\ncommand: `{command}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(began))}; {elapsed:.0f} s; "
        f"load generator {plan.tool}"
    )
    cpu_lines = harness.cpu_lines()
    if cpu_lines:
        print("\nCPU per request (`/proc`, all threads of the server process):")
        print("\n".join(cpu_lines))
    if harness.celery_skipped:
        print(f"\n{harness.celery_skipped}")
    for name, summary in harness.profiles.items():
        print(f"\nprofile of the store under {name}: {orjson.dumps(summary).decode()}")
    out = write_results(
        args.results_dir / f"{stamp}.json",
        {
            "command": command,
            "started": began,
            "seconds": elapsed,
            "plan": _plan_dict(plan),
            "rows": [
                {
                    "measure": r.measure,
                    "value": r.value,
                    "reference": r.reference,
                    "ratio": r.ratio,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "target": r.target,
                    "met": r.met,
                    "numbers": r.numbers,
                }
                for r in harness.rows
            ],
            "raw": harness.raw,
            "profiles": harness.profiles,
            "table": table,
            "cpu": cpu_lines,
        },
    )
    print(f"results: {out}")
    return out


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write ``results`` as indented JSON to ``path`` (its folder created); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return path


def _plan_dict(plan: Plan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in Plan.__slots__}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.run``."""
    asyncio.run(amain(parse_args(argv)))


def run_once(argv: list[str]) -> Path:
    """Run the harness with ``argv`` and return the path of its JSON results (for tests)."""
    out: Path = asyncio.run(amain(parse_args(argv)))
    return out


if __name__ == "__main__":
    main()
