"""Store implementations behind one interface (:class:`~jobqueue_store.storage.base.Store`)."""

from __future__ import annotations

from pathlib import Path

from jobqueue_store.storage.base import Store


def open_store(database: str, *, data_dir: Path, synchronous: str = "FULL") -> Store:
    """Choose the store for ``database``: a ``postgresql://`` DSN or an SQLite file path.

    An empty ``database`` means ``<data_dir>/jobqueue.sqlite3``. Imports are lazy so that each
    backend's driver is only loaded when used.
    """
    if database.startswith(("postgresql://", "postgres://")):
        from jobqueue_store.storage.postgres import PostgresStore

        return PostgresStore(database)
    from jobqueue_store.storage.sqlite import SQLiteStore

    path = Path(database) if database else data_dir / "jobqueue.sqlite3"
    return SQLiteStore(path, synchronous=synchronous)


__all__ = ["Store", "open_store"]
