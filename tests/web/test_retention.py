"""Retention over the wire, on every backend: a websocket resume from a purged ``seq`` is refused
at the handshake (400), ``after=0`` replays what is kept, a resume at or after ``purged_through``
loses nothing; ``since`` pages keep working across a purge (never refused)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from jobqueue_store.models import now_ms
from jobqueue_store.storage.base import Store
from jobqueue_store.web.keys import STORE
from tests.web.conftest import Api, AppFactory
from tests.web.test_ws import connect, receive, receive_n, submit, update

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def next_link(resp: aiohttp.ClientResponse) -> str | None:
    """The path of the ``Link: <...>; rel="next"`` header, or ``None``."""
    link = resp.headers.get("Link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"') and link.startswith("<"), link
    return link[1 : -len('>; rel="next"')]


def store_of(api: Api) -> Store:
    """The app's store (to purge with a cutoff of the test's choosing)."""
    app = api.client.app
    assert app is not None
    store: Store = app[STORE]
    return store


async def refused(api: Api, path: str, token: str) -> str:
    """Assert that the websocket upgrade is refused with a JSON 400; return its sentence."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await connect(api, path, token)
    assert info.value.status == 400
    body = await api.call("GET", path, token, expect=400, headers=dict(UPGRADE))
    assert body["code"] == "bad_request"
    return str(body["error"])


async def scenario(api: Api) -> tuple[str, int]:
    """Job ``open`` stays unfinished; ``done`` and ``failed`` finish and are purged.

    Returns the client token and ``purged_through``; ``open`` then gets one more change, after
    the purged events.
    """
    tok = api.token()
    await submit(api, tok, "open")
    for job, status in (("done", "complete"), ("failed", "failed")):
        await submit(api, tok, job)
        await update(api, job, "accepted")
        await update(api, job, status)
    store = store_of(api)
    assert await store.purge(now_ms() + 1) == 2
    through = await store.purged_through()
    assert through == await store.last_seq()
    await update(api, "open", "accepted")
    return tok, through


async def test_resume_from_a_purged_seq_is_refused(api: Api) -> None:
    tok, through = await scenario(api)
    driver = api.token("driver")
    sentence = (
        f"Events up to seq {through} were purged by retention (terminal jobs older than 7 days); "
        f"resume with after={through} or later, or after=0 to replay everything still kept."
    )
    for after in (1, through - 1):
        assert await refused(api, f"/sub/ds1/job?after={after}", tok) == sentence
        assert await refused(api, f"/sub/ds1/jobs?after={after}", driver) == sentence


async def test_refusal_without_retention_configured(make_api: AppFactory) -> None:
    api = await make_api(retention_days=0)
    await api.declare("ds1")
    tok, through = await scenario(api)
    message = await refused(api, "/sub/ds1/job?after=1", tok)
    assert message.startswith(
        f"Events up to seq {through} were purged by retention (terminal jobs past the retention "
        "period)"
    )


async def test_after_zero_replays_what_is_kept(api: Api) -> None:
    tok, through = await scenario(api)
    ws = await connect(api, "/sub/ds1/job?after=0", tok)
    frames = await receive_n(ws, 2, "notification")
    assert [(f["job"], f["data"]["status"]) for f in frames] == [
        ("open", "submitted"),
        ("open", "accepted"),
    ]
    assert frames[0]["seq"] < through < frames[1]["seq"]
    await submit(api, tok, "live")  # then live
    assert (await receive(ws, "notification"))["job"] == "live"
    await ws.close()

    driver = await connect(api, "/sub/ds1/jobs?after=0", api.token("driver"))
    entry = await receive(driver, "stream_entry")
    assert (entry["job"], entry["type"]) == ("open", "request")
    assert (await receive(driver, "stream_entry"))["job"] == "live"
    await driver.close()


async def test_resume_at_or_after_purged_through_loses_nothing(api: Api) -> None:
    tok, through = await scenario(api)
    ws = await connect(api, f"/sub/ds1/job?after={through}", tok)
    frame = await receive(ws, "notification")
    assert (frame["job"], frame["data"]["status"], frame["seq"]) == (
        "open",
        "accepted",
        through + 1,
    )
    await update(api, "open", "complete")
    frame = await receive(ws, "notification")
    assert (frame["job"], frame["data"]["status"]) == ("open", "complete")
    await ws.close()
    # From the end of the log: nothing replayed, live continues.
    ws = await connect(api, f"/sub/ds1/job?after={frame['seq']}", tok)
    await submit(api, tok, "next")
    frame = await receive(ws, "notification")
    assert frame["job"] == "next"
    await ws.close()


async def test_since_pages_across_a_purge(api: Api) -> None:
    """``since`` is never refused: a driver paging across a purge loses only entries of purged
    (terminal, hence nothing left to do) jobs, and gets every kept entry once."""
    tok = api.token()
    driver = api.token("driver")
    for i in range(6):
        await submit(api, tok, f"j{i}")
    first = await api.call("GET", "/jobs/ds1/since/0?limit=2", driver, expect=200)
    assert [e["job"] for e in first] == ["j0", "j1"]
    resp = await api.client.get("/jobs/ds1/since/0?limit=2", headers=api.auth(driver))
    next_url = next_link(resp)
    # j1..j3 finish and are purged (j1 was on the page already read).
    for job in ("j1", "j2", "j3"):
        await update(api, job, "complete")
    assert await store_of(api).purge(now_ms() + 1) == 3
    assert await store_of(api).purged_through() > first[-1]["seq"]
    rest: list[Any] = []
    url = next_url
    while url is not None:
        resp = await api.client.get(url, headers=api.auth(driver))
        assert resp.status == 200
        rest += await resp.json()
        url = next_link(resp)
    assert [e["job"] for e in rest] == ["j4", "j5"]
    again = await api.call("GET", "/jobs/ds1/since/0", driver, expect=200)
    assert [e["job"] for e in again] == ["j0", "j4", "j5"]
