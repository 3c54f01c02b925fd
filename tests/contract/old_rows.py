"""The scenario both stores' tests run on rows written before each revision's request was
stored once (SQLite schema 10, PostgreSQL schema 7): the rows' form is made old by each test its
own way; what the store must then do is the same."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from jobqueue_store.models import Datasource, Status, StatusUpdate
from jobqueue_store.storage.base import Store

FIRST = {"text": "caf\u00e9 \u0000", "n": 1}
FORMS = [
    ("request", False, False),  # written before the schema
    ("status", False, False),
    ("status", False, False),  # the old job's next event: still whole
    ("request", True, True),
    ("update", True, True),  # the new revision's entry holds its request
    ("status", True, False),
    ("status", True, False),
]
"""Each event's (type, points at the entry holding its request, is that entry) once
:func:`go_on` has run."""


async def write_first(store: Store) -> None:
    """What the store wrote before the upgrade: a job, submitted and running."""
    await store.put_datasource(Datasource("ds", ""))
    await store.submit("ds", "old", "app", FIRST)
    await store.update_status("ds", "old", StatusUpdate(Status.RUNNING))


async def go_on(store: Store, *, before_last: Callable[[], None] = lambda: None) -> None:
    """After the upgrade: the old job goes on (and gets a new revision), a new job comes; every
    read carries each record's request."""
    await store.update_status("ds", "old", StatusUpdate(Status.RUNNING, progress=0.5))
    await store.submit("ds", "new", "app", {"n": 2})
    await store.revise("ds", "old", "app", {"n": 3}, rollback=False)
    await store.update_status("ds", "old", StatusUpdate(Status.RUNNING, progress=0.9))
    before_last()
    await store.update_status("ds", "old", StatusUpdate(Status.RUNNING, progress=1))

    events = await store.events_after("ds", 0)
    assert [(e.type, e.record.revision, e.record.request) for e in events] == [
        ("request", 0, FIRST),
        ("status", 0, FIRST),
        ("status", 0, FIRST),
        ("request", 0, {"n": 2}),
        ("update", 1, {"n": 3}),
        ("status", 1, {"n": 3}),
        ("status", 1, {"n": 3}),
    ]
    for job in ("old", "new"):
        record = await store.get_job("ds", job)
        found = await store.get_job_wire("ds", job)
        assert record is not None and found is not None
        assert found[1] == record.wire_bytes()
    entries = await store.entries_since("ds", 0)
    assert [e.data["request"] for e in entries if e.data] == [FIRST, {"n": 2}, {"n": 3}]
    wire = await store.entries_since_wire("ds", 0)
    assert [orjson.loads(t) for _, t in wire] == [e.stream_entry() for e in entries]
    history = [e.record.request for e in await store.job_events("ds", "old")]
    assert history[:3] == [FIRST] * 3 and history[3:] == [{"n": 3}] * 3
