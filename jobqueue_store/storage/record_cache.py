"""Job records read recently, kept in memory for status reads that skip the database.

A status read from SQLite is one indexed lookup, but each costs a read transaction (two file
lock calls on the write-ahead log's index) and page walks that, under load, cost more than the
rest of the request. The SQLite store is used by one process, and every change to a job row
goes through its single writer: the writer hands each batch's stored records to the cache when
the batch commits, and empties the cache after any batch it cannot account for row by row
(leases, schedules, revisions, retention, a failed commit). A record enters the cache when it
is read (the jobs whose status is polled), and its later writes replace it there; a write of a
job not held costs one lookup. The cache is bounded by entries and bytes; large records are
not kept.
"""

from __future__ import annotations

from collections import OrderedDict

RECORD_CACHE_ENTRIES = 50_000
RECORD_CACHE_BYTES = 32 * 1024 * 1024
RECORD_CACHE_MAX_RECORD = 8 * 1024


class RecordCache:
    """``(datasource, job) -> (owner, stored record text)``, first in first out."""

    __slots__ = ("_bytes", "_entries", "max_bytes", "max_entries", "max_record")

    def __init__(
        self,
        max_entries: int = RECORD_CACHE_ENTRIES,
        max_bytes: int = RECORD_CACHE_BYTES,
        max_record: int = RECORD_CACHE_MAX_RECORD,
    ) -> None:
        # An OrderedDict drops its oldest entry in constant time; a dict's first key is found by
        # skipping the slots of every entry removed before it.
        self._entries: OrderedDict[tuple[str, str], tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_record = max_record

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of record text held."""
        return self._bytes

    def get(self, dsid: str, job: str) -> tuple[str, bytes] | None:
        """The owner and record text of a job, if held."""
        return self._entries.get((dsid, job))

    def put(self, dsid: str, job: str, client: str, text: bytes) -> None:
        """Hold the job's current record (replacing what was held)."""
        key = (dsid, job)
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        if len(text) > self.max_record or self.max_entries < 1:
            return
        self._entries[key] = (client, text)
        self._bytes += len(text)
        entries = self._entries
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            self._bytes -= len(entries.popitem(last=False)[1][1])

    def refresh(self, dsid: str, job: str, client: str, text: bytes) -> None:
        """The job was written: replace its record if held (a copy of ``text``, which may be
        orjson's output: that keeps a 4 KiB buffer however short the text), else nothing."""
        key = (dsid, job)
        old = self._entries.get(key)
        if old is None:
            return
        if len(text) > self.max_record:
            del self._entries[key]
            self._bytes -= len(old[1])
            return
        self._entries[key] = (client, bytes(memoryview(text)))
        self._bytes += len(text) - len(old[1])

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._bytes = 0
