"""The dashboard is ready for schedules, revisions, stop/start and leases before the store serves
them: these tests answer those endpoints from the browser's network layer (Playwright routes)
with records shaped as the protocol describes, and check what the page shows and which endpoint
each button calls, with the token. Everything else comes from the real store."""

from __future__ import annotations

import json
from typing import Any

from tests.browser.conftest import Recorder, Store, sign_in

NOW = 1_764_662_400_000


def record(**extra: Any) -> dict[str, Any]:
    """A status record of a long-running job, with the fields revisions and leases add."""
    return {
        "job": "pipe-1",
        "client": "app1",
        "datasource_id": "ds1",
        "status": "running",
        "request": {"source": "kafka://events"},
        "cancel_requested": False,
        "version": 7,
        "submitted_at": NOW,
        "updated_at": NOW + 5000,
        "revision": 2,
        "desired_state": "running",
        "lease": {"id": "L1", "worker": "worker-a", "attempt": 1, "expires_at": NOW + 30000},
        **extra,
    }


async def test_revisions_lease_and_stop_start(served: Store, page: tuple[Any, Recorder]) -> None:
    pg, rec = page
    token = served.token("client", "app1")
    calls: list[tuple[str, str, str]] = []
    current = {"record": record()}

    async def handle(route: Any) -> None:
        request = route.request
        calls.append((request.method, request.url, request.headers.get("authorization", "")))
        if request.url.endswith("/revisions"):
            body: Any = {
                "revisions": [
                    {"revision": 0, "status": "running", "request": {"v": 0}, "submitted_at": NOW},
                    {"revision": 1, "status": "failed", "error": "bad config", "request": {"v": 1}},
                    {"revision": 2, "status": "running", "rollback_of": 1, "request": {"v": 0}},
                ]
            }
        elif request.url.endswith("/stop"):
            current["record"] = record(desired_state="stopped", version=8)
            body = current["record"]
        elif request.url.endswith("/start"):
            current["record"] = record(desired_state="running", version=9)
            body = current["record"]
        else:
            body = current["record"]
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    await pg.route("**/ds1/job/pipe-1/**", handle)
    await sign_in(pg, served, token)
    await pg.goto(served.url + "/ui/#/ds/ds1/job/pipe-1")
    await pg.wait_for_selector("#job-detail #job-title")
    text = await pg.inner_text("#job-detail")
    assert "Revision" in text and "Desired state" in text
    assert "worker-a" in text and "attempt 1" in text
    await pg.wait_for_selector("#revisions tbody tr:nth-child(3)")
    assert "bad config" in await pg.inner_text("#revisions")

    await pg.click("#job-detail button[data-action='stop']")
    assert any(m == "POST" and u.endswith("/ds1/job/pipe-1/stop") for m, u, _ in calls)
    assert all(auth == f"Bearer {token}" for _, _, auth in calls)
    await pg.reload()
    await pg.wait_for_selector("#job-detail button[data-action='start']")
    assert await pg.query_selector("#job-detail button[data-action='stop']") is None
    await pg.click("#job-detail button[data-action='start']")
    assert any(m == "POST" and u.endswith("/ds1/job/pipe-1/start") for m, u, _ in calls)
    assert rec.errors == []


async def test_schedules_with_pause_resume_and_runs(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    token = served.token("client", "app1")
    calls: list[tuple[str, str]] = []
    schedules = [
        {
            "schedule": "nightly",
            "client": "app1",
            "datasource_id": "ds1",
            "request": {},
            "cron": "0 3 * * *",
            "timezone": "Europe/Paris",
            "state": "active",
            "next_run_at": NOW + 3_600_000,
            "last_run": "nightly.1764630000000",
            "runs": 12,
            "version": 3,
            "created_at": NOW,
            "updated_at": NOW,
        },
        {
            "schedule": "once",
            "client": "app1",
            "datasource_id": "ds1",
            "request": {},
            "at": NOW + 60_000,
            "state": "paused",
            "next_run_at": None,
            "last_run": None,
            "runs": 0,
            "version": 2,
            "created_at": NOW,
            "updated_at": NOW,
        },
    ]
    run = record(job="nightly.1764630000000", status="complete", schedule="nightly")
    for key in ("revision", "desired_state", "lease"):
        del run[key]

    async def handle(route: Any) -> None:
        request = route.request
        calls.append((request.method, request.url))
        if request.url.endswith("/runs"):
            body: Any = {"jobs": [run], "next": None}
        elif request.method == "POST":
            body = schedules[0]
        else:
            body = {"schedules": schedules, "next": None}
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    await pg.route("**/ds1/schedule/**", handle)
    await sign_in(pg, served, token)
    await pg.goto(served.url + "/ui/#/ds/ds1/schedules")
    await pg.wait_for_selector("#schedules tr[data-schedule='nightly']")
    nightly = await pg.inner_text("#schedules tr[data-schedule='nightly']")
    assert "0 3 * * *" in nightly and "Europe/Paris" in nightly and "12" in nightly
    await pg.click("#schedules tr[data-schedule='nightly'] button[data-action='pause']")
    await pg.wait_for_selector("#schedules tr[data-schedule='once'] button[data-action='resume']")
    await pg.click("#schedules tr[data-schedule='once'] button[data-action='resume']")
    await pg.wait_for_selector("#schedules tr[data-schedule='nightly']")
    await pg.click("#schedules tr[data-schedule='nightly'] button:has-text('runs')")
    await pg.wait_for_selector("#runs tr[data-job='nightly.1764630000000']")
    posts = [u for m, u in calls if m == "POST"]
    assert any(u.endswith("/ds1/schedule/nightly/pause") for u in posts)
    assert any(u.endswith("/ds1/schedule/once/resume") for u in posts)
    assert rec.errors == []
