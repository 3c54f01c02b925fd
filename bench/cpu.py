"""CPU time a server process spends per request, split between its event loop's thread and the
rest of its threads (for the store: the SQLite writer, readers and checkpointer, the audit log).

Read from ``/proc/<pid>/task/<tid>/stat`` before and after a load: the ratio rows say how much
slower the store is than the bare handler, this says where its time went. On a machine pinned
as the harness pins it (the server alone on its core), CPU per request is the inverse of the
throughput once the core is busy; a server that is slower without using more CPU per request is
waiting (on the disk, or for work).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ticks(stat: str) -> tuple[int, int]:
    # The fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def threads(pid: int) -> dict[int, tuple[int, int]]:
    """``{tid: (user ticks, system ticks)}`` of every thread of ``pid`` (empty if gone, or where
    there is no ``/proc``)."""
    out: dict[int, tuple[int, int]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out[int(task.name)] = _ticks((task / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return out


@dataclass(frozen=True, slots=True)
class CpuPerRequest:
    """Microseconds of CPU per request: the loop's thread (the process's main thread, whose id
    is the pid), the other threads, and of the total how much was in the kernel."""

    loop_us: float
    threads_us: float
    system_us: float

    @property
    def total_us(self) -> float:
        """All threads."""
        return self.loop_us + self.threads_us

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, rounded to a tenth of a microsecond."""
        return {
            "total": round(self.total_us, 1),
            "loop": round(self.loop_us, 1),
            "threads": round(self.threads_us, 1),
            "system": round(self.system_us, 1),
        }


def per_request(
    pid: int, before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], requests: int
) -> CpuPerRequest | None:
    """CPU per request of ``pid`` between two :func:`threads` readings; ``None`` without
    readings or requests."""
    if not after or requests <= 0:
        return None
    loop = other = system = 0
    for tid, (user, kernel) in after.items():
        user0, kernel0 = before.get(tid, (0, 0))
        used = (user - user0) + (kernel - kernel0)
        system += kernel - kernel0
        if tid == pid:
            loop += used
        else:
            other += used
    scale = 1e6 / TICKS / requests
    return CpuPerRequest(loop * scale, other * scale, system * scale)


def describe(split: dict[str, float]) -> str:
    """A split as :meth:`CpuPerRequest.as_dict` gives it (or a median of such), in words."""
    return (
        f"{split['total']:.1f} us of CPU per request (event loop {split['loop']:.1f}, other "
        f"threads {split['threads']:.1f}; in the kernel {split['system']:.1f})"
    )
