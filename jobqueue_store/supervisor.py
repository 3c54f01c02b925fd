"""Supervised worker processes for ``serve --workers N``.

The first process serves and supervises N-1 children that serve the same port. A child:

- dies with its parent: on Linux the kernel sends it SIGTERM when the parent dies
  (``PR_SET_PDEATHSIG``), and everywhere it watches a pipe whose other end only the parent holds
  and shuts down when that end closes (which also covers a parent that died before the child
  could ask the kernel);
- is reaped when it exits and restarted after a back-off (0.5 s, doubling up to 30 s, back to
  0.5 s once a child has run for a minute);
- gets SIGTERM when the parent does, and the parent waits for it before exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger("jobqueue_store.supervisor")

PR_SET_PDEATHSIG = 1
MIN_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0


def die_with_parent(parent_pid: int) -> None:
    """In a child: ask the kernel for SIGTERM when the parent dies (Linux); exit now if the
    parent is already gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        raise SystemExit(0)


def watch_parent(loop: asyncio.AbstractEventLoop, fd: int, stop: Callable[[], None]) -> None:
    """In a child: call ``stop`` when the pipe ``fd`` from the parent reaches end of file (the
    parent exited or was killed)."""
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            os.close(fd)
            log.warning("the supervising process is gone: shutting down")
            stop()

    loop.add_reader(fd, readable)


class Supervisor:
    """Runs ``count`` children with ``argv`` and keeps them running until :meth:`terminate`."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.argv = list(argv)
        self.count = count
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.restarts = 0
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._codes: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start the children (in the running loop)."""
        for slot in range(self.count):
            self._tasks.append(asyncio.create_task(self._keep(slot)))

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, int]:
        read_end, write_end = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                "--parent-pid",
                str(os.getpid()),
                "--parent-fd",
                str(read_end),
                pass_fds=(read_end,),
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        return proc, write_end

    async def _keep(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.min_backoff
        while not self._stopping.is_set():
            try:
                proc, pipe = await self._spawn()
            except OSError as exc:
                log.error("could not start worker %d: %s", slot, exc)
                code = -1
                lived = 0.0
            else:
                self._procs[slot] = proc
                if self._stopping.is_set():  # terminate() came while it was starting
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                started = loop.time()
                try:
                    code = await proc.wait()  # reaps it
                finally:
                    os.close(pipe)
                    self._procs.pop(slot, None)
                lived = loop.time() - started
            if self._stopping.is_set():
                # A child still starting up when told to stop dies of the signal itself.
                self._codes[slot] = 0 if code == -signal.SIGTERM else code
                return
            self._codes[slot] = code
            if lived >= STABLE_AFTER:
                backoff = self.min_backoff
            log.warning(
                "worker %d exited (status %d) after %.1f s; restarting it in %.1f s",
                slot,
                code,
                lived,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
                return
            backoff = min(backoff * 2, self.max_backoff)
            self.restarts += 1

    @property
    def pids(self) -> list[int]:
        """Process ids of the running children."""
        return [p.pid for p in self._procs.values() if p.returncode is None]

    def terminate(self) -> None:
        """No more restarts; SIGTERM to every child."""
        self._stopping.set()
        for proc in list(self._procs.values()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        """Wait for the children after :meth:`terminate` (SIGKILL after ``timeout``); 0 if
        every child exited with 0, else 1."""
        self.terminate()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            if pending:
                for proc in list(self._procs.values()):
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.wait(pending)
        return 0 if all(code == 0 for code in self._codes.values()) else 1
