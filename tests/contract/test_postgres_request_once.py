"""PostgreSQL rows written before schema 7 (each revision's request stored once) are not
rewritten: a row or event whose ``request_seq`` is NULL holds its request itself and is read as
before, and the job's later events keep that form until an update gives it a new revision."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from jobqueue_store.models import with_request
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
    whole records and data in the events."""
    requests = {
        r["seq"]: r["request"]
        for r in await conn.fetch("SELECT seq, request FROM events WHERE request IS NOT NULL")
    }
    await conn.execute(
        "UPDATE jobs j SET request = e.request, request_seq = NULL FROM events e"
        " WHERE e.seq = j.request_seq"
    )
    for r in await conn.fetch("SELECT seq, data, record, request, request_seq FROM events"):
        record, data = r["record"], r["data"]
        if r["request_seq"] is not None:
            record = with_request(record.encode(), requests[r["request_seq"]].encode()).decode()
        if r["request"] is not None:
            data = with_request(data.encode(), r["request"].encode()).decode()
        await conn.execute(
            "UPDATE events SET record = $2, data = $3, request = NULL, request_seq = NULL"
            " WHERE seq = $1",
            r["seq"],
            record,
            data,
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
            "SELECT type, request_seq IS NOT NULL AS points, request IS NOT NULL AS holds"
            " FROM events ORDER BY seq"
        )
        assert [tuple(r) for r in forms] == old_rows.FORMS
        rows = await conn.fetch("SELECT job, request IS NULL AS apart, request_seq FROM jobs")
        assert all(r["apart"] and r["request_seq"] is not None for r in rows)
    finally:
        await conn.close()
