"""How late schedule runs are created with many active schedules in one store process.

Creates ``--schedules`` schedules of ``* * * * *`` (every minute) on one datasource, through the
store's own write path, then serves the store (``jobqueue-store serve``, one process, pinned to
core 0 like the other rows) for ``--minutes`` minute boundaries. Every run of a fire time after the
server was ready is counted; its **lateness** is ``submitted_at - scheduled_for`` (when the store
created the run minus its fire time). Prints p50, p99 and max lateness and whether every
schedule had a run at every fire time.

Run: ``.venv/bin/python -m bench.schedules [--schedules 10000] [--minutes 2]
[--database postgresql://...]`` (SQLite in a temporary data dir by default).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import free_port, store_proc
from jobqueue_store.models import Datasource
from jobqueue_store.schedules import CatchUp, ScheduleSpec
from jobqueue_store.storage.base import Store
from jobqueue_store.storage.postgres import PostgresStore
from jobqueue_store.storage.sqlite import SQLiteStore

GATHER = 2_000


def _store(data: Path, database: str) -> Store:
    if database:
        return PostgresStore(database)
    return SQLiteStore(data / "jobqueue.sqlite3", synchronous="OFF", batch_max=GATHER)


async def create(data: Path, database: str, count: int) -> float:
    """Declare ``sched`` and create ``count`` every-minute schedules; return the seconds taken."""
    store = _store(data, database)
    await store.open()
    began = time.perf_counter()
    try:
        await store.put_datasource(Datasource("sched", "schedule benchmark"))
        for first in range(0, count, GATHER):
            await asyncio.gather(
                *(
                    store.create_schedule(
                        "sched",
                        ScheduleSpec(
                            f"s{i}",
                            {"i": i},
                            cron="* * * * *",
                            timezone="UTC",
                            catch_up=CatchUp.NONE,
                        ),
                        "app",
                    )
                    for i in range(first, min(first + GATHER, count))
                )
            )
    finally:
        await store.close()
    return time.perf_counter() - began


async def collect(data: Path, database: str, after_ms: int) -> list[Any]:
    """Every run with a fire time after ``after_ms`` (through the store's reads)."""
    store = _store(data, database)
    await store.open()
    runs: list[Any] = []
    try:
        cursor = None
        while True:
            page = await store.list_jobs("sched", "app", limit=1000, cursor=cursor)
            runs.extend(r for r in page.jobs if (r.scheduled_for or 0) > after_ms)
            cursor = page.next_cursor
            if cursor is None:
                return runs
    finally:
        await store.close()


def percentile(values: list[int], q: float) -> int:
    """The ``q`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp:
        data = Path(tmp)
        seconds = await create(data, args.database, args.schedules)
        print(f"created {args.schedules} schedules in {seconds:.1f} s")
        server = store_proc(free_port(), data, database=args.database, name="store")
        await server.start()
        ready = int(time.time() * 1000)
        # The first minute boundary after ready, then --minutes of them, then a little slack.
        first = (ready // 60_000 + 1) * 60_000
        until = first + (args.minutes - 1) * 60_000 + 15_000
        print(
            f"serving; waiting for {args.minutes} minute boundaries "
            f"({(until - ready) / 1000:.0f} s)"
        )
        try:
            await asyncio.sleep((until - ready) / 1000)
        finally:
            await server.stop()
        runs = await collect(data, args.database, ready)
    late = [r.submitted_at - r.scheduled_for for r in runs]
    per_time = Counter(r.scheduled_for for r in runs)
    result = {
        "schedules": args.schedules,
        "fire_times": len(per_time),
        "runs": len(runs),
        "complete": all(n == args.schedules for n in per_time.values())
        and len(per_time) == args.minutes,
        "lateness_p50_ms": percentile(late, 0.5) if late else None,
        "lateness_p99_ms": percentile(late, 0.99) if late else None,
        "lateness_max_ms": max(late) if late else None,
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.schedules", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--database", default="", help="a postgresql:// DSN (default: SQLite)")
    args = parser.parse_args(argv)
    result = asyncio.run(amain(args))
    print(
        f"| schedule runs, {result['schedules']:,} schedules every minute, "
        f"{result['fire_times']} fire times | {result['runs']:,} runs "
        f"({'all' if result['complete'] else 'NOT all'} created) | "
        f"p50 {result['lateness_p50_ms']} ms | p99 {result['lateness_p99_ms']} ms | "
        f"max {result['lateness_max_ms']} ms |"
    )


if __name__ == "__main__":
    main()
