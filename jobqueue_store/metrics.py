"""Prometheus text metrics, kept in process memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class Metrics:
    """Request counters by route and status, plus gauges read at scrape time."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def count_request(self, method: str, route: str, status: int) -> None:
        """Count one answered request."""
        self.requests[(method, route, status)] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge whose value ``read()`` gives at scrape time."""
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        """The metrics in Prometheus text exposition format 0.0.4."""
        lines = [
            "# HELP jobqueue_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE jobqueue_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(
                f'jobqueue_http_requests_total{{method="{method}",route="{_esc(route)}",'
                f'status="{status}"}} {n}'
            )
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {read():g}")
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
