"""A private PostgreSQL server for tests that stop or restart it.

The machine's shared server (port 5432) serves every other test and is never touched: this one is
``initdb``-ed into a fresh temporary directory, listens on a free port of 127.0.0.1 with its
socket in that directory, and is removed at the end. As root it runs as the ``postgres`` OS user
(PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now (not tests.procs': that module reads the
    PostgreSQL DSN when imported, and tests/conftest.py uses this one before deciding it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found is None:
        raise RuntimeError("PostgreSQL's pg_ctl is not installed")
    return Path(found).resolve().parent


class PostgresServer:
    """One private PostgreSQL cluster: :meth:`start`, :meth:`stop`, :meth:`restart`.

    ``settings`` are extra server settings (``name=value``), e.g. ``fsync=off`` for a cluster
    whose data nobody needs after the run."""

    def __init__(self, root: Path, settings: Sequence[str] = ()) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.bindir = _bindir()
        self.settings = tuple(settings)
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def dsn(self) -> str:
        """A DSN for the ``postgres`` database as the ``postgres`` role (trust auth)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_user, str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}\n{tail}")

    def init(self) -> None:
        """Create the cluster (trust authentication, superuser ``postgres``)."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {setting}" for setting in self.settings)
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-w", "-t", "60",
            "-l", str(self.root / "server.log"), "-o", options, *extra,
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions and disconnect clients)."""
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``mode``) and start again, waiting until it accepts connections."""
        self._ctl("restart", "-m", mode)


@contextlib.contextmanager
def postgres_server(settings: Sequence[str] = ()) -> Iterator[PostgresServer]:
    """A started private server in a temporary directory; stopped and removed afterwards.
    Raises ``RuntimeError`` if PostgreSQL is not installed or the server does not start."""
    # Not pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    bindir = _bindir()  # before anything is created: no binaries, nothing to clean up
    root = Path(tempfile.mkdtemp(prefix="jq-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
    except (LookupError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(
            f"PostgreSQL cannot run as root without a 'postgres' user: {exc}"
        ) from None
    server = PostgresServer(root, settings)
    server.bindir = bindir
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # not running
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
