"""``/metrics`` after a mixed workload, read with Prometheus' own text parser."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import WSMsgType
from prometheus_client.parser import text_string_to_metric_families

from tests.web.conftest import Api

WAIT = 10.0


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample by name, then by its labels (sorted pairs)."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    """The value of one sample (KeyError if absent)."""
    return float(samples[name][tuple(sorted(labels.items()))])


async def scrape(api: Api) -> tuple[dict[str, Any], float, float]:
    """The parsed metrics, with the wall-clock times just before and after the scrape."""
    before = time.time()
    text = await api.call("GET", "/metrics", api.token("admin"), expect=200)
    return parse(text), before, time.time()


async def test_metrics_after_a_mixed_workload(api: Api) -> None:
    driver = api.token("driver")
    client = api.token()
    seen_before_ds2 = time.time()
    await api.declare("ds2")
    first, _, _ = await scrape(api)
    commits0 = value(first, "jobqueue_store_commits_total")
    batch_sum0 = value(first, "jobqueue_store_commit_batch_size_sum")

    # A driver's request stream on ds1 and a client's notifications (which also tell when the
    # hub, and so the metrics, have seen every committed event).
    stream = await api.client.ws_connect("/sub/ds1/jobs", headers=api.auth(driver))
    notes = await api.client.ws_connect("/sub/ds1/job", headers=api.auth(client))

    records: dict[str, dict[str, Any]] = {}
    for job in ("j1", "j2", "j3", "j4", "j5"):
        body = {"job": job, "request": {"n": job}}
        records[job] = await api.call("POST", "/ds1/job/", client, body, expect=201)
    await api.call("POST", "/ds2/job/", client, {"job": "k1", "request": 1}, expect=201)
    submits = 6

    async def report(job: str, status: str, **extra: Any) -> dict[str, Any]:
        body = {"status": status, **extra}
        path = f"/jobs/ds1/job/{job}/"
        result: dict[str, Any] = await api.call("POST", path, driver, body, expect=200)
        return result

    await report("j1", "accepted")
    done = {"j1": await report("j1", "complete", response={"ok": True})}
    done["j2"] = await report("j2", "failed", error="it broke")
    await api.call("POST", "/ds1/job/j3/cancel", client, expect=200)
    done["j3"] = await report("j3", "cancelled")
    last = await report("j4", "accepted")
    job_writes = submits + 6  # 5 driver reports and 1 cancel

    # Wait until the client's notifications reach the last write: the hub has published it.
    while True:
        msg = await asyncio.wait_for(notes.receive(), WAIT)
        assert msg.type is WSMsgType.TEXT, msg
        note = orjson.loads(msg.data)
        if note["job"] == "j4" and note["data"]["version"] == last["version"]:
            break

    m, before, after = await scrape(api)

    # jobs by datasource and status, read from the store
    expected = {"submitted": 1, "accepted": 1, "retrying": 0, "complete": 1, "failed": 1,
                "cancelled": 1, "forbidden": 0}  # fmt: skip
    for status, n in expected.items():
        assert value(m, "jobqueue_jobs", datasource="ds1", status=status) == n, status
    assert value(m, "jobqueue_jobs", datasource="ds2", status="submitted") == 1
    assert sum(v for k, v in m["jobqueue_jobs"].items() if ("datasource", "ds2") in k) == 1

    # oldest unfinished job: j4 (accepted) on ds1, k1 on ds2
    age = value(m, "jobqueue_oldest_unfinished_job_age_seconds", datasource="ds1")
    j4_at = records["j4"]["submitted_at"] / 1000
    assert before - j4_at - 0.001 <= age <= after - j4_at + 0.001
    assert value(m, "jobqueue_oldest_unfinished_job_age_seconds", datasource="ds2") > 0

    # drivers: connected on ds1 (its stream is open), seen on ds2 (its PUT) but not connected
    assert value(m, "jobqueue_driver_connected", datasource="ds1") == 1
    assert value(m, "jobqueue_driver_connected", datasource="ds2") == 0
    ds1_seen = value(m, "jobqueue_driver_last_seen_timestamp_seconds", datasource="ds1")
    assert before <= ds1_seen <= after, "an open stream is seen at scrape time"
    ds2_seen = value(m, "jobqueue_driver_last_seen_timestamp_seconds", datasource="ds2")
    assert seen_before_ds2 <= ds2_seen <= before

    # submit-to-terminal latency, one observation per terminal job
    for job, status in (("j1", "complete"), ("j2", "failed"), ("j3", "cancelled")):
        labels = {"datasource": "ds1", "status": status}
        assert value(m, "jobqueue_job_latency_seconds_count", **labels) == 1
        took = (done[job]["updated_at"] - done[job]["submitted_at"]) / 1000
        assert abs(value(m, "jobqueue_job_latency_seconds_sum", **labels) - took) < 1e-9
        assert value(m, "jobqueue_job_latency_seconds_bucket", le="+Inf", **labels) == 1
    assert not any(("status", "accepted") in k for k in m["jobqueue_job_latency_seconds_count"])

    # request latency by route name (never the raw path), websockets left out
    assert value(m, "jobqueue_http_request_duration_seconds_count", method="POST",
                 route="submit") == submits  # fmt: skip
    assert value(m, "jobqueue_http_request_duration_seconds_count", method="POST",
                 route="update_status") == 5  # fmt: skip
    routes = {dict(k)["route"] for k in m["jobqueue_http_request_duration_seconds_count"]}
    assert "sub_driver" not in routes and not any("/" in r for r in routes), routes
    assert value(m, "jobqueue_http_requests_total", method="POST", route="submit",
                 status="201") == submits  # fmt: skip

    # websocket subscribers
    assert value(m, "jobqueue_websockets") == 2

    # group commits: every job write counted once, in batches
    commits = value(m, "jobqueue_store_commits_total") - commits0
    assert 1 <= commits <= job_writes
    assert value(m, "jobqueue_store_commit_batch_size_sum") - batch_sum0 == job_writes
    assert value(m, "jobqueue_store_commit_batch_size_count") == value(
        m, "jobqueue_store_commits_total"
    )

    assert value(m, "jobqueue_store_read_ok") == 1

    # process metrics
    assert value(m, "process_resident_memory_bytes") > 0
    assert value(m, "process_open_fds") >= 1
    assert "process_cpu_seconds_total" in m

    # the driver's stream closes: not connected any more, last seen at the close
    await stream.close()
    await notes.close()
    for _ in range(500):
        m, _, _ = await scrape(api)
        if value(m, "jobqueue_driver_connected", datasource="ds1") == 0:
            break
        await asyncio.sleep(0.01)
    assert value(m, "jobqueue_driver_connected", datasource="ds1") == 0
    assert value(m, "jobqueue_driver_last_seen_timestamp_seconds", datasource="ds1") >= ds1_seen


async def test_metrics_registries_are_per_app(make_api: Any) -> None:
    """Two apps in one process count apart (no global registry)."""
    a = await make_api()
    b = await make_api()
    await a.declare("ds1")
    m_a, _, _ = await scrape(a)
    m_b, _, _ = await scrape(b)
    put = {"method": "PUT", "route": "put_datasource", "status": "200"}
    assert value(m_a, "jobqueue_http_requests_total", **put) == 1
    assert ("jobqueue_http_requests_total" not in m_b) or not m_b["jobqueue_http_requests_total"]


async def test_metrics_answer_while_the_database_cannot_be_read(api: Api) -> None:
    """The families read from the store are left out; the process ones still answer."""
    from jobqueue_store.web.keys import STORE

    store = api.client.app[STORE]
    await store.close()  # the database is gone for this app; the HTTP server still runs
    m, _, _ = await scrape(api)
    assert value(m, "jobqueue_store_read_ok") == 0
    assert not m.get("jobqueue_jobs")
    assert value(m, "process_resident_memory_bytes") > 0
