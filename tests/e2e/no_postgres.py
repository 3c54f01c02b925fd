"""A pytest plugin (``-p tests.e2e.no_postgres``) for a machine without PostgreSQL's binaries:
tests/pgserver.py finds no ``pg_ctl``. Used by test_fresh_machine.py."""

from __future__ import annotations

import tests.pgserver


def _missing() -> None:
    raise RuntimeError("PostgreSQL's pg_ctl is not installed")


tests.pgserver._bindir = _missing  # type: ignore[assignment]
