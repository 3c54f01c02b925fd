"""A SQLite store written before revisions existed: its stored records get the fields a status
read sends today (schema 8), because status reads serve the stored text unchanged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from jobqueue_store.models import Datasource
from jobqueue_store.storage.sqlite import SQLiteStore


async def test_old_records_gain_revision_fields(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.put_datasource(Datasource("ds", ""))
    await store.submit("ds", "old", "app", {"text": "caf\u00e9 \u0000", "big": 2**63 - 1})
    await store.submit("ds", "new", "app", {"n": 1})
    await store.close()

    # Make "old" look as a version before revisions wrote it, and the schema version 7.
    db = sqlite3.connect(path)
    (blob,) = db.execute("SELECT record FROM jobs WHERE job = 'old'").fetchone()
    old = orjson.loads(blob)
    del old["revision"], old["desired_state"]
    db.execute("UPDATE jobs SET record = ? WHERE job = 'old'", (orjson.dumps(old),))
    db.execute("UPDATE schema_version SET version = 7")
    db.commit()
    db.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        for job in ("old", "new"):
            found = await store.get_job_wire("ds", job)
            record = await store.get_job("ds", job)
            assert found is not None and record is not None
            assert orjson.loads(found[1]) == record.to_wire()
        found = await store.get_job_wire("ds", "old")
        assert found is not None
        wire = orjson.loads(found[1])
        assert wire["revision"] == 0 and wire["desired_state"] == "running"
        assert wire["request"] == {"text": "caf\u00e9 \u0000", "big": 2**63 - 1}
    finally:
        await store.close()
