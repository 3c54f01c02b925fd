"""PostgreSQL rows written before schema 7 (each revision's request stored once) are not
rewritten: a row or event whose ``request_seq`` is NULL holds its request itself and is read as
before, and the job's later events keep that form until an update gives it a new revision."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from jobqueue_store.models import entry_request, with_request
from jobqueue_store.storage.postgres import PostgresStore
from tests.conftest import PG_DSN
from tests.contract import old_rows


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = "t_" + uuid.uuid4().hex[:16]
    yield name
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def _as_before_schema_7(conn: asyncpg.Connection) -> None:
    """Put every row in the form versions before schema 7 wrote: requests in the job rows,
    whole records in the events."""
    requests = {
        r["seq"]: entry_request(r["data"]).decode()
        for r in await conn.fetch("SELECT seq, data FROM events WHERE request_seq = seq")
    }
    for r in await conn.fetch("SELECT id, request_seq FROM jobs"):
        await conn.execute(
            "UPDATE jobs SET request = $2, request_seq = NULL WHERE id = $1",
            r["id"],
            requests[r["request_seq"]],
        )
    for r in await conn.fetch("SELECT seq, record, request_seq FROM events"):
        record = with_request(r["record"].encode(), requests[r["request_seq"]].encode())
        await conn.execute(
            "UPDATE events SET record = $2, request_seq = NULL WHERE seq = $1",
            r["seq"],
            record.decode(),
        )


async def test_rows_written_before_schema_7_are_read_and_written_in_their_form(
    schema: str,
) -> None:
    store = PostgresStore(PG_DSN, schema=schema)
    await store.open()
    try:
        await old_rows.write_first(store)
    finally:
        await store.close()
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        await _as_before_schema_7(conn)
    finally:
        await conn.close()

    store = PostgresStore(PG_DSN, schema=schema)
    await store.open()
    try:
        await old_rows.go_on(store)
    finally:
        await store.close()
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        forms = await conn.fetch(
            "SELECT type, request_seq IS NOT NULL AS points,"
            " coalesce(request_seq = seq, false) AS holds"
            " FROM events ORDER BY seq"
        )
        assert [tuple(r) for r in forms] == old_rows.FORMS
        rows = await conn.fetch("SELECT job, request IS NULL AS apart, request_seq FROM jobs")
        assert all(r["apart"] and r["request_seq"] is not None for r in rows)
    finally:
        await conn.close()
