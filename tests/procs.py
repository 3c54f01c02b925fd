"""Store processes for end-to-end tests: the installed command, started and killed for real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.conftest import PG_DSN

COMMAND = [sys.executable, "-m", "jobqueue_store"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> str:
    """Run ``jobqueue-store ARGS`` and return its standard output."""
    out = subprocess.run(
        [*COMMAND, *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )
    return out.stdout.strip()


class StoreProcess:
    """``jobqueue-store serve`` in a child process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database: str = "",
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database = database
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The store's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start and wait for the "listening on" line."""
        args = [
            *COMMAND,
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "WARNING",
        ]
        if self.database:
            args += ["--database", self.database]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env
        )
        assert self.proc.stdout is not None
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("store exited before listening:\n" + b"".join(lines).decode())
            lines.append(line)
            if b"listening on" in line:
                break
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM and wait: the graceful shutdown."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 30)


@asynccontextmanager
async def fresh_pg_database() -> AsyncIterator[str]:
    """A new PostgreSQL database for a test that runs store processes; dropped afterwards."""
    import asyncpg

    name = "jq_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
