"""py-spy profiles of a store process under load, summarised as top functions."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def available() -> bool:
    """Whether py-spy is installed."""
    return Path(PY_SPY).exists()


async def record(pid: int, seconds: float, out: Path, rate: int = 250) -> None:
    """Sample ``pid`` for ``seconds`` into a collapsed-stack file ``out``."""
    proc = await asyncio.create_subprocess_exec(
        PY_SPY,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {text.decode(errors='replace')[-2000:]}")


def _short(frame: str, *, line: bool = False) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "jobqueue_store/", "lib/python3"):
        if marker in path:
            path = path[path.index(marker) + (0 if marker == "jobqueue_store/" else len(marker)) :]
            break
    if line and match.group("line"):
        path = f"{path}:{match.group('line')}"
    return f"{match.group('func')} ({path})"


def summarise(collapsed: Path, top: int = 12) -> dict[str, Any]:
    """Shares of samples: the hottest functions by self time, and the store's own functions
    (``jobqueue_store/``) by inclusive time, from a collapsed-stack file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # py-spy may start a stack with the process and thread names: not functions.
        raw = [f for f in stack.split(";") if not f.strip().startswith(("process ", "thread "))]
        frames = [_short(f) for f in raw]
        if not frames:
            continue
        sqlite_thread = any(f.startswith("_connection_worker_thread") for f in frames)
        threads["aiosqlite threads" if sqlite_thread else "event loop thread"] += count
        # Self time by line: "COMMIT" and "INSERT" in one function are different stories.
        own[_short(raw[-1], line=True)] += count
        for frame in set(frames):
            if "jobqueue_store/" in frame:
                inclusive[frame] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "threads_pct": shares(threads),
        "self_pct": shares(own),
        "inclusive_pct": shares(inclusive),
    }
