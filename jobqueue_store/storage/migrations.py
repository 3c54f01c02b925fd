"""The numbered schema migrations shipped with the package, one folder per backend."""

from __future__ import annotations

import re
from importlib import resources

from jobqueue_store.errors import StoreError

_MIGRATION_RE = re.compile(r"(\d{4})_[A-Za-z0-9_]+\.sql")


def packaged(backend: str) -> list[tuple[int, str]]:
    """``storage/sql/<backend>/NNNN_name.sql`` as ``(version, sql)``, in version order.

    The versions must run 1..n without gaps: a gap means a migration is missing from the package.
    """
    folder = resources.files("jobqueue_store.storage").joinpath("sql", backend)
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        match = _MIGRATION_RE.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise StoreError(
            f"The {backend} migrations are not numbered 1..n without gaps: {versions}."
        )
    return found
