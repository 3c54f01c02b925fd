"""Shared fixtures: a fresh store of each backend per test, and the PostgreSQL server they use.

The PostgreSQL backend runs against the real server named by ``JOBQUEUE_STORE_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``); every test gets its own schema, dropped
afterwards. When no server answers there, the session starts a private throwaway cluster from the
installed PostgreSQL binaries (tests/pgserver.py) and points ``PG_DSN`` (and the variable, for
child processes) at it; where no binaries exist, the PostgreSQL half is skipped, and the header
of the run says so in one line. ``PG_DSN`` is settled in ``pytest_configure``, before any test
module is imported, so ``from tests.conftest import PG_DSN`` sees the final value.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobqueue_store.storage.base import Store

PG_ENV = "JOBQUEUE_STORE_TEST_PG"
PG_DSN = os.environ.get(PG_ENV, "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]
PG_STATUS = ""
"""One line for the run's header: which PostgreSQL server the PostgreSQL half uses."""
PG_SKIP: str | None = None
"""Why the PostgreSQL half is skipped (no server, no binaries), or None when it runs."""
_PRIVATE = contextlib.ExitStack()
# What a test not parametrized by backend uses when it needs PostgreSQL.
_PG_MARKS = ("PG_DSN", "fresh_pg_database", "postgres_server(", "PostgresStore(", '"postgres"')


def _answers(dsn: str) -> bool:
    """Whether a PostgreSQL server accepts connections at ``dsn`` (False only if none answers:
    other failures, such as a missing database, are left for the tests to report)."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError):
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    """Settle ``PG_DSN``: the server named, else a private cluster, else skip the half."""
    global PG_DSN, PG_SKIP, PG_STATUS
    if _answers(PG_DSN):
        PG_STATUS = f"PostgreSQL half: the server at {PG_DSN}"
        return
    from tests.pgserver import postgres_server

    try:
        # Nobody needs this cluster's data after the run: no flushing to disk.
        settings = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
        server = _PRIVATE.enter_context(postgres_server(settings))
    except RuntimeError as exc:
        PG_SKIP = (
            f"no PostgreSQL server answers at {PG_DSN} and none can be started here "
            f"({str(exc).splitlines()[0]}): to run the PostgreSQL half, install PostgreSQL "
            f"(initdb and pg_ctl) or set {PG_ENV} to a running server's DSN"
        )
        PG_STATUS = f"PostgreSQL half: SKIPPED: {PG_SKIP}"
        return
    PG_STATUS = (
        f"PostgreSQL half: no server answered at {PG_DSN}; a private throwaway cluster "
        f"({server.bindir}) serves it at {server.dsn}"
    )
    PG_DSN = os.environ[PG_ENV] = server.dsn


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop and remove the private cluster, if one was started."""
    _PRIVATE.close()


def pytest_report_header(config: pytest.Config) -> str:
    """The line that says where the PostgreSQL half runs (or why it is skipped)."""
    return PG_STATUS


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "backend" in callspec.params:
        return bool(callspec.params["backend"] == "postgres")
    if "two_stores" in getattr(item, "fixturenames", ()):
        return True
    function = getattr(item, "function", None)
    if function is None:
        return False
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        source = item.name
    return any(mark in source for mark in _PG_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without any PostgreSQL, skip the tests that need it (with the reason and the remedy)."""
    if PG_SKIP is None:
        return
    skip = pytest.mark.skip(reason=PG_SKIP)
    for item in items:
        if _needs_postgres(item):
            item.add_marker(skip)


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def make_store(backend: str, tmp_path: Path, schema: str) -> Store:
    """A not yet opened store of ``backend`` in ``tmp_path`` / PostgreSQL ``schema``."""
    if backend == "sqlite":
        from jobqueue_store.storage.sqlite import SQLiteStore

        return SQLiteStore(tmp_path / "jobqueue.sqlite3")
    from jobqueue_store.storage.postgres import PostgresStore

    return PostgresStore(PG_DSN, schema=schema)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the store backend under test."""
    return str(request.param)


@pytest.fixture
def pg_schema() -> str:
    """A fresh PostgreSQL schema name for this test."""
    return "t_" + uuid.uuid4().hex[:16]


@pytest.fixture
async def store(backend: str, tmp_path: Path, pg_schema: str) -> AsyncIterator[Store]:
    """An open, empty store of each backend."""
    s = make_store(backend, tmp_path, pg_schema)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        if backend == "postgres":
            await _drop_schema(pg_schema)
