"""Server processes for the harness: the store, the baseline, and helper processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections import deque
from pathlib import Path

from bench.load import HERE, pinned

PYTHON = sys.executable
STORE_COMMAND = str(Path(PYTHON).with_name("jobqueue-store"))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` in KiB (from ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """A child process that prints a ready line; its later output is kept (last lines).

    ``ready`` ``None``: the process prints no ready line; :meth:`start` returns once it is
    started, and the caller finds out itself when it is ready.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        ready: bytes | None = b"listening on",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.ready = ready
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=50)
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The child's pid (``taskset`` execs, so it is the server's own)."""
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Start and wait for the ready line."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=HERE.parent,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while self.ready is not None:
                line = await self.proc.stdout.readline()
                if not line:
                    await self.proc.wait()
                    raise RuntimeError(
                        f"{self.name} exited ({self.proc.returncode}) before it was ready:\n"
                        + "\n".join(self.tail)
                    )
                self.tail.append(line.decode(errors="replace").rstrip())
                if self.ready in line:
                    break
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.tail.append(line.decode(errors="replace").rstrip())

    def rss_kib(self) -> int:
        """The process's resident memory in KiB."""
        return rss_kib(self.pid)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


def store_proc(
    port: int,
    data_dir: Path,
    *,
    database: str = "",
    root_key: str = "",
    core: int | None = 0,
    name: str = "store",
    workers: int = 1,
) -> Proc:
    """``jobqueue-store serve`` on ``port`` (pinned to ``core``), with ``--workers`` processes
    sharing the port (PostgreSQL only)."""
    argv = [
        STORE_COMMAND,
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "WARNING",
    ]
    if database:
        argv += ["--database", database]
    if root_key:
        argv += ["--root-key", root_key]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return Proc(name, pinned(argv, core))


def baseline_proc(port: int, *, core: int | None = 0, use_uvloop: bool = True) -> Proc:
    """The bare aiohttp baseline on ``port`` (pinned to ``core``)."""
    argv = [PYTHON, "-m", "bench.baseline", str(port)]
    if use_uvloop:
        argv.append("--uvloop")
    return Proc("baseline", pinned(argv, core))
