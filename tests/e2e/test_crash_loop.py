"""Crash consistency: SIGKILL the store at seeded random moments under mixed load, 20+ times.

One database serves every cycle. Each cycle starts ``jobqueue-store serve``, runs submitters, a
canceller, driver workers posting ``accepted`` / ``retrying`` / ``complete`` / ``failed`` /
``cancelled``, a client subscriber on ``/sub/ds1/job`` and a driver subscriber on
``/sub/ds1/jobs`` (both resume with ``after=`` the last seq they saw), then kills the store with
SIGKILL 0.2-0.6 s into the load. Every 2xx reply is recorded in a :class:`Ledger`. After the last
cycle the store starts once more and the test checks, against the log:

- every acknowledged submit is in the request stream exactly once, as acknowledged;
- an acknowledged cancel that set ``cancel_requested`` produced exactly one ``cancel`` entry;
- every acknowledged status update is in the job's history, and a terminal status sticks;
- every job's notifications replay to its final record (version +1 per event, last == record);
- each subscriber's seqs, across every cycle, are strictly increasing and are exactly the log's
  seqs of its channel, with the same frames.

The figures (cycles survived, writes acknowledged, lost, duplicated) are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.procs import StoreProcess, cli, fresh_pg_database

CYCLES = 22
SUBMITTERS = 4
DRIVER_WORKERS = 2
DSID = "ds1"
CLIENT = "app"
MARKER = "final-marker"
TERMINAL = frozenset({"complete", "cancelled", "forbidden", "failed"})
# What a store being killed may answer besides 2xx: 503 (unavailable). Anything else is a bug.
_NET_ERRORS = (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError)

Record = dict[str, Any]


@dataclass
class Ledger:
    """What the store acknowledged, across every cycle, and what the subscribers received."""

    submits: dict[str, Record] = field(default_factory=dict)
    """Job id -> the record of its acknowledged submit."""
    unknown_submits: dict[str, Any] = field(default_factory=dict)
    """Submits whose reply never came (killed mid-request): retried in the next cycle."""
    cancels: dict[str, Record] = field(default_factory=dict)
    """Job id -> the record an acknowledged cancel returned with ``cancel_requested`` set."""
    updates: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    """Job id -> records returned by acknowledged status updates."""
    repeats: int = 0
    """Acknowledged idempotent repeats (a submit retried, an update re-posted)."""
    driver_todo: deque[tuple[str, str]] = field(default_factory=deque)
    """(job, status) updates the driver still has to post."""
    client_frames: list[Record] = field(default_factory=list)
    driver_frames: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Replies no store should give (500s, a 201 for a repeat, ...)."""

    @property
    def acknowledged(self) -> int:
        """Acknowledged writes that changed something (each one log event)."""
        changed_updates = sum(len({r["version"] for r in rs}) for rs in self.updates.values())
        return len(self.submits) + len(self.cancels) + changed_updates

    def last_seq(self, frames: list[Record]) -> int:
        """The seq a subscriber resumes after."""
        return int(frames[-1]["seq"]) if frames else 0


def _next_status(job: str, status: str) -> str | None:
    """The driver's script for a job: accepted, maybe retrying, then complete or failed."""
    h = sum(job.encode())
    if status == "accepted":
        return "retrying" if h % 4 == 0 else ("failed" if h % 5 == 0 else "complete")
    if status == "retrying":
        return "complete"
    return None


def _update_body(job: str, status: str) -> Record:
    if status == "complete":
        return {"status": status, "response": {"job": job, "ok": True}, "progress": 1.0}
    if status == "failed":
        return {"status": status, "error": f"{job} failed on purpose"}
    if status == "retrying":
        return {"status": status, "error": "transient", "progress": 0.25}
    if status == "accepted":
        return {"status": status, "progress": 0.0}
    return {"status": status}


class Cycle:
    """The load of one cycle against one running store."""

    def __init__(
        self,
        n: int,
        url: str,
        session: aiohttp.ClientSession,
        client_token: str,
        driver_token: str,
        ledger: Ledger,
        rng: random.Random,
    ) -> None:
        self.n = n
        self.url = url
        self.session = session
        self.client_auth = {"Authorization": f"Bearer {client_token}"}
        self.driver_auth = {"Authorization": f"Bearer {driver_token}"}
        self.ledger = ledger
        self.rng = rng
        self.stopped = False

    async def _post(self, path: str, body: Record | None, auth: dict[str, str]) -> tuple[int, Any]:
        async with self.session.post(f"{self.url}{path}", json=body, headers=auth) as resp:
            return resp.status, await resp.json()

    def _unexpected(self, what: str, status: int, body: Any) -> None:
        if status != 503:
            self.ledger.problems.append(f"cycle {self.n}: {what} -> {status} {body}")

    # load ---------------------------------------------------------------------------------------
    async def submitter(self, k: int) -> None:
        """Submit new jobs; submitter 0 first retries the submits whose reply was lost."""
        led = self.ledger
        retries = list(led.unknown_submits.items()) if k == 0 else []
        i = 0
        while not self.stopped:
            if retries:
                job, request = retries.pop()
            elif i % 10 == 9 and led.submits:
                job = self.rng.choice(sorted(led.submits)[-50:])
                request = led.submits[job]["request"]
            else:
                job, request = f"c{self.n}-s{k}-{i}", {"cycle": self.n, "k": k, "i": i}
            i += 1
            known = job in led.submits
            if not known:
                led.unknown_submits[job] = request
            try:
                status, body = await self._post(
                    f"/{DSID}/job/", {"job": job, "request": request}, self.client_auth
                )
            except _NET_ERRORS:
                return
            if status == 201 and not known:
                led.unknown_submits.pop(job, None)
                led.submits[job] = body
            elif status == 200 and job in led.unknown_submits:
                # The lost reply's submit had committed: this retry is its acknowledgement.
                led.unknown_submits.pop(job, None)
                led.submits[job] = body
                led.repeats += 1
            elif status == 200 and known:
                led.repeats += 1
                if body["submitted_at"] != led.submits[job]["submitted_at"]:
                    led.problems.append(f"repeat of {job} returned another record: {body}")
            else:
                self._unexpected(f"submit {job} (known={known})", status, body)

    async def canceller(self) -> None:
        """Cancel about one job in five, picked at random among the acknowledged ones."""
        led = self.ledger
        while not self.stopped:
            await asyncio.sleep(0.01)
            if not led.submits:
                continue
            job = self.rng.choice(sorted(led.submits)[-40:])
            try:
                status, body = await self._post(f"/{DSID}/job/{job}/cancel", None, self.client_auth)
            except _NET_ERRORS:
                return
            if status != 200:
                self._unexpected(f"cancel {job}", status, body)
            elif body["cancel_requested"]:
                led.cancels.setdefault(job, body)
            else:
                led.repeats += 1  # a terminal job: nothing to cancel, nothing appended

    async def driver_worker(self) -> None:
        """Post the driver's updates in order; one whose reply was lost is re-posted later."""
        led = self.ledger
        while not self.stopped:
            if not led.driver_todo:
                await asyncio.sleep(0.005)
                continue
            job, wanted = led.driver_todo.popleft()
            try:
                status, body = await self._post(
                    f"/jobs/{DSID}/job/{job}/", _update_body(job, wanted), self.driver_auth
                )
            except _NET_ERRORS:
                led.driver_todo.appendleft((job, wanted))
                return
            if status == 200:
                seen = led.updates[job]
                if any(r["version"] == body["version"] for r in seen):
                    led.repeats += 1
                seen.append(body)
                following = _next_status(job, wanted)
                if following is not None and body["status"] == wanted:
                    led.driver_todo.append((job, following))
            elif status == 409:
                pass  # the job reached a terminal status first (a cancel raced the work)
            else:
                led.driver_todo.appendleft((job, wanted))
                self._unexpected(f"update {job} to {wanted}", status, body)
                await asyncio.sleep(0.01)

    async def subscriber(
        self, path: str, frames: list[Record], on_frame: Callable[[Record], None] | None = None
    ) -> None:
        """Follow a websocket subscription from the last seq seen, into ``frames``."""
        auth = self.driver_auth if path.endswith("/jobs") else self.client_auth
        after = self.ledger.last_seq(frames)
        try:
            async with self.session.ws_connect(
                f"{self.url}{path}?after={after}", headers=auth, heartbeat=None
            ) as ws:
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        return
                    frame = msg.json()
                    frames.append(frame)
                    if on_frame is not None:
                        on_frame(frame)
        except _NET_ERRORS:
            return

    def on_stream_entry(self, entry: Record) -> None:
        """The driver's reaction to its request stream."""
        if entry["type"] == "request" and entry["job"] != MARKER:
            self.ledger.driver_todo.append((entry["job"], "accepted"))
        elif entry["type"] == "cancel":
            self.ledger.driver_todo.append((entry["job"], "cancelled"))


async def _get_json(session: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> Any:
    async with session.get(url, headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _read_stream(session: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> Any:
    """Every request-stream entry of ``DSID``, following the ``Link: rel=next`` pages."""
    entries: list[Record] = []
    url: str | None = f"{base}/jobs/{DSID}/since/0?limit=10000"
    while url:
        async with session.get(url, headers=auth) as resp:
            assert resp.status == 200, await resp.text()
            entries += await resp.json()
            nxt = resp.links.get("next")
            url = None if nxt is None else str(nxt["url"])
            if url and url.startswith("/"):
                url = base + url
    return entries


async def _all_jobs(session: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> Any:
    jobs: dict[str, Record] = {}
    cursor: str | None = None
    while True:
        url = f"{base}/{DSID}/job/?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = await _get_json(session, url, auth)
        for record in page["jobs"]:
            jobs[record["job"]] = record
        cursor = page["next"]
        if cursor is None:
            return jobs


async def _follow_until_marker(
    cycle: Cycle, path: str, frames: list[Record], on_frame: Callable[[Record], None] | None = None
) -> None:
    """Resume a subscriber one last time and read until the marker job's event arrives."""
    done = asyncio.Event()

    def watch(frame: Record) -> None:
        if on_frame is not None:
            on_frame(frame)
        if frame["job"] == MARKER:
            done.set()

    task = asyncio.create_task(cycle.subscriber(path, frames, watch))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _check(ledger: Ledger, stream: list[Record], jobs: dict[str, Record], log: list[Record]) -> Any:
    """Check the ledger against the final state; return ``(lost, duplicated)``."""
    lost: list[str] = []
    duplicated: list[str] = []
    requests = Counter(e["job"] for e in stream if e["type"] == "request")
    cancels = Counter(e["job"] for e in stream if e["type"] == "cancel")
    duplicated += [f"request {j} x{n}" for j, n in requests.items() if n > 1]
    duplicated += [f"cancel {j} x{n}" for j, n in cancels.items() if n > 1]

    history: dict[str, list[Record]] = defaultdict(list)
    for frame in log:
        history[frame["job"]].append(frame["data"])

    for job, acked in ledger.submits.items():
        final = jobs.get(job)
        if requests[job] != 1 or final is None:
            lost.append(f"submit {job}")
            continue
        assert final["submitted_at"] == acked["submitted_at"], job
        assert final["request"] == acked["request"], job
    for job in ledger.cancels:
        if cancels[job] != 1 or not jobs[job]["cancel_requested"]:
            lost.append(f"cancel {job}")
    for job, records in ledger.updates.items():
        by_version = {r["version"]: r for r in history[job]}
        for acked in records:
            if by_version.get(acked["version"]) != acked:
                lost.append(f"update {job} v{acked['version']}")
        terminal = [r for r in records if r["status"] in TERMINAL]
        if terminal:
            assert jobs[job]["status"] == terminal[0]["status"], (job, jobs[job], terminal)

    # Every job's history replays to its record: versions 1, 2, ... and the last is the record.
    assert set(history) == set(jobs)
    for job, chain in history.items():
        versions = [r["version"] for r in chain]
        if versions != list(range(1, len(chain) + 1)):
            duplicated.append(f"history of {job}: versions {versions}")
        assert chain[0]["status"] == "submitted", (job, chain[0])
        assert chain[-1] == jobs[job], (job, chain[-1], jobs[job])
        flags = [r["cancel_requested"] for r in chain]
        assert flags == sorted(flags), (job, flags)  # cancel_requested never turns back
        assert flags[-1] == (cancels[job] == 1), job
        ends = [r["status"] in TERMINAL for r in chain]
        assert ends == sorted(ends), (job, chain)  # once terminal, always terminal
    return lost, duplicated


async def _crash_loop(backend: str, tmp_path: Path, database: str) -> None:
    data = tmp_path / "data"
    cli("key", "rotate", data_dir=data)  # the root key, before the store's first start
    client_token = cli("token", "--role", "client", "--client", CLIENT, data_dir=data)
    driver_token = cli("token", "--role", "driver", data_dir=data)
    rng = random.Random(f"crash-loop-{backend}")
    ledger = Ledger()

    first = StoreProcess(data, database=database)
    await first.start()
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"{first.url}/jobs/{DSID}",
            json={"description": "crash loop"},
            headers={"Authorization": f"Bearer {driver_token}"},
        ) as resp,
    ):
        assert resp.status == 200
    await first.kill()

    for n in range(CYCLES):
        store = StoreProcess(data, database=database)
        await store.start()
        async with aiohttp.ClientSession() as session:
            cycle = Cycle(n, store.url, session, client_token, driver_token, ledger, rng)
            load: list[Coroutine[Any, Any, None]] = [
                *(cycle.submitter(k) for k in range(SUBMITTERS)),
                cycle.canceller(),
                *(cycle.driver_worker() for _ in range(DRIVER_WORKERS)),
                cycle.subscriber(f"/sub/{DSID}/job", ledger.client_frames),
                cycle.subscriber(f"/sub/{DSID}/jobs", ledger.driver_frames, cycle.on_stream_entry),
            ]
            tasks = [asyncio.create_task(c) for c in load]
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            await store.kill()
            cycle.stopped = True
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

    final = StoreProcess(data, database=database)
    await final.start()
    try:
        async with aiohttp.ClientSession() as session:
            cycle = Cycle(CYCLES, final.url, session, client_token, driver_token, ledger, rng)
            client_auth, driver_auth = cycle.client_auth, cycle.driver_auth
            status, _ = await cycle._post(
                f"/{DSID}/job/", {"job": MARKER, "request": {}}, client_auth
            )
            assert status == 201
            await _follow_until_marker(cycle, f"/sub/{DSID}/job", ledger.client_frames)
            await _follow_until_marker(cycle, f"/sub/{DSID}/jobs", ledger.driver_frames)

            stream = await _read_stream(session, final.url, driver_auth)
            jobs = await _all_jobs(session, final.url, client_auth)
            # The whole log of the client's channel, replayed from the start by a new reader.
            log: list[Record] = []
            reader = Cycle(CYCLES, final.url, session, client_token, driver_token, Ledger(), rng)
            await _follow_until_marker(reader, f"/sub/{DSID}/job", log)
    finally:
        await final.stop()

    assert not ledger.problems, ledger.problems[:20]
    lost, duplicated = _check(ledger, stream, jobs, log)
    # Each subscriber saw, across every kill, exactly its channel of the log, once, in order.
    for frames, expected in ((ledger.client_frames, log), (ledger.driver_frames, stream)):
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(set(seqs)), "a subscriber got a seq twice or out of order"
        assert seqs == [e["seq"] for e in expected], "a subscriber missed part of the log"
        assert frames == expected
    print(
        f"\ncrash loop [{backend}]: cycles survived {CYCLES}, writes acknowledged "
        f"{ledger.acknowledged} (+{ledger.repeats} idempotent repeats), lost {len(lost)}, "
        f"duplicated {len(duplicated)}, log events {len(log)}"
    )
    assert not lost, lost[:20]
    assert not duplicated, duplicated[:20]
    assert len(ledger.submits) >= CYCLES * 10
    assert ledger.cancels and ledger.updates


@pytest.mark.slow
async def test_sigkill_loop_under_mixed_load_keeps_every_acknowledged_write(
    backend: str, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        database = ""
        if backend == "postgres":
            database = await stack.enter_async_context(fresh_pg_database())
        await _crash_loop(backend, tmp_path, database)
