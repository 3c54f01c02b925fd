"""The dashboard against the store's real revision, stop and start endpoints (no answers from
the browser's network layer): a long-running job's revisions, its rollback, and the Stop button
reaching the driver's request stream."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Recorder, Store, sign_in, until


async def test_revisions_rollback_and_stop_from_the_page(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    client = served.token("client", "app1")
    driver = served.token("driver")
    job = "/ds1/job/pipe-1/"
    await served.call("POST", "/ds1/job/", client, {"job": "pipe-1", "request": {"v": 0}})
    await served.call("POST", "/jobs/ds1/job/pipe-1/", driver, {"status": "running"})
    await served.call("PUT", job, client, {"request": {"v": 1}, "rollback": True})
    failed = {"status": "failed", "error": "bad config", "revision": 1}
    await served.call("POST", "/jobs/ds1/job/pipe-1/", driver, failed)

    await sign_in(pg, served, client)
    await pg.goto(served.url + "/ui/#/ds/ds1/job/pipe-1")
    await pg.wait_for_selector("#job-detail #job-title")
    # Revision 2 is the store's rollback of revision 1 to revision 0's request.
    await pg.wait_for_selector("#revisions tbody tr:nth-child(3)")
    revisions = await pg.inner_text("#revisions")
    assert "bad config" in revisions
    rows = await pg.eval_on_selector_all(
        "#revisions tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
    )
    assert rows == ["0", "1", "2"]
    detail = await pg.inner_text("#job-detail")
    assert "Revision" in detail and "Desired state" in detail

    await pg.click("#job-detail button[data-action='stop']")
    # The page shows Start once the store answered the stop.
    await until(pg, "!!document.querySelector(\"#job-detail button[data-action='start']\")")
    record = await served.call("GET", job, client)
    assert record["desired_state"] == "stopped"
    entries = await served.call("GET", "/jobs/ds1/since/0", driver)
    assert [e["type"] for e in entries if e["job"] == "pipe-1"][-1] == "stop"
    assert rec.errors == []
