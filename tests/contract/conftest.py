"""Fixtures of the store contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from jobqueue_store.storage.base import Store
from jobqueue_store.timers import ManualClock
from tests.conftest import _drop_schema, make_store

Reopen = Callable[[], Awaitable[Store]]
Opener = Callable[[], Awaitable[Store]]


@pytest.fixture
def clock() -> ManualClock:
    """The stores' clock (a module may override it, to start at another time)."""
    return ManualClock()


@pytest.fixture
async def opener(
    backend: str, tmp_path: Path, pg_schema: str, clock: ManualClock
) -> AsyncIterator[Opener]:
    """Open stores on one database (SQLite file or PostgreSQL schema), all on ``clock``."""
    opened: list[Store] = []

    async def open_one() -> Store:
        s = make_store(backend, tmp_path, pg_schema)
        s.clock = clock
        await s.open()
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        await s.close()
    if backend == "postgres":
        await _drop_schema(pg_schema)


@pytest.fixture
async def reopen(
    store: Store, backend: str, tmp_path: Path, pg_schema: str
) -> AsyncIterator[Reopen]:
    """Close ``store`` and open a new store on the same database (SQLite file or PG schema)."""
    opened: list[Store] = []

    async def _reopen() -> Store:
        await (opened[-1] if opened else store).close()
        again = make_store(backend, tmp_path, pg_schema)
        await again.open()
        opened.append(again)
        return again

    yield _reopen
    if opened:
        await opened[-1].close()
