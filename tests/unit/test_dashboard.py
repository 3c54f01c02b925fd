"""docs/grafana-dashboard.json: valid, and it plots every family of /metrics it should."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from jobqueue_store.metrics import Metrics
from jobqueue_store.models import Status
from jobqueue_store.storage.base import DatasourceJobs

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
PLOTTED = {
    "jobqueue_jobs",
    "jobqueue_oldest_unfinished_job_age_seconds",
    "jobqueue_driver_connected",
    "jobqueue_driver_last_seen_timestamp_seconds",
    "jobqueue_job_latency_seconds",
    "jobqueue_http_request_duration_seconds",
    "jobqueue_http_requests",
    "jobqueue_websockets",
    "jobqueue_store_commits",
    "jobqueue_store_commit_batch_size",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
}


def exposed() -> set[str]:
    """The family names /metrics exposes (with a datasource, so that every family has data)."""
    metrics = Metrics()
    metrics.gauge("jobqueue_websockets", "open websockets", lambda: 0)  # as the app does
    metrics.gauge("jobqueue_subscriptions", "hub subscriptions", lambda: 0)
    metrics.stats = {"ds": DatasourceJobs(dict.fromkeys(Status, 0), None)}
    metrics.driver_seen["ds"] = 1.0
    return {f.name for f in text_string_to_metric_families(metrics.render().decode())}


def test_the_dashboard_plots_every_family() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = set()
    for expr in exprs:
        for name in re.findall(r"\b((?:jobqueue|process)_[a-z_]+)", expr):
            queried.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
    families = exposed()
    assert queried <= families, queried - families
    assert queried >= PLOTTED, PLOTTED - queried
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
