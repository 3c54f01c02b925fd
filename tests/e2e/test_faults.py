"""Faults of the database under a running store: disk full, read-only, PostgreSQL restarted.

Each fault is real: a 4 MiB tmpfs filled up, an ext4 file system on a loop device that the
kernel remounts read-only after an error (``errors=remount-ro``), a private PostgreSQL server
stopped and started under load. The store must answer 503 (JSON, code ``unavailable``, a sentence
that says what happened), keep serving what it can, recover by itself once the fault is gone, and
lose or corrupt nothing it acknowledged. The file-system faults need root (mount); without it
they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pgserver import postgres_server
from tests.procs import StoreProcess, cli

DSID = "ds1"
Record = dict[str, Any]


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def _mounted(kind: str, where: Path, tmp_path: Path) -> Iterator[Path]:
    """A small file system mounted at ``where``: ``tmpfs`` (4 MiB) or ``ext4`` on a loop device."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where.mkdir(parents=True)
    if kind == "tmpfs":
        done = _sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    else:
        image = tmp_path / "ext4.img"
        with image.open("wb") as f:
            f.truncate(16 * 1024 * 1024)
        made = _sh("mkfs.ext4", "-q", "-F", str(image))
        assert made.returncode == 0, made.stderr
        done = _sh("mount", "-o", "loop,errors=remount-ro", str(image), str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {kind} file system here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        _sh("umount", str(where))


class Api:
    """The few requests these tests make, with the client and driver tokens."""

    def __init__(self, session: aiohttp.ClientSession, url: str, data: Path) -> None:
        self.session = session
        self.url = url
        client = cli("token", "--role", "client", "--client", "app", data_dir=data)
        driver = cli("token", "--role", "driver", data_dir=data)
        self.client = {"Authorization": f"Bearer {client}"}
        self.driver = {"Authorization": f"Bearer {driver}"}

    async def call(
        self, method: str, path: str, *, driver: bool = False, body: Any = None
    ) -> tuple[int, Any]:
        """``(status, JSON body)``."""
        async with self.session.request(
            method, self.url + path, json=body, headers=self.driver if driver else self.client
        ) as resp:
            return resp.status, await resp.json()

    async def submit(self, job: str, request: Any) -> tuple[int, Any]:
        """Submit ``job``."""
        return await self.call("POST", f"/{DSID}/job/", body={"job": job, "request": request})

    async def stream(self) -> list[Record]:
        """The whole request stream."""
        status, entries = await self.call("GET", f"/jobs/{DSID}/since/0?limit=10000", driver=True)
        assert status == 200, entries
        assert isinstance(entries, list)
        return entries


def _assert_unavailable(status: int, body: Any, *words: str) -> None:
    assert status == 503, (status, body)
    assert body["code"] == "unavailable", body
    message = body["error"].lower()
    assert any(w in message for w in words), body


def _assert_exactly_once(stream: list[Record], acked: set[str]) -> None:
    jobs = [e["job"] for e in stream if e["type"] == "request"]
    assert len(jobs) == len(set(jobs)), "a job appears twice in the request stream"
    assert acked <= set(jobs), f"{len(acked - set(jobs))} acknowledged submits lost"
    seqs = [e["seq"] for e in stream]
    assert seqs == sorted(set(seqs))


def _integrity(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


async def _start_store(data: Path, database: str = "") -> StoreProcess:
    store = StoreProcess(data, database=database)
    await store.start()
    return store


# SQLite: disk full --------------------------------------------------------------------------------
async def test_sqlite_disk_full_is_503_then_recovers_without_corruption(tmp_path: Path) -> None:
    with _mounted("tmpfs", tmp_path / "small", tmp_path) as disk:
        data = disk / "data"
        store = await _start_store(data)
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(session, store.url, data)
                status, _ = await api.call(
                    "PUT", f"/jobs/{DSID}", driver=True, body={"description": "d"}
                )
                assert status == 200
                acked = set()
                for i in range(20):
                    status, _ = await api.submit(f"before-{i}", {"i": i})
                    assert status == 201
                    acked.add(f"before-{i}")

                # Fill the file system, then write until the database needs a page it cannot get.
                # (The close is inside the suppress too: it flushes what the last write left.)
                filler = disk / "filler"
                with contextlib.suppress(OSError), filler.open("wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                big = {"pad": "x" * 200_000}
                refused: tuple[int, Any] | None = None
                for i in range(40):
                    status, body = await api.submit(f"full-{i}", big)
                    if status != 201:
                        refused = (status, body)
                        break
                    acked.add(f"full-{i}")
                assert refused is not None, "the store never ran out of disk space"
                _assert_unavailable(*refused, "disk", "full")
                again = await api.submit("full-again", {"small": True})
                if again[0] == 201:
                    acked.add("full-again")
                else:
                    _assert_unavailable(*again, "disk", "full")

                # Reads go on while writes are refused.
                status, record = await api.call("GET", f"/{DSID}/job/before-3")
                assert status == 200 and record["status"] == "submitted"
                _assert_exactly_once(await api.stream(), acked)

                # Space freed: writes work again, with no restart.
                filler.unlink()
                status, _ = await api.submit("after", big)
                assert status == 201
                acked.add("after")
                status, record = await api.submit(f"full-{i}", big)
                assert status == 201, record  # the refused write was not half stored
                acked.add(f"full-{i}")
                _assert_exactly_once(await api.stream(), acked)
        finally:
            await store.stop()
        _integrity(data / "jobqueue.sqlite3")


# SQLite: read-only --------------------------------------------------------------------------------
async def test_sqlite_read_only_file_system_is_503_not_500(tmp_path: Path) -> None:
    with _mounted("ext4", tmp_path / "ro", tmp_path) as disk:
        data = disk / "data"
        store = await _start_store(data)
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(session, store.url, data)
                status, _ = await api.call(
                    "PUT", f"/jobs/{DSID}", driver=True, body={"description": "d"}
                )
                assert status == 200
                acked = set()
                for i in range(20):
                    status, _ = await api.submit(f"before-{i}", {"i": i})
                    assert status == 201
                    acked.add(f"before-{i}")

                # The kernel remounts the file system read-only, as after an I/O error.
                device = _sh("findmnt", "-n", "-o", "SOURCE", str(disk)).stdout.strip()
                trigger = Path("/sys/fs/ext4", Path(device).name, "trigger_fs_error")
                await asyncio.to_thread(trigger.write_text, "test: read-only database\n")
                assert "emergency_ro" in _sh("findmnt", "-n", str(disk)).stdout or (
                    "ro" in _sh("findmnt", "-n", "-o", "OPTIONS", str(disk)).stdout.split(",")
                )

                for i in range(3):
                    status, body = await api.submit(f"ro-{i}", {"i": i})
                    _assert_unavailable(status, body, "read-only", "readonly")
                    status, body = await api.call(
                        "POST", f"/jobs/{DSID}/job/before-{i}/", driver=True,
                        body={"status": "accepted"},
                    )  # fmt: skip
                    _assert_unavailable(status, body, "read-only", "readonly")
                status, record = await api.call("GET", f"/{DSID}/job/before-3")
                assert status == 200 and record["version"] == 1
        finally:
            await store.stop()

    # The same file system, repaired and mounted again: everything acknowledged is there.
    image = tmp_path / "ext4.img"
    _sh("e2fsck", "-f", "-y", str(image))
    with contextlib.ExitStack() as stack:
        where = tmp_path / "rw"
        where.mkdir()
        done = _sh("mount", "-o", "loop", str(image), str(where))
        assert done.returncode == 0, done.stderr
        stack.callback(_sh, "umount", str(where))
        _integrity(where / "data" / "jobqueue.sqlite3")
        store = await _start_store(where / "data")
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(session, store.url, where / "data")
                _assert_exactly_once(await api.stream(), acked)
                status, _ = await api.submit("ro-0", {"i": 0})
                assert status == 201  # the refused submit had stored nothing
        finally:
            await store.stop()


# PostgreSQL: restarted under load -----------------------------------------------------------------
async def _submitter(api: Api, n: int, acked: set[str], refused: list[Any], stop: Any) -> None:
    i = 0
    while not stop.is_set():
        job = f"s{n}-{i}"
        i += 1
        status, body = await api.submit(job, {"n": n, "i": i})
        if status == 201:
            acked.add(job)
        else:
            refused.append((status, body))
            await asyncio.sleep(0.02)


async def _follow(api: Api, frames: list[Record], want: set[str]) -> None:
    """A driver subscription that resumes with ``after=`` until it saw every job in ``want``."""
    while not want <= {f["job"] for f in frames}:
        after = frames[-1]["seq"] if frames else 0
        with contextlib.suppress(aiohttp.ClientError):
            async with api.session.ws_connect(
                f"{api.url}/sub/{DSID}/jobs?after={after}", headers=api.driver
            ) as ws:
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    frames.append(msg.json())
                    if want <= {f["job"] for f in frames}:
                        return
        await asyncio.sleep(0.1)


async def test_postgres_restart_under_load_is_503_then_reconnects(tmp_path: Path) -> None:
    with postgres_server() as server, contextlib.ExitStack() as stack:
        data = tmp_path / "data"
        store = await _start_store(data, server.dsn)
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(session, store.url, data)
                status, _ = await api.call(
                    "PUT", f"/jobs/{DSID}", driver=True, body={"description": "d"}
                )
                assert status == 200
                acked: set[str] = set()
                refused: list[Any] = []
                stop = asyncio.Event()
                frames: list[Record] = []
                sub = asyncio.create_task(_follow(api, frames, {"marker"}))
                stack.callback(sub.cancel)
                load = [
                    asyncio.create_task(_submitter(api, n, acked, refused, stop)) for n in range(4)
                ]
                while len(acked) < 100:  # noqa: ASYNC110 (polling a plain set is the point)
                    await asyncio.sleep(0.01)

                await asyncio.to_thread(server.stop, "fast")
                # The database is down: writes and readiness are 503, the process stays up.
                status, body = await api.submit("during", {})
                _assert_unavailable(status, body, "postgresql", "database")
                status, body = await api.call("GET", f"/{DSID}/job/s0-1")
                _assert_unavailable(status, body, "postgresql", "database")
                async with session.get(f"{store.url}/readyz") as resp:
                    assert resp.status == 503
                outage = len(acked)

                await asyncio.to_thread(server.start)
                while len(acked) < outage + 100:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                # A restart under load too (pg_ctl restart -m fast).
                await asyncio.to_thread(server.restart, "fast")
                mark = len(acked)
                while len(acked) < mark + 100:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*load), 30)

                assert refused, "no request saw the outage"
                assert {s for s, _ in refused} == {503}, {(s, b["error"]) for s, b in refused}
                for status, body in refused:
                    _assert_unavailable(status, body, "postgresql", "database")
                status, _ = await api.submit("marker", {})
                assert status == 201
                acked.add("marker")
                await asyncio.wait_for(sub, 30)
                stream = await api.stream()
                _assert_exactly_once(stream, acked)
                seqs = [f["seq"] for f in frames]
                assert seqs == [e["seq"] for e in stream]  # the subscriber lost nothing
                async with session.get(f"{store.url}/readyz") as resp:
                    assert resp.status == 200
        finally:
            await store.stop()
