"""End-to-end fixtures: the installed ``jobqueue-store`` command in real processes.

A :class:`StoreProcess` runs ``jobqueue-store serve`` on a free port with its own data directory
(SQLite) and mints tokens with ``jobqueue-store token``; a :class:`DriverProcess` runs
``jobqueue-store run-driver``. Each waits for the line that says the process is ready, so tests
never sleep to guess. Every process is killed at the end of its test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMAND = str(Path(sys.executable).parent / "jobqueue-store")
READY_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jq(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed command and capture its output."""
    return subprocess.run(
        [COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=input,
    )


class _Output:
    """Collects a child's output stream in a thread, and waits for a line to appear."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, text: str, start: int = 0, timeout: float = READY_TIMEOUT) -> int:
        """Wait until a line after ``start`` contains ``text``; returns the count of lines."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(text in line for line in self.lines[start:]):
                    return len(self.lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise AssertionError(f"never saw {text!r}; output:\n{''.join(self.lines)}")
                self._cond.wait(left)

    def text(self) -> str:
        with self._cond:
            return "".join(self.lines)


class StoreProcess:
    """``jobqueue-store serve`` with its own data directory, restartable on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.output: _Output | None = None

    def start(self) -> None:
        """Start the store and wait until it listens."""
        self.proc = subprocess.Popen(
            [
                COMMAND,
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.output = _Output(self.proc.stdout)
        self.output.wait_for("listening on")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the store (SIGTERM: graceful) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def token(self, role: str, client: str | None = None, dsid: str | None = None) -> str:
        """A token minted by ``jobqueue-store token`` from this store's root key."""
        args = ["token", "--role", role, "--data-dir", str(self.data_dir)]
        if client:
            args += ["--client", client]
        if dsid:
            args += ["--dsid", dsid]
        done = jq(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


class DriverProcess:
    """``jobqueue-store run-driver TARGET [OPTIONS]`` against a store, with a state file.

    ``options`` go right after the target (a built-in driver's own options go there).
    """

    def __init__(
        self,
        target: str,
        url: str,
        token: str,
        dsid: str,
        state_file: Path,
        env: dict[str, str] | None = None,
        options: list[str] | None = None,
    ) -> None:
        self.args = [
            COMMAND,
            "run-driver",
            target,
            *(options or []),
            "--url",
            url,
            "--dsid",
            dsid,
            "--state-file",
            str(state_file),
        ]
        self.env = {**os.environ, "JOBQUEUE_STORE_TOKEN": token, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.output: _Output | None = None

    def start(self) -> None:
        """Start the driver and wait until its request stream is open."""
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=self.env,
        )
        assert self.proc.stdout is not None
        self.output = _Output(self.proc.stdout)
        self.output.wait_for("driver for ")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the driver and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def store_proc(tmp_path: Path) -> Iterator[StoreProcess]:
    """A running store process (SQLite in ``tmp_path``)."""
    proc = StoreProcess(tmp_path / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def drivers() -> Iterator[list[DriverProcess]]:
    """Driver processes a test starts (append them); all are killed at the end."""
    started: list[DriverProcess] = []
    yield started
    for d in started:
        d.stop(signal.SIGKILL)
