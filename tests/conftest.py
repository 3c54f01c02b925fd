"""Shared fixtures: a fresh store of each backend per test.

The PostgreSQL backend runs against the real server named by ``JOBQUEUE_STORE_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``); every test gets its own schema, dropped
afterwards. If the server is unreachable the PostgreSQL tests fail (they are never skipped in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobqueue_store.storage.base import Store

PG_DSN = os.environ.get("JOBQUEUE_STORE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


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
