"""Build SQLite stores with many jobs quickly, through :class:`SQLiteStore` itself.

The store's own write path is used (no SQL here): submits are issued in large concurrent gathers
and the writer commits them in big group-commit batches with ``synchronous=OFF``, which is safe
for a throw-away benchmark database that is built once, then closed cleanly.

Run: ``python -m bench.populate DB_PATH DSID COUNT [--client app] [--prefix pre]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from jobqueue_store.models import Datasource
from jobqueue_store.storage.sqlite import SQLiteStore

GATHER = 20_000
"""Submits in flight at once; the writer commits them ``BATCH`` at a time."""
BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Populated:
    """What :func:`populate` built: the stamps needed to aim ``since`` queries."""

    count: int
    seconds: float
    first_timestamp: int
    middle_timestamp: int
    end_timestamp: int
    """The timestamp of the entry 1,000 before the last (a full page of 100 remains after it)."""


def job_id(prefix: str, index: int) -> str:
    """The id of the ``index``-th pre-created job (the wrk walk scripts use the same form)."""
    return f"{prefix}-{index}"


async def populate(
    path: Path,
    dsid: str,
    count: int,
    *,
    client: str = "app",
    prefix: str = "pre",
    start: int = 0,
) -> Populated:
    """Declare ``dsid`` and submit jobs ``prefix-start`` .. ``prefix-(start+count-1)``."""
    store = SQLiteStore(path, synchronous="OFF", batch_max=BATCH)
    await store.open()
    began = time.perf_counter()
    stamps: dict[int, int] = {}
    wanted = {start, start + count // 2, start + max(count - 1000, 0)}
    try:
        await store.put_datasource(Datasource(dsid, "benchmark datasource"))
        for first in range(start, start + count, GATHER):
            last = min(first + GATHER, start + count)
            results = await asyncio.gather(
                *(
                    store.submit(dsid, job_id(prefix, i), client, {"n": i})
                    for i in range(first, last)
                )
            )
            for i in wanted:
                if first <= i < last:
                    stamps[i] = results[i - first][0].submitted_at
    finally:
        await store.close()
    # Built with synchronous=OFF: flush its pages now, or the store's first checkpoint under
    # measurement would wait for the whole file to reach the disk.
    await asyncio.to_thread(_fsync, path)
    return Populated(
        count=count,
        seconds=time.perf_counter() - began,
        first_timestamp=stamps[start],
        middle_timestamp=stamps[start + count // 2],
        end_timestamp=stamps[start + max(count - 1000, 0)],
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    """Command line: build one store and print what was built."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("dsid")
    parser.add_argument("count", type=int)
    parser.add_argument("--client", default="app")
    parser.add_argument("--prefix", default="pre")
    args = parser.parse_args()
    result = asyncio.run(
        populate(args.path, args.dsid, args.count, client=args.client, prefix=args.prefix)
    )
    print(result)


if __name__ == "__main__":
    main()
