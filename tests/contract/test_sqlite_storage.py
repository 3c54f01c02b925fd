"""SQLite-only behaviour of the stored text, the schema and the write-ahead log: records written
before revisions existed get the fields a status read sends today (schema 8), because status
reads serve the stored text unchanged; no CHECK or partial index tests an IN list (schema 9);
the log is checkpointed by a connection of its own."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobqueue_store import errors
from jobqueue_store.models import Datasource, Dispatch, Status, StatusUpdate
from jobqueue_store.storage import sqlite as sqlite_module
from jobqueue_store.storage.sqlite import TERMINAL_SQL, UNFINISHED_SQL, SQLiteStore, _in_thread
from jobqueue_store.storage.sqlite_leases import SQL_CLAIMABLE
from tests.contract import old_rows


def _as_schema_9(db: sqlite3.Connection) -> None:
    """Give a database of this version the layout schema 9 had: each row and event holds its
    whole record, the columns of schema 10 are gone, and jobs_claimable is as schema 9 made it
    (schema 11)."""
    requests = {
        seq: orjson.loads(data)["request"]
        for seq, data in db.execute("SELECT seq, data FROM events WHERE request_seq = seq")
    }

    def whole(text: bytes, request_seq: int | None) -> bytes:
        if request_seq is None:
            return text
        value = orjson.loads(text)
        value["request"] = requests[request_seq]
        return orjson.dumps(value)

    for row_id, record, request_seq in db.execute(
        "SELECT id, record, request_seq FROM jobs"
    ).fetchall():
        db.execute("UPDATE jobs SET record = ? WHERE id = ?", (whole(record, request_seq), row_id))
    for seq, record, request_seq in db.execute(
        "SELECT seq, record, request_seq FROM events"
    ).fetchall():
        db.execute("UPDATE events SET record = ? WHERE seq = ?", (whole(record, request_seq), seq))
    for table in ("events", "jobs"):
        db.execute(f"ALTER TABLE {table} DROP COLUMN request_seq")
    _before_schema_11(db)


def _as_version(path: Path, version: int, change: Callable[[sqlite3.Connection], None]) -> None:
    """Apply ``change`` to the database at ``path`` and record it as schema ``version``."""
    db = sqlite3.connect(path)
    try:
        change(db)
        db.execute("UPDATE schema_version SET version = ?", (version,))
        db.commit()
    finally:
        db.close()


def _before_schema_11(db: sqlite3.Connection) -> None:
    """Give a database of this version the jobs_claimable index schema 10 had."""
    db.execute("DROP INDEX jobs_claimable")
    db.execute("ALTER TABLE jobs DROP COLUMN leased")
    db.execute(
        "CREATE INDEX jobs_claimable ON jobs (datasource_id, id)"
        " WHERE (status = 'submitted' OR status = 'retrying') AND lease_id IS NULL"
    )


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
    _as_schema_9(db)
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


async def test_the_log_is_copied_into_the_database_soon_after_the_writes(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint is off (it would run inside a commit); a connection of its
    own copies the write-ahead log into the database file soon after the writes."""
    path = tmp_path / "ckpt.sqlite3"
    store = SQLiteStore(path, checkpoint_every=0.05)
    await store.open()
    try:
        await store.put_datasource(Datasource("ds", ""))
        before = path.stat().st_size
        pad = "x" * 2000
        for start in range(0, 500, 50):
            await asyncio.gather(
                *(
                    store.submit("ds", f"j{i}", "app", {"pad": pad})
                    for i in range(start, start + 50)
                )
            )
        # 500 jobs of 2 KB: over 1 MB, far below SQLite's own automatic checkpoint (1,000 pages,
        # which the writer has off): only the store's checkpoint moves it into the file.
        for _ in range(200):
            if path.stat().st_size > before + 1_000_000:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > before + 1_000_000
        page = await store.list_jobs("ds", None, limit=1000)
        assert len(page.jobs) == 500
    finally:
        await store.close()


async def test_the_log_starts_over_under_a_steady_load(tmp_path: Path) -> None:
    """Writes that never pause still let the log be copied whole and written from its start
    again once it holds ``log_restart_frames`` pages: the log file stays a fraction of what was
    written (the checkpoint connection alone, racing the writer, never caught up: the log grew
    by everything written)."""
    path = tmp_path / "steady.sqlite3"
    interval = 0.02
    store = SQLiteStore(path, checkpoint_every=interval, log_restart_frames=256)
    await store.open()
    try:
        await store.put_datasource(Datasource("ds", ""))
        pad = "x" * 2000
        written = 0
        began = asyncio.get_running_loop().time()
        n = 0
        # At least 60 checkpoint intervals of writes with no pause between the batches.
        while asyncio.get_running_loop().time() - began < 60 * interval or n < 2000:
            await asyncio.gather(
                *(store.submit("ds", f"j{n + i}", "app", {"pad": pad}) for i in range(50))
            )
            n += 50
            written += 50 * 2 * len(pad)  # the record in the job's row and in its event
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal < written / 3, (wal, written, n)
    finally:
        await store.close()


async def test_the_record_cache_holds_compact_copies(tmp_path: Path) -> None:
    """A cached record costs about its length, also after a write replaced it: orjson's output
    keeps a 4 KiB buffer, and 50,000 cached records would otherwise hold 200 MiB."""

    async def growth(record_cache: int) -> int:
        store = SQLiteStore(tmp_path / f"c{record_cache}.sqlite3", record_cache=record_cache)
        await store.open()
        try:
            await store.put_datasource(Datasource("ds", ""))
            for i in range(300):
                await store.submit("ds", f"j{i}", "app", {"n": i})
                await store.get_job_wire("ds", f"j{i}")  # read: now cached
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(300):
                    await store.cancel("ds", f"j{i}", "app")  # the cached record is replaced
                return tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        finally:
            await store.close()

    cached, uncached = await growth(1000), await growth(0)
    assert (cached - uncached) / 300 < 1024


async def test_a_closed_store_answers_no_read_from_its_record_cache(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "closed.sqlite3")
    await store.open()
    await store.put_datasource(Datasource("ds", ""))
    await store.submit("ds", "j1", "app", {"n": 1})
    assert await store.get_job_wire("ds", "j1") is not None  # read: now cached
    await store.close()
    with pytest.raises(errors.Unavailable):
        await store.get_job_wire("ds", "j1")


def test_no_check_or_partial_index_tests_an_in_list(tmp_path: Path) -> None:
    """SQLite evaluates CHECK constraints and partial-index predicates on every row written, and
    builds a temporary b-tree for an IN list of more than two constants each time (a status
    change cost about 50 µs that way): the schema writes such conditions as OR-ed equalities."""
    store = SQLiteStore(tmp_path / "schema.sqlite3")
    asyncio.run(_open_and_close(store))
    db = sqlite3.connect(tmp_path / "schema.sqlite3")
    try:
        schema = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        plans = {
            name: " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            for name, sql, args in [
                ("claim", SQL_CLAIMABLE, ("ds", 0, 10)),
                (
                    "quota",
                    "SELECT count(*) FROM jobs WHERE datasource_id = ? AND client = ?"
                    f" AND {UNFINISHED_SQL}",
                    ("ds", "app"),
                ),
                (
                    "oldest",
                    f"SELECT min(id) FROM jobs WHERE {UNFINISHED_SQL} GROUP BY datasource_id",
                    (),
                ),
                (
                    "purge",
                    f"SELECT id FROM jobs WHERE {TERMINAL_SQL} AND updated_at < 5"
                    " ORDER BY updated_at",
                    (),
                ),
            ]
        }
    finally:
        db.close()
    in_lists = [name for name, sql in schema if re.search(r"\bIN\s*\(", sql, re.IGNORECASE)]
    assert in_lists == [], in_lists
    # The queries repeat the predicates as written, so they still use the partial indexes.
    assert "USING INDEX jobs_claimable" in plans["claim"], plans
    assert "INDEX jobs_unfinished" in plans["quota"], plans
    assert "INDEX jobs_unfinished" in plans["oldest"], plans
    assert "USING INDEX jobs_terminal_updated" in plans["purge"], plans


async def _open_and_close(store: SQLiteStore) -> None:
    await store.open()
    await store.close()


async def test_schema_9_keeps_every_event_and_the_seq_counter(tmp_path: Path) -> None:
    """Upgrading rebuilds the events table (a CHECK cannot change in place): every entry stays,
    and a seq once handed out is not handed out again, also when the newest entries are gone."""
    path = tmp_path / "v8.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.put_datasource(Datasource("ds", ""))
    for i in range(5):
        await store.submit("ds", f"j{i}", "app", {"n": i})
    await store.cancel("ds", "j0", "app")
    before = await store.events_after("ds", 0)
    await store.close()

    def purged_newest(db: sqlite3.Connection) -> None:
        _as_schema_9(db)
        db.execute("DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)")

    _as_version(path, 8, purged_newest)

    store = SQLiteStore(path)
    await store.open()
    try:
        after = await store.events_after("ds", 0)
        assert after == before[:-1]
        await store.submit("ds", "later", "app", {"n": 9})
        newest = (await store.events_after("ds", 0))[-1]
        assert newest.job == "later" and newest.seq == before[-1].seq + 1
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # the constraint still holds
            db.execute(
                "INSERT INTO events (datasource_id, type, job, client, timestamp, record)"
                " VALUES ('ds', 'nonsense', 'j', 'app', 1, x'7b7d')"
            )
    finally:
        db.close()


async def test_schema_11_keeps_the_jobs_of_lease_datasources_claimable(tmp_path: Path) -> None:
    """Upgrading marks the rows of lease datasources' jobs (the claimable index holds only
    those): jobs submitted before are claimed, oldest first, and a stream datasource's jobs
    are not in the index."""
    path = tmp_path / "v10.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.put_datasource(Datasource("lq", "", dispatch=Dispatch.LEASE))
    await store.put_datasource(Datasource("sq", ""))
    for i in range(3):
        await store.submit("lq", f"l{i}", "app", {"n": i})
        await store.submit("sq", f"s{i}", "app", {"n": i})
    await store.close()

    _as_version(path, 10, _before_schema_11)

    store = SQLiteStore(path)
    await store.open()
    try:
        await store.submit("lq", "l3", "app", {"n": 3})
        claimed = await store.claim("lq", "w1", 10)
        assert [j.job for j in claimed] == ["l0", "l1", "l2", "l3"]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        marks = dict(db.execute("SELECT job, leased FROM jobs").fetchall())
        indexed = db.execute(
            "SELECT count(*) FROM jobs INDEXED BY jobs_claimable WHERE leased = 1"
            " AND (status = 'submitted' OR status = 'retrying') AND lease_id IS NULL"
        ).fetchone()
    finally:
        db.close()
    assert marks == {"l0": 1, "l1": 1, "l2": 1, "l3": 1, "s0": None, "s1": None, "s2": None}
    assert indexed == (0,)  # every lease job is claimed; no stream job was ever in it


async def test_the_writer_keeps_the_rows_of_jobs_being_updated_within_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a driver's update the writer keeps the job's row for the next update (no read,
    no decode): at most UPDATING_ENTRIES of them, none longer than UPDATING_MAX_BYTES, none
    of a job that is finished, and each one what the database holds."""
    monkeypatch.setattr(sqlite_module, "UPDATING_ENTRIES", 3)
    store = SQLiteStore(tmp_path / "held.sqlite3")
    await store.open()
    try:
        await store.put_datasource(Datasource("ds", ""))
        for i in range(5):
            await store.submit("ds", f"j{i}", "app", {"n": i})
        assert len(store._updating) == 0  # a submit is not an update
        for i in range(5):
            await store.update_status("ds", f"j{i}", StatusUpdate(Status.ACCEPTED, progress=0.5))
        assert list(store._updating) == [("ds", "j2"), ("ds", "j3"), ("ds", "j4")]
        again = await store.update_status("ds", "j3", StatusUpdate(Status.RUNNING, progress=1))
        assert again.version == 3 and list(store._updating)[-1] == ("ds", "j3")
        for (dsid, job), (_, record, _) in store._updating.items():
            assert record == await store.get_job(dsid, job)
            assert record.wire_bytes() == (await store.get_job_wire(dsid, job) or ("", b""))[1]
        await store.update_status("ds", "j4", StatusUpdate(Status.COMPLETE))
        await store.cancel("ds", "j2", "app")
        assert list(store._updating) == [("ds", "j3")]
        await store.submit("ds", "big", "app", {"pad": "x" * sqlite_module.UPDATING_MAX_BYTES})
        await store.update_status("ds", "big", StatusUpdate(Status.ACCEPTED))
        assert ("ds", "big") not in store._updating
    finally:
        await store.close()
    assert len(store._updating) == 0


def _row_columns(path: Path, dsid: str, job: str) -> tuple[Any, ...]:
    """(status, lease_id, retry_at, due_at) of a job's row, read on a connection of its own."""
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT status, lease_id, retry_at, due_at FROM jobs"
            " WHERE datasource_id = ? AND job = ?",
            (dsid, job),
        ).fetchone()
    finally:
        db.close()
    assert row is not None
    return tuple(row)


async def test_an_update_names_status_and_lease_only_when_they_change(tmp_path: Path) -> None:
    """An UPDATE that names an indexed column rewrites the entries of the indexes naming it even
    when the value stays: a driver's progress report leaves status and lease_id out of its SET
    list, a status change names the status; either way the row's columns agree with its record,
    whether the writer read the row or kept it from the job's last update."""
    path = tmp_path / "columns.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.put_datasource(Datasource("ds", ""))
        await store.submit("ds", "j1", "app", {"n": 1})
        statements: list[str] = []
        assert store._writer_conn is not None
        await _in_thread(store._writer_conn, lambda db: db.set_trace_callback(statements.append))

        async def set_list(update: StatusUpdate) -> set[str]:
            statements.clear()
            record = await store.update_status("ds", "j1", update)
            (sql,) = [s for s in statements if s.startswith("UPDATE jobs")]
            clause = sql.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
            assert _row_columns(path, "ds", "j1") == (
                record.status.value,
                None,
                record.retry_at,
                None,
            )
            return {part.split(" = ", 1)[0] for part in clause.split(", ")}

        # request_seq is in no index: naming it costs nothing.
        progress = {"record", "updated_at", "retry_at", "due_at", "request_seq"}
        assert await set_list(StatusUpdate(Status.ACCEPTED, progress=0.1)) == progress | {"status"}
        assert await set_list(StatusUpdate(Status.ACCEPTED, progress=0.2)) == progress
        store._updating.clear()  # the row is read again
        assert await set_list(StatusUpdate(Status.ACCEPTED, progress=0.3)) == progress
        assert await store.count_unfinished("ds", "app") == 1
        assert await set_list(StatusUpdate(Status.COMPLETE)) == progress | {"status"}
        assert await store.count_unfinished("ds", "app") == 0
    finally:
        await store.close()


async def test_a_batch_writes_as_its_commands_ran_one_after_another(tmp_path: Path) -> None:
    """Submits, cancels and updates of one batch reach the database together at the end of
    their run (one statement per kind), yet every command sees the ones before it, events get
    consecutive seqs in command order, and a command of another kind in between (here a
    datasource declaration) comes after the writes before it and before the writes after it."""
    store = SQLiteStore(tmp_path / "batch.sqlite3")
    await store.open()
    try:
        await store.put_datasource(Datasource("ds", ""))
        await store.submit("ds", "old", "app", {"n": 0})
        landed = store._landed
        results = await asyncio.gather(
            store.submit("ds", "a", "app", {"n": 1}),
            store.update_status("ds", "a", StatusUpdate(Status.ACCEPTED, progress=0.5)),
            store.submit("ds", "a", "app", {"n": 1}),  # a repeat: nothing written
            store.cancel("ds", "a", "app"),
            store.update_status("ds", "old", StatusUpdate(Status.RUNNING)),
            store.put_datasource(Datasource("ds2", "")),
            store.submit("ds2", "b", "app", {"n": 2}),
            store.update_status("ds", "ghost", StatusUpdate(Status.ACCEPTED)),
            store.submit("ds", "a", "other", {"n": 1}),  # the id is taken
            store.update_status("ds", "old", StatusUpdate(Status.COMPLETE)),
            return_exceptions=True,
        )
        assert store._landed == landed + 1, "one batch"
        (a1, created), a2, (a3, again), a4, old1, _, (b1, _), ghost, taken, old2 = results
        assert created and not again and a3 == a2
        assert (a1.version, a2.version, a4.version) == (1, 2, 3)
        assert a4.cancel_requested and old2.status is Status.COMPLETE
        assert isinstance(ghost, errors.NotFound) and isinstance(taken, errors.Conflict)
        events = [e for ds in ("ds", "ds2") for e in await store.events_after(ds, 0)]
        events.sort(key=lambda e: e.seq)
        written = events[1:]  # after the first submit of "old"
        seqs = [e.seq for e in written]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        assert [(e.job, e.type, e.record) for e in written] == [
            ("a", "request", a1),
            ("a", "status", a2),
            ("a", "cancel", a4),
            ("old", "status", old1),
            ("b", "request", b1),
            ("old", "status", old2),
        ]
        for record in (a4, old2, b1):
            assert await store.get_job(record.datasource_id, record.job) == record
    finally:
        await store.close()


async def test_a_batch_reads_the_rows_of_its_jobs_in_one_statement(tmp_path: Path) -> None:
    """The rows a batch's submits, cancels and updates need are read together at its start (a
    row kept from a driver's last update is not read again); each command still decides against
    the row as the commands before it left it, and a job with no row is new or not found."""
    store = SQLiteStore(tmp_path / "lookup.sqlite3")
    await store.open()
    try:
        await store.put_datasource(Datasource("ds", ""))
        for job in ("x", "y", "kept"):
            await store.submit("ds", job, "app", {"job": job})
        kept = await store.update_status("ds", "kept", StatusUpdate(Status.ACCEPTED))
        assert ("ds", "kept") in store._updating
        statements: list[str] = []
        assert store._writer_conn is not None
        await _in_thread(store._writer_conn, lambda db: db.set_trace_callback(statements.append))
        landed = store._landed
        results = await asyncio.gather(
            store.submit("ds", "z", "app", {"job": "z"}),
            store.submit("ds", "y", "app", {"job": "y"}),  # a repeat
            store.cancel("ds", "x", "app"),
            store.update_status("ds", "y", StatusUpdate(Status.RUNNING)),
            store.update_status("ds", "kept", StatusUpdate(Status.RUNNING, progress=0.5)),
            store.submit("ds", "z", "app", {"job": "z"}),  # new earlier in this batch
            store.cancel("ds", "ghost", "app"),
            store.submit("ds", "x", "other", {"job": "x"}),  # the id is taken
            return_exceptions=True,
        )
        await _in_thread(store._writer_conn, lambda db: db.set_trace_callback(None))
        assert store._landed == landed + 1, "one batch"
        (z1, z_new), (y0, y_new), x1, y1, kept1, (z2, z_again), ghost, taken = results
        assert z_new and not y_new and not z_again and z2 == z1
        assert y0.version == 1 and y1.status is Status.RUNNING and y1.version == 2
        assert x1.cancel_requested and kept1.version == kept.version + 1
        assert isinstance(ghost, errors.NotFound) and isinstance(taken, errors.Conflict)
        reads = [s for s in statements if s.startswith("SELECT") and " FROM jobs " in s]
        assert len(reads) == 1 and reads[0].startswith("SELECT job, id, record, request_seq"), reads
        assert '"kept"' not in reads[0] and all(f'"{j}"' in reads[0] for j in "xyz")
        for record in (z1, x1, y1, kept1):
            assert await store.get_job("ds", record.job) == record
    finally:
        await store.close()


async def test_rows_written_before_schema_10_are_read_and_written_in_their_form(
    tmp_path: Path,
) -> None:
    """Schema 10 does not rewrite old rows: a job row or event without ``request_seq`` holds
    its whole record and is read as before; the job's later events keep that form until an
    update gives it a new revision, whose entry then holds the request."""
    path = tmp_path / "v9.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await old_rows.write_first(store)
    await store.close()
    _as_version(path, 9, _as_schema_9)

    store = SQLiteStore(path)
    await store.open()
    try:
        # The last update reads the row again rather than take the one the writer kept.
        await old_rows.go_on(store, before_last=store._updating.clear)
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        forms = db.execute(
            "SELECT type, request_seq IS NOT NULL, request_seq = seq FROM events ORDER BY seq"
        ).fetchall()
        assert [(t, bool(p), bool(h)) for t, p, h in forms] == old_rows.FORMS
        assert db.execute("SELECT count(*) FROM jobs WHERE request_seq IS NULL").fetchone() == (0,)
    finally:
        db.close()


@pytest.fixture
def adapters() -> Iterator[dict[Any, Any]]:
    """``sqlite3``'s process-wide adapter registry without adapters for ``bytes`` and ``None``,
    put back as it was afterwards."""
    registry: dict[Any, Any] = sqlite3.adapters
    saved = dict(registry)
    registry.pop((bytes, sqlite3.PrepareProtocol), None)
    registry.pop((type(None), sqlite3.PrepareProtocol), None)
    yield registry
    registry.clear()
    registry.update(saved)


async def test_bytes_and_none_are_bound_without_the_adaptation_protocol(
    tmp_path: Path, adapters: dict[Any, Any]
) -> None:
    """Opening a store registers adapters that bind ``bytes`` and ``None`` as they are (what is
    stored does not change: records stay BLOBs, empty columns NULL), and keeps an adapter the
    application registered itself."""

    def own(value: None) -> None:
        return value

    sqlite3.register_adapter(type(None), own)
    path = tmp_path / "adapt.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        assert adapters[(bytes, sqlite3.PrepareProtocol)] is bytes
        assert adapters[(type(None), sqlite3.PrepareProtocol)] is own
        await store.put_datasource(Datasource("ds", ""))
        record, _ = await store.submit("ds", "j1", "app", {"n": 1})
        assert await store.get_job("ds", "j1") == record
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        kinds = db.execute(
            "SELECT typeof(record), typeof(lease_id), typeof(due_at) FROM jobs WHERE job = 'j1'"
        ).fetchone()
        assert kinds == ("blob", "null", "null")
        assert db.execute("SELECT typeof(?), typeof(?)", (b"\x00x", None)).fetchone() == (
            "blob",
            "null",
        )
    finally:
        db.close()
