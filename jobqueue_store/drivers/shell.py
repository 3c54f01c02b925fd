"""Runs allow-listed commands as jobs: {command, args?, timeout?} -> {exit_code, stdout, stderr}.

A job's request names a command and its arguments (JSON Schema: request_schema of the datasource,
also in jobqueue_store/drivers/schemas/shell_request.json):

    {"command": "echo", "args": ["hello"], "timeout": 10}

The command must be on the allow-list (--allow), compared as written: a name found on PATH or
a path. It runs without a shell, in its own process group (a new session), with standard input
from /dev/null, a time limit (the request's "timeout", at most --max-timeout seconds) and a limit
on captured output (--max-output bytes per stream; the rest is read and dropped). The job's
response:

    {"exit_code": 0, "stdout": "hello\\n", "stderr": "", "truncated": false}

A command that is not allowed ends the job "forbidden"; one that runs past its time limit ends
it "failed". Cancelling the job (or the time limit) sends SIGTERM to the whole process group,
then SIGKILL after --grace seconds. The driver makes itself a child subreaper (Linux), so the
group's background processes become its children when their parent exits, and it reaps every
one: no orphan or zombie is left. A command that leaves its process group on purpose (setsid)
escapes this; keep such commands off the allow-list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jobqueue_store.driver import Driver, ForbiddenJob, Job
from jobqueue_store.drivers import (
    env_help,
    non_negative_float,
    positive_float,
    positive_int,
    split_list,
)

__all__ = [
    "REQUEST_SCHEMA",
    "CommandTimedOut",
    "ShellOptions",
    "add_options",
    "make_driver",
    "run_command",
]

log = logging.getLogger("jobqueue_store.drivers.shell")

ENV_PREFIX = "SHELL_DRIVER_"
DEFAULT_CONCURRENCY = 4
DEFAULT_ALLOW = "echo,date,uname,sleep,true,false"
DEFAULT_MAX_TIMEOUT = 60.0
DEFAULT_MAX_OUTPUT = 1024 * 1024
DEFAULT_GRACE = 2.0

REQUEST_SCHEMA: dict[str, Any] = json.loads(
    resources.files("jobqueue_store.drivers").joinpath("schemas/shell_request.json").read_text()
)
"""The JSON Schema of a job's request, declared as the datasource's ``request_schema``."""

PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 64 * 1024

_subreaper = False


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``), so they can be reaped."""
    global _subreaper
    if _subreaper or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d", ctypes.get_errno())
    _subreaper = True


class CommandTimedOut(Exception):
    """The command ran past its time limit and was killed."""


class _Capture:
    """Up to ``limit`` bytes of a stream; the rest is read and counted, not kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    async def pump_fd(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """Read the pipe ``fd`` to its end (it is closed afterwards)."""
        reader = asyncio.StreamReader(limit=READ_CHUNK)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while chunk := await reader.read(READ_CHUNK):
                room = self.limit - len(self.data)
                if room > 0:
                    self.data += chunk[:room]
                if len(chunk) > room:
                    self.truncated = True
        finally:
            transport.close()

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group (0: just check); False once no process of the group exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left in the group (macOS answers EPERM)
        return True
    return True


async def _reap_group(pgid: int, patience: float = 10.0) -> None:
    """SIGKILL what is left of the group and reap the members that are our children.

    Call only once the leader is reaped, so that ``waitpid`` cannot take it from asyncio.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while _signal_group(pgid, signal.SIGKILL):
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: never blocks)
        except ChildProcessError:
            pid = 0  # what is left is not our child (no subreaper): its parent must reap it
        if pid == 0:
            if loop.time() > deadline:
                log.warning("process group %d outlived SIGKILL (not our children)", pgid)
                return
            await asyncio.sleep(0.01)


async def _terminate(proc: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL it after ``grace`` seconds, reap the leader and the rest."""
    if proc.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            _signal_group(pgid, signal.SIGKILL)
            await proc.wait()
    await _reap_group(pgid)


async def _ensure_dead(proc: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """Finish :func:`_terminate` even if the caller is cancelled again meanwhile."""
    task = asyncio.ensure_future(_terminate(proc, pgid, grace))
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


async def run_command(
    argv: list[str],
    *,
    timeout: float,
    max_output: int = 1024 * 1024,
    grace: float = 2.0,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``argv`` in a new process group and return its exit code and captured output.

    Raises :class:`CommandTimedOut` after ``timeout`` seconds. If the caller is cancelled, the
    group is terminated (SIGTERM, then SIGKILL after ``grace``) and reaped before the
    cancellation propagates. ``on_start(pid)`` is called once the process runs (for tests).
    """
    become_subreaper()
    loop = asyncio.get_running_loop()
    # Our own pipes, not asyncio's: Process.wait() would otherwise also wait for the pipes to
    # close, which a background child holding them open delays forever.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            start_new_session=True,
        )
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    pgid = proc.pid  # a new session's leader leads its own process group
    if on_start is not None:
        on_start(proc.pid)
    out, err = _Capture(max_output), _Capture(max_output)
    readers = [
        asyncio.create_task(out.pump_fd(loop, out_r)),
        asyncio.create_task(err.pump_fd(loop, err_r)),
    ]
    try:
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            await _ensure_dead(proc, pgid, grace)
            raise CommandTimedOut(
                f"{argv[0]} ran past its time limit of {timeout:g}s and was killed"
            ) from None
        # The leader is gone; background children it left would hold the pipes open.
        await _reap_group(pgid)
        await asyncio.gather(*readers)
    finally:
        if proc.returncode is None or _signal_group(pgid, 0):
            await _ensure_dead(proc, pgid, grace)
        for reader in readers:
            reader.cancel()
        for reader in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return {
        "exit_code": proc.returncode,
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated": out.truncated or err.truncated,
    }


# the driver ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShellOptions:
    """What the operator allows: commands, time and output limits."""

    allow: frozenset[str] = frozenset(split_list(DEFAULT_ALLOW))
    max_timeout: float = DEFAULT_MAX_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT
    grace: float = DEFAULT_GRACE


def add_options(group: argparse._ArgumentGroup) -> None:
    """The shell driver's command-line options (each with an environment variable)."""
    group.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="COMMAND",
        help="a command jobs may run, a name or a path; repeat it or give a comma-separated "
        f"list; replaces the default list {env_help(ENV_PREFIX + 'ALLOW', DEFAULT_ALLOW)}",
    )
    env = ENV_PREFIX + "MAX_TIMEOUT"
    group.add_argument(
        "--max-timeout",
        type=positive_float,
        default=os.environ.get(env, str(DEFAULT_MAX_TIMEOUT)),
        metavar="SECONDS",
        help="the longest a command may run; a request's timeout may only shorten it "
        f"{env_help(env, DEFAULT_MAX_TIMEOUT)}",
    )
    env = ENV_PREFIX + "MAX_OUTPUT"
    group.add_argument(
        "--max-output",
        type=positive_int,
        default=os.environ.get(env, str(DEFAULT_MAX_OUTPUT)),
        metavar="BYTES",
        help="output kept per stream (stdout, stderr); the rest is read and dropped, and "
        f"'truncated' is true {env_help(env, DEFAULT_MAX_OUTPUT)}",
    )
    env = ENV_PREFIX + "GRACE"
    group.add_argument(
        "--grace",
        type=non_negative_float,
        default=os.environ.get(env, str(DEFAULT_GRACE)),
        metavar="SECONDS",
        help="after SIGTERM, how long a cancelled or timed-out command's group has before "
        f"SIGKILL {env_help(env, DEFAULT_GRACE)}",
    )


def options_from(args: argparse.Namespace) -> ShellOptions:
    """The options parsed by :func:`add_options` (flags win over the environment)."""
    if args.allow is not None:
        allow = [c for value in args.allow for c in split_list(value)]
    else:
        allow = split_list(os.environ.get(ENV_PREFIX + "ALLOW", DEFAULT_ALLOW))
    return ShellOptions(
        allow=frozenset(allow),
        max_timeout=args.max_timeout,
        max_output=args.max_output,
        grace=args.grace,
    )


def make_driver(args: argparse.Namespace | ShellOptions) -> Driver:
    """A shell driver with the options parsed by :func:`add_options` (or given directly)."""
    options = args if isinstance(args, ShellOptions) else options_from(args)
    driver = Driver(
        description="Runs allow-listed commands: {command, args, timeout} -> {exit_code, stdout, "
        "stderr, truncated}.",
        request_schema=REQUEST_SCHEMA,
        concurrency=DEFAULT_CONCURRENCY,
    )

    @driver.handler
    async def handle(job: Job) -> dict[str, Any]:
        """Run the job's command if it is allowed."""
        request = job.request
        command = request["command"]
        if command not in options.allow:
            raise ForbiddenJob(f"command {command!r} is not on this driver's allow-list")
        timeout = min(float(request.get("timeout", options.max_timeout)), options.max_timeout)
        return await run_command(
            [command, *request.get("args", [])],
            timeout=timeout,
            max_output=options.max_output,
            grace=options.grace,
        )

    log.info("shell driver allows: %s", ", ".join(sorted(options.allow)) or "(nothing)")
    return driver
