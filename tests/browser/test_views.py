"""The dashboard's other views and states, and what the store sends with its files."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.browser.conftest import Recorder, Store, screenshot, sign_in, until

SUBMIT = "/ds1/job/"


async def test_static_files_need_no_token_and_carry_the_security_headers(served: Store) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/ui/", "/ui/app.js", "/ui/style.css", "/ui/openapi.html"):
            async with http.get(served.url + path) as r:
                assert r.status == 200, path
                csp = r.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert "frame-ancestors 'none'" in csp
                assert f"ws://127.0.0.1:{served.proc.port}" in csp
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["Referrer-Policy"] == "no-referrer"
                assert r.headers["X-Frame-Options"] == "DENY"
        async with http.get(served.url + "/ui/app.js") as r:
            assert r.content_type == "text/javascript"
        # A Host header that is not a host name is never repeated into the policy.
        evil = {"Host": "x.test; script-src *"}
        async with http.get(served.url + "/ui/", headers=evil) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "script-src *" not in csp and "connect-src 'self';" in csp
        async with http.get(served.url + "/ui", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/ui/"
        for path in ("/ui/nope.js", "/ui/..%2Fweb%2Fui.py", "/ui/docs/secret.md"):
            async with http.get(served.url + path) as r:
                assert r.status == 404, path
                assert (await r.json())["code"] == "not_found"
        async with http.get(served.url + "/ui/docs/protocol.md") as r:
            assert r.status == 200 and "websocket" in (await r.text()).lower()
        # Data still needs a token, the OpenAPI document included.
        for path in ("/cat", "/openapi.json", "/ds1/job/"):
            async with http.get(served.url + path) as r:
                assert r.status == 401, path
        # An inline script or style would be refused by the policy: the page has none.
        async with http.get(served.url + "/ui/") as r:
            html = await r.text()
        assert "<script>" not in html and "style=" not in html and "<style" not in html


async def test_sign_in_keeps_the_token_out_of_urls(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    client = served.token("client", "app1")
    await pg.goto(served.url + "/ui/")
    await pg.wait_for_selector("#token")
    await screenshot(pg, "signin")
    await pg.fill("#token", "not a token")
    await pg.click("#signin")
    await pg.wait_for_selector("#signin-error:has-text('not a token')")
    await sign_in(pg, served, client)
    assert client not in pg.url
    assert await pg.evaluate("sessionStorage.getItem('jobqueue-store.token')") == client
    assert await pg.evaluate("localStorage.length") == 0
    requested: list[str] = []
    pg.on("request", lambda r: requested.append(r.url))
    await pg.reload()
    await pg.wait_for_selector("#datasources")
    assert all("token=" not in u for u in requested if not u.startswith("ws"))
    await pg.click("#signout")
    await pg.wait_for_selector("#token")
    assert await pg.evaluate("sessionStorage.length") == 0
    assert rec.console_errors() == []


async def test_admin_sees_the_catalogue_and_a_driver_its_request_stream(
    served: Store, browser: Any
) -> None:
    driver = served.token("driver")
    client = served.token("client", "app1")
    await served.call("PUT", "/jobs/video", driver, {"description": "video transcoding"})
    await served.call("PUT", "/jobs/mail", driver, {"description": "outgoing mail"})
    for i in range(6):
        await served.call("POST", SUBMIT, client, {"job": f"thumb-{i}", "request": {"n": i}})
    for i in range(3):
        await served.call("POST", "/video/job/", client, {"job": f"clip-{i}", "request": i})
    await served.call("POST", "/jobs/ds1/job/thumb-0/", driver, {"status": "complete"})
    await served.call("POST", "/jobs/ds1/job/thumb-1/", driver, {"status": "accepted"})
    await served.call("POST", "/jobs/video/job/clip-0/", driver, {"status": "failed", "error": "x"})

    context = await browser.new_context(viewport={"width": 1100, "height": 620})
    pg = await context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await sign_in(pg, served, served.token("admin"))
        await pg.wait_for_selector("#datasources tr[data-ds='mail']")
        ids = await pg.eval_on_selector_all(
            "#datasources tbody tr", "e => e.map(r => r.dataset.ds)"
        )
        assert sorted(ids) == ["ds1", "mail", "video"]
        await pg.wait_for_selector("[data-counts='video'] [data-status='failed']")
        await pg.wait_for_selector("[data-counts='ds1'] [data-status='complete']")
        # The chart counts the jobs just listed: submits and completions of the last minute.
        await pg.wait_for_selector(".legend:has-text('completions')")
        await until(pg, "/peak ([2-9]|\\d\\d)/.test(document.querySelector('.legend').textContent)")
        await screenshot(pg, "overview")

        # A driver: the datasources its token allows, and the request stream, live.
        await pg.click("#signout")
        await sign_in(pg, served, served.token("driver", dsid="ds1"))
        await pg.wait_for_selector("#datasources tr[data-ds='ds1']")
        assert await pg.query_selector("#datasources tr[data-ds='video']") is None
        await pg.goto(served.url + "/ui/#/ds/ds1/stream")
        await pg.wait_for_selector("#stream tr[data-job='thumb-5']")
        await served.call("POST", SUBMIT, client, {"job": "thumb-live", "request": {"n": 99}})
        await served.call("POST", "/ds1/job/thumb-2/cancel", client)
        await pg.wait_for_selector("#stream tr[data-job='thumb-live']")
        await pg.wait_for_selector("#stream tr[data-job='thumb-2'] .t-cancel")
        rows = await pg.eval_on_selector_all("#stream tbody tr", "e => e.map(r => r.dataset.seq)")
        assert len(rows) == len(set(rows)) == 8
        await screenshot(pg, "stream")
        # The driver's job detail reads the record through the driver API.
        await pg.click("#stream tr[data-job='thumb-1'] a.job-link")
        await pg.wait_for_selector("#job-detail .s-accepted")
        assert await pg.query_selector("#job-detail button[data-action='cancel']") is None
        assert errors == []
    finally:
        await context.close()


async def test_forbidden_empty_and_unavailable_states(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    driver = served.token("driver")
    await served.call("PUT", "/jobs/other", driver, {"description": "not for this client"})
    await sign_in(pg, served, served.token("client", "app1", dsid="ds1"))
    await pg.wait_for_selector("#datasources tr[data-ds='ds1']")
    assert await pg.query_selector("#datasources tr[data-ds='other']") is None
    await pg.goto(served.url + "/ui/#/ds/other")
    await pg.wait_for_selector(".state.forbidden:has-text('may not see')")
    await pg.goto(served.url + "/ui/#/ds/ds1/stream")
    await pg.wait_for_selector(".state.forbidden:has-text('driver and admin')")
    # The store serves schedules: a client without any sees the empty state.
    await pg.goto(served.url + "/ui/#/ds/ds1/schedules")
    await pg.wait_for_selector(".state.empty:has-text('No schedules.')")
    await pg.goto(served.url + "/ui/#/ds/ds1/job/ghost")
    await pg.wait_for_selector(".state.empty:has-text('No job')")
    await pg.goto(served.url + "/ui/#/ds/ds1")
    await pg.wait_for_selector("#jobs-body .state.empty")
    assert rec.errors == []


async def test_the_api_reference_page_renders_openapi_with_the_token(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    await pg.goto(served.url + "/ui/openapi.html")
    await pg.wait_for_selector(".state.forbidden:has-text('Sign in first')")
    await sign_in(pg, served, served.token("client", "app1"))
    await pg.goto(served.url + "/ui/openapi.html")
    await pg.wait_for_selector("#operations details.op")
    paths = await pg.eval_on_selector_all("#operations .path", "e => e.map(x => x.textContent)")
    assert "/{dsid}/job/" in paths and "/jobs/{dsid}/since/{time}" in paths
    await pg.click("#op-submit summary")
    await pg.wait_for_selector("#op-submit[open] a[href='#schema-status_record']")
    await screenshot(pg, "openapi")
    assert rec.console_errors() == []


async def test_the_documents_render_in_the_browser(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    await pg.goto(served.url + "/ui/doc.html?doc=protocol.md")
    await pg.wait_for_selector("article h2#websockets")
    assert await pg.query_selector("article h2#many-workers-on-one-datasource-leases")
    assert "4008" in await pg.inner_text("article")
    await pg.click("article a[href='doc.html?doc=operations.md#tokens-and-keys']")
    await pg.wait_for_selector("article h2#the-dashboard")
    await pg.goto(served.url + "/ui/doc.html?doc=../../setup.cfg")
    await pg.wait_for_selector(".state.empty")
    assert rec.console_errors() == []


async def test_an_expired_token_is_said_so(served: Store, page: tuple[Any, Recorder]) -> None:
    # Bounded end-to-end: a token that lives 3 seconds (whole seconds: 2 to 3 in fact).
    pg, rec = page
    await sign_in(pg, served, served.token("client", "app1", ttl=3))
    await pg.goto(served.url + "/ui/#/ds/ds1")
    await pg.wait_for_selector("#conn.live")
    await pg.wait_for_selector("#conn.down:has-text('Token expired')", timeout=10_000)
    await pg.wait_for_selector("#banner:has-text('expired')")
    await pg.reload()
    await pg.wait_for_selector(".state.forbidden:has-text('refused this token')")
    await pg.click(".state.forbidden button")
    await pg.wait_for_selector("#token")
    assert rec.errors == []


async def test_schedules_view_against_the_real_store(
    served: Store, page: tuple[Any, Recorder]
) -> None:
    pg, rec = page
    token = served.token("client", "app1")
    body = {"schedule": "once", "request": {"n": 1}, "at": "2020-01-01T00:00:00Z"}
    await served.call("POST", "/ds1/schedule/", token, body)
    cron = {"schedule": "hourly", "request": {"n": 2}, "cron": "0 * * * *"}
    await served.call("POST", "/ds1/schedule/", token, cron)
    for _ in range(100):  # the store's timers fire the past one-off within a round
        if (await served.call("GET", "/ds1/schedule/once/runs", token))["jobs"]:
            break
        await asyncio.sleep(0.1)
    await sign_in(pg, served, token)
    await pg.goto(served.url + "/ui/#/ds/ds1/schedules")
    await pg.wait_for_selector("#schedules tr[data-schedule='hourly'] .badge.st-active")
    await pg.click("#schedules tr[data-schedule='hourly'] button:has-text('Pause')")
    await pg.wait_for_selector("#schedules tr[data-schedule='hourly'] .badge.st-paused")
    stored = await served.call("GET", "/ds1/schedule/hourly/", token)
    assert stored["state"] == "paused"
    await pg.click("#schedules tr[data-schedule='once'] button:has-text('runs')")
    await pg.wait_for_selector("#runs :text('once.1577836800000')")
    assert rec.errors == []
