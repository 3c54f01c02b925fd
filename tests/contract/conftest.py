"""Fixtures of the store contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from jobqueue_store.storage.base import Store
from tests.conftest import make_store

Reopen = Callable[[], Awaitable[Store]]


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
