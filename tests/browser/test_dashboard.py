"""The dashboard in a real headless Chromium against a real store process."""

from __future__ import annotations

import time
from typing import Any

from tests.browser.conftest import Recorder, Store, screenshot, sign_in, until

SUBMIT = "/ds1/job/"


async def driver_update(store: Store, token: str, job: str, **body: Any) -> Any:
    """The driver posts a status update."""
    return await store.call("POST", f"/jobs/ds1/job/{job}/", token, body)


async def progress_of(pg: Any, selector: str) -> float:
    """The value of a <progress> element."""
    return float(await pg.eval_on_selector(selector, "el => el.value"))


async def test_live_job_progress_cancel_and_no_console_errors(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    client = served.token("client", "app1")
    driver = served.token("driver")
    await sign_in(pg, served, client)
    await pg.wait_for_selector("#datasources tr[data-ds='ds1']")
    assert "client app1" in await pg.inner_text("#who")

    await pg.click("a.ds-link")
    await pg.wait_for_selector("#jobs-body .state.empty")
    await pg.wait_for_selector("#conn.live")

    # A job submitted over HTTP appears without a reload.
    await served.call("POST", SUBMIT, client, {"job": "thumb-1", "request": {"image": "cat.png"}})
    row = "#jobs tr[data-job='thumb-1']"
    await pg.wait_for_selector(row)
    assert "submitted" in await pg.inner_text(row)

    # Its progress bar moves as the driver posts progress.
    await driver_update(served, driver, "thumb-1", status="accepted", progress=0.25)
    await until(
        pg, "document.querySelector(\"#jobs tr[data-job='thumb-1'] progress\")?.value === 0.25"
    )
    await driver_update(served, driver, "thumb-1", status="accepted", progress=0.6)
    await until(
        pg, "document.querySelector(\"#jobs tr[data-job='thumb-1'] progress\")?.value === 0.6"
    )
    for i in range(2, 6):
        await served.call("POST", SUBMIT, client, {"job": f"thumb-{i}", "request": {"n": i}})
    await driver_update(served, driver, "thumb-2", status="complete", response={"url": "/t/2"})
    await driver_update(served, driver, "thumb-3", status="failed", error="image is corrupt")
    await driver_update(served, driver, "thumb-4", status="accepted", progress=0.8)
    await pg.wait_for_selector("#jobs tr[data-job='thumb-5']")
    await pg.wait_for_selector("#jobs tr[data-job='thumb-3'] .s-failed")
    await until(pg, "document.querySelectorAll('#jobs tbody tr').length === 5")
    # The counts follow the notifications: exactly what the list endpoint would say.
    await until(
        pg,
        "document.querySelector(\"[data-counts='ds1']\").innerText.replace(/\\s+/g, ' ')"
        " === 'submitted 1 accepted 2 complete 1 failed 1'",
    )
    await screenshot(pg, "jobs")

    # The job's detail: request, progress, history replayed from the log, then live.
    await pg.click("#jobs tr[data-job='thumb-1'] a.job-link")
    await pg.wait_for_selector("#job-detail #job-title")
    assert await progress_of(pg, "#job-progress") == 0.6
    assert "cat.png" in await pg.inner_text("#job-request")
    await until(pg, "document.querySelectorAll('#history tbody tr').length === 3")
    await driver_update(served, driver, "thumb-1", status="accepted", progress=0.9)
    await until(pg, "document.querySelector('#job-progress').value === 0.9")
    await until(pg, "document.querySelectorAll('#history tbody tr').length === 4")
    await screenshot(pg, "job")

    # Cancel from the page reaches the driver: a cancel entry in the request stream.
    await pg.click("#job-detail button[data-action='cancel']")
    await pg.wait_for_selector("#history tbody tr:nth-child(5)")
    entries = await served.call("GET", "/jobs/ds1/since/0", driver)
    cancels = [e for e in entries if e["type"] == "cancel"]
    assert [(e["job"], e["client"]) for e in cancels] == [("thumb-1", "app1")]
    record = await served.call("GET", "/ds1/job/thumb-1/", client)
    assert record["cancel_requested"] is True
    await driver_update(served, driver, "thumb-1", status="cancelled")
    await pg.wait_for_selector("#job-detail .s-cancelled")
    assert await pg.query_selector("#job-detail button[data-action='cancel']") is None

    await pg.go_back()
    await pg.wait_for_selector("#jobs tr[data-job='thumb-1'] .s-cancelled")
    assert await pg.eval_on_selector_all("#jobs tr[data-job='thumb-1']", "els => els.length") == 1
    await rec.settle()
    assert rec.console_errors() == []


async def test_a_second_clients_jobs_never_reach_the_page(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    app1 = served.token("client", "app1")
    app2 = served.token("client", "app2")
    driver = served.token("driver")
    for i in range(3):
        await served.call(
            "POST", SUBMIT, app2, {"job": f"other-{i}", "request": {"secret": "app2-payload"}}
        )
    await served.call("POST", SUBMIT, app1, {"job": "mine-0", "request": {"mine": True}})
    await sign_in(pg, served, app1)
    await pg.click("a.ds-link")
    await pg.wait_for_selector("#jobs tr[data-job='mine-0']")
    await pg.wait_for_selector("#conn.live")
    # While the page is open: app2 submits more and the driver works on app2's jobs.
    await served.call(
        "POST", SUBMIT, app2, {"job": "other-9", "request": {"secret": "app2-payload"}}
    )
    await driver_update(served, driver, "other-0", status="complete", response="app2-result")
    await served.call("POST", SUBMIT, app1, {"job": "mine-1", "request": {"mine": True}})
    await pg.wait_for_selector("#jobs tr[data-job='mine-1']")
    await pg.click("#jobs tr[data-job='mine-0'] a.job-link")
    await pg.wait_for_selector("#history tbody tr")
    await pg.goto(served.url + "/ui/#/")
    await pg.wait_for_selector("[data-counts='ds1'] [data-status='submitted']")
    await rec.settle()

    text = await pg.inner_text("body")
    html = await pg.content()
    for marker in ("other-", "app2"):
        assert marker not in text
        assert marker not in html
    received = rec.received()
    assert "mine-1" in received  # the recorder saw the page's traffic
    assert rec.frames, "the page received websocket frames"
    for marker in ("other-", "app2"):
        assert marker not in received
    assert rec.console_errors() == []


async def test_the_page_survives_a_store_restart(served: Store, page: tuple[Any, Recorder]) -> None:
    pg, rec = page
    client = served.token("client", "app1")
    driver = served.token("driver")
    await sign_in(pg, served, client)
    await pg.goto(served.url + "/ui/#/ds/ds1")
    await pg.wait_for_selector("#conn.live")
    await served.call("POST", SUBMIT, client, {"job": "before", "request": 1})
    await pg.wait_for_selector("#jobs tr[data-job='before']")

    await served.proc.stop()
    await pg.wait_for_selector("#conn.down")
    await pg.wait_for_selector("#banner:has-text('reconnects by itself')")
    await screenshot(pg, "disconnected")
    await served.restart()
    await pg.wait_for_selector("#conn.live", timeout=30_000)
    assert await pg.is_hidden("#banner")

    await served.call("POST", SUBMIT, client, {"job": "after", "request": 2})
    await driver_update(served, driver, "before", status="accepted", progress=0.5)
    await pg.wait_for_selector("#jobs tr[data-job='after']")
    await until(
        pg, "document.querySelector(\"#jobs tr[data-job='before'] progress\")?.value === 0.5"
    )
    jobs = await pg.eval_on_selector_all("#jobs tbody tr", "els => els.map(e => e.dataset.job)")
    assert sorted(jobs) == ["after", "before"]
    # Only the store being away may be logged: no error of the page's own.
    assert rec.errors == []
    own = [
        m
        for m in rec.console_errors()
        if "ERR_CONNECTION_REFUSED" not in m and "WebSocket connection" not in m
    ]
    assert own == []


async def test_a_thousand_jobs_render_and_page_smoothly(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    client = served.token("client", "app1")
    sem = __import__("asyncio").Semaphore(32)

    async def submit(i: int) -> None:
        async with sem:
            await served.call("POST", SUBMIT, client, {"job": f"j{i:04d}", "request": {"i": i}})

    await __import__("asyncio").gather(*(submit(i) for i in range(1000)))
    await sign_in(pg, served, client)
    await pg.goto(served.url + "/ui/#/ds/ds1")
    await pg.wait_for_selector("#jobs tbody tr")
    seen: set[str] = set()
    started = time.monotonic()
    for page_no in range(20):
        jobs = await pg.eval_on_selector_all("#jobs tbody tr", "els => els.map(e => e.dataset.job)")
        assert len(jobs) == 50, (page_no, len(jobs))
        assert not seen & set(jobs)
        seen |= set(jobs)
        if page_no < 19:
            first = jobs[0]
            await pg.click("#next")
            await until(pg, f"document.querySelector('#jobs tbody tr')?.dataset.job !== '{first}'")
    paging = time.monotonic() - started
    assert len(seen) == 1000
    assert await pg.is_disabled("#next")

    started = time.monotonic()
    await pg.select_option("#page-size", "1000")
    await until(pg, "document.querySelectorAll('#jobs tbody tr').length === 1000")
    whole = time.monotonic() - started
    # Generous bounds for a shared 2-core machine: the point is no multi-second stalls.
    assert paging < 20, f"20 pages took {paging:.1f}s"
    assert whole < 5, f"1,000 rows took {whole:.1f}s"
    assert rec.console_errors() == []
