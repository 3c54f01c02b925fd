"""The client and driver websockets (``/sub/<DSID>/job``, ``/sub/<DSID>/jobs``) over real
sockets, on every backend. Every frame received is checked against the wire schemas."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from jobqueue_store.config import Limits
from jobqueue_store.web import ws as ws_module
from jobqueue_store.web.keys import HUB, STORE
from tests.web.conftest import Api, AppFactory
from tests.wire import validate

WAIT = 10.0
"""Seconds to wait for a frame that must come (never a timing assertion: only a hang guard)."""

WSResponse = aiohttp.ClientWebSocketResponse


async def connect(api: Api, path: str, token: str | None, **kw: Any) -> WSResponse:
    """Open a websocket to ``path`` with ``token`` in the Authorization header."""
    headers = api.auth(token) if token is not None else {}
    return await api.client.ws_connect(path, headers=headers, **kw)


async def receive(ws: WSResponse, schema: str) -> dict[str, Any]:
    """The next frame, which must be a text frame valid as ``schema``."""
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type is WSMsgType.TEXT, f"expected a {schema} frame, got {msg!r}"
    body = orjson.loads(msg.data)
    validate(schema, body)
    assert isinstance(body, dict)
    return body


async def receive_n(ws: WSResponse, n: int, schema: str) -> list[dict[str, Any]]:
    """The next ``n`` frames."""
    return [await receive(ws, schema) for _ in range(n)]


async def receive_close(ws: WSResponse) -> aiohttp.WSMessage:
    """Skip nothing: the next message must close the socket."""
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type is WSMsgType.CLOSE, f"expected a close, got {msg!r}"
    return msg


async def submit(api: Api, token: str, job: str, request: Any = None) -> dict[str, Any]:
    """Submit ``job`` as the bearer of ``token``; return its status record."""
    body = await api.call(
        "POST", "/ds1/job/", token, {"job": job, "request": request or {"n": job}}, expect=201
    )
    assert isinstance(body, dict)
    return body


async def update(api: Api, job: str, status: str) -> dict[str, Any]:
    """Report ``status`` for ``job`` as the driver."""
    body = await api.call(
        "POST", f"/jobs/ds1/job/{job}/", api.token("driver"), {"status": status}, expect=200
    )
    assert isinstance(body, dict)
    return body


def assert_increasing(seqs: list[int]) -> None:
    """Strictly increasing ``seq``: in order, no duplicate."""
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs


# notifications and the request stream ---------------------------------------------------------
async def test_client_notifications_follow_every_change(api: Api) -> None:
    tok = api.token()
    ws = await connect(api, "/sub/ds1/job", tok)
    submitted = await submit(api, tok, "j1")
    cancelled = await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200)
    accepted = await update(api, "j1", "accepted")
    done = await update(api, "j1", "cancelled")
    frames = await receive_n(ws, 4, "notification")
    assert [f["data"] for f in frames] == [submitted, cancelled, accepted, done]
    assert [f["data"]["cancel_requested"] for f in frames] == [False, True, True, True]
    assert [f["data"]["status"] for f in frames] == [
        "submitted",
        "submitted",
        "accepted",
        "cancelled",
    ]
    for f in frames:
        assert (f["datasource_id"], f["type"], f["job"], f["client"]) == (
            "ds1",
            "status",
            "j1",
            "app1",
        )
    assert_increasing([f["seq"] for f in frames])
    await ws.close()


async def test_trailing_slash_and_token_in_query(api: Api) -> None:
    tok = api.token()
    ws = await api.client.ws_connect("/sub/ds1/job/", params={"token": tok})
    await submit(api, tok, "j1")
    frame = await receive(ws, "notification")
    assert frame["job"] == "j1"
    await ws.close()
    driver = await api.client.ws_connect("/sub/ds1/jobs/", params={"token": api.token("driver")})
    await submit(api, tok, "j2")
    assert (await receive(driver, "stream_entry"))["job"] == "j2"
    await driver.close()


async def test_driver_stream_has_request_and_cancel_entries_only(api: Api) -> None:
    ws = await connect(api, "/sub/ds1/jobs", api.token("driver"))
    app1, app2 = api.token(), api.token(client="app2")
    await submit(api, app1, "j1", {"a": 1})
    await submit(api, app2, "j2", {"b": 2})
    await update(api, "j2", "accepted")
    await api.call("DELETE", "/ds1/job/j1/", app1, expect=200)
    await update(api, "j1", "cancelled")
    await submit(api, app1, "j3")
    entries = await receive_n(ws, 4, "stream_entry")
    assert [(e["type"], e["job"], e["client"]) for e in entries] == [
        ("request", "j1", "app1"),
        ("request", "j2", "app2"),
        ("cancel", "j1", "app1"),
        ("request", "j3", "app1"),
    ]
    assert entries[0]["data"] == {"job": "j1", "client": "app1", "request": {"a": 1}}
    assert entries[2]["data"] == {"job": "j1", "client": "app1"}
    assert_increasing([e["seq"] for e in entries])
    since = await api.call("GET", "/jobs/ds1/since/0", api.token("driver"), expect=200)
    assert entries == since, "the live stream and the since read show the same entries"
    await ws.close()


async def test_isolation_200_clients(make_api: AppFactory) -> None:
    api = await make_api()
    await api.declare("ds1")
    clients = [f"c{i}" for i in range(200)]
    tokens = {c: api.token(client=c) for c in clients}
    # The test client's own session pools at most 100 connections: 200 sockets need their own.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        url = api.client.make_url("/sub/ds1/job")
        sockets = await asyncio.gather(
            *(session.ws_connect(url, headers=api.auth(tokens[c])) for c in clients)
        )

        async def jobs_of(client: str) -> None:
            for name in ("a", "b", "end"):
                await submit(api, tokens[client], f"{client}-{name}")

        await asyncio.gather(*(jobs_of(c) for c in clients))

        async def check(client: str, ws: WSResponse) -> None:
            frames = await receive_n(ws, 3, "notification")
            assert [f["job"] for f in frames] == [f"{client}-a", f"{client}-b", f"{client}-end"]
            assert {f["client"] for f in frames} == {client}
            assert_increasing([f["seq"] for f in frames])
            await ws.close()

        await asyncio.gather(*(check(c, ws) for c, ws in zip(clients, sockets, strict=True)))


# replay and resume ----------------------------------------------------------------------------
async def test_after_replays_then_goes_live(api: Api) -> None:
    tok = api.token()
    records = [await submit(api, tok, f"j{i}") for i in range(3)]
    await submit(api, api.token(client="other"), "theirs")
    ws = await connect(api, "/sub/ds1/job", tok)  # no ?after=: live only
    await update(api, "j0", "accepted")
    live = await receive(ws, "notification")
    assert (live["job"], live["data"]["status"]) == ("j0", "accepted")
    await ws.close()

    everything = await api.client.ws_connect(
        "/sub/ds1/job", params={"after": "0"}, headers=api.auth(tok)
    )
    frames = await receive_n(everything, 4, "notification")
    assert [f["job"] for f in frames] == ["j0", "j1", "j2", "j0"]
    assert [f["data"] for f in frames[:3]] == records
    first_seq = frames[0]["seq"]
    await everything.close()

    ws = await api.client.ws_connect(
        "/sub/ds1/job", params={"after": str(first_seq)}, headers=api.auth(tok)
    )
    replayed = await receive_n(ws, 3, "notification")
    assert replayed == frames[1:]
    await submit(api, tok, "j3")
    live = await receive(ws, "notification")
    assert live["job"] == "j3" and live["seq"] > replayed[-1]["seq"]
    await ws.close()

    driver = await api.client.ws_connect(
        "/sub/ds1/jobs", params={"after": str(first_seq)}, headers=api.auth(api.token("driver"))
    )
    entries = await receive_n(driver, 4, "stream_entry")
    assert [e["job"] for e in entries] == ["j1", "j2", "theirs", "j3"]
    await driver.close()


@pytest.mark.parametrize("driver", [False, True], ids=["client", "driver"])
async def test_resume_under_concurrent_writer(
    api: Api, driver: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small replay pages: the replay spans many store reads, between which the writer commits.
    monkeypatch.setattr(ws_module, "REPLAY_PAGE", 3)
    tok, other = api.token(), api.token(client="other")
    path = "/sub/ds1/jobs" if driver else "/sub/ds1/job"
    schema = "stream_entry" if driver else "notification"
    for i in range(10):
        await submit(api, tok, f"pre{i}")
    start = (await api.call("GET", "/jobs/ds1/latest", api.token("driver"), expect=200))["seq"]
    for i in range(5):
        await submit(api, tok, f"mid{i}")

    async def writer() -> None:
        for i in range(60):
            await submit(api, tok, f"w{i}")
            await submit(api, other, f"o{i}")
            if i % 3 == 0:
                await update(api, f"w{i}", "accepted")
        await submit(api, tok, "last")

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)  # let the writer start before the handshake
    ws = await connect(api, path, api.token("driver") if driver else tok, params={"after": start})
    received: list[dict[str, Any]] = []
    while not received or received[-1]["job"] != "last":
        received.append(await receive(ws, schema))
    await task
    await ws.close()

    store = api.client.server.app[STORE]
    log = await store.events_after(
        "ds1", start, client=None if driver else "app1", stream_only=driver, limit=10_000
    )
    assert [f["seq"] for f in received] == [e.seq for e in log]
    assert received == [e.stream_entry() if driver else e.notification() for e in log]


async def test_live_overflow_during_replay_resubscribes(
    make_api: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(limits=Limits(ws_send_queue=2))
    await api.declare("ds1")
    tok = api.token()
    for i in range(3):
        await submit(api, tok, f"pre{i}")
    store = api.client.server.app[STORE]
    real_events_after = store.events_after
    calls = 0

    async def events_after(*args: Any, **kw: Any) -> Any:
        # The real read, then real writes that land while the replay is still going: more than
        # the live queue holds, so the subscription overflows before the replay ends.
        nonlocal calls
        calls += 1
        page = await real_events_after(*args, **kw)
        if calls == 1:
            for i in range(5):
                await store.submit("ds1", f"during{i}", "app1", {"i": i})
        return page

    monkeypatch.setattr(store, "events_after", events_after)
    ws = await api.client.ws_connect("/sub/ds1/job", params={"after": "0"}, headers=api.auth(tok))
    frames = await receive_n(ws, 8, "notification")
    await submit(api, tok, "live")
    frames.append(await receive(ws, "notification"))
    assert [f["job"] for f in frames] == [
        *(f"pre{i}" for i in range(3)),
        *(f"during{i}" for i in range(5)),
        "live",
    ]
    assert_increasing([f["seq"] for f in frames])
    assert calls >= 2, "the replay read the log again after the overflow"
    await ws.close()


# handshake ------------------------------------------------------------------------------------
async def handshake_refused(api: Api, path: str, token: str | None, status: int) -> str:
    """Assert that the upgrade is refused with ``status`` and a JSON error; return its code."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await connect(api, path, token)
    assert info.value.status == status
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    body = await api.call("GET", path, token, expect=status, headers=headers)
    assert isinstance(body, dict)
    return str(body["code"])


async def test_admin_client_subscription_sees_every_client(api: Api) -> None:
    """An admin may use everything (docs/protocol.md, "Authentication"): on /sub/<DSID>/job it
    gets every client's notifications of the datasource, replayed with after= and live."""
    one, two = api.token(client="app1"), api.token(client="app2")
    first = await submit(api, one, "a1")
    admin = await connect(api, "/sub/ds1/job?after=0", api.token("admin"))
    replayed = await receive(admin, "notification")
    assert (replayed["job"], replayed["client"]) == ("a1", "app1")
    await submit(api, two, "b1")
    await update(api, "a1", "complete")
    live = await receive_n(admin, 2, "notification")
    assert [(n["job"], n["client"]) for n in live] == [("b1", "app2"), ("a1", "app1")]
    assert_increasing([replayed["seq"], *(n["seq"] for n in live)])
    assert live[1]["data"]["status"] == "complete" and first["version"] == 1
    await admin.close()


async def test_handshake_rejections(api: Api) -> None:
    assert await handshake_refused(api, "/sub/ds1/job", None, 401) == "unauthorized"
    assert await handshake_refused(api, "/sub/ds1/jobs", "garbage", 401) == "unauthorized"
    client, driver = api.token(), api.token("driver")
    assert await handshake_refused(api, "/sub/ds1/job", driver, 403) == "forbidden"
    assert await handshake_refused(api, "/sub/ds1/jobs", client, 403) == "forbidden"
    elsewhere = api.token(dsids=["ds2"])
    assert await handshake_refused(api, "/sub/ds1/job", elsewhere, 403) == "forbidden"
    elsewhere_driver = api.token("driver", dsids=["ds2"])
    assert await handshake_refused(api, "/sub/ds1/jobs", elsewhere_driver, 403) == "forbidden"
    assert await handshake_refused(api, "/sub/nope/job", client, 404) == "not_found"
    assert await handshake_refused(api, "/sub/nope/jobs", driver, 404) == "not_found"
    for bad in ("-1", "x", "1.5", ""):
        assert await handshake_refused(api, f"/sub/ds1/job?after={bad}", client, 400) == (
            "bad_request"
        )
    # A plain GET (no upgrade) is refused with a JSON 400 too.
    await api.call("GET", "/sub/ds1/job", client, expect=400)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.client.ws_connect("/sub/ds1/job", params={"token": "garbage"})
    assert info.value.status == 401


async def test_connection_limits(make_api: AppFactory) -> None:
    api = await make_api(limits=Limits(max_ws_per_client=2, max_connections=3))
    await api.declare("ds1")
    tok = api.token()
    first = [await connect(api, "/sub/ds1/job", tok) for _ in range(2)]
    assert await handshake_refused(api, "/sub/ds1/job", tok, 429) == "too_many"
    third = await connect(api, "/sub/ds1/jobs", api.token("driver"))
    other = api.token(client="other")
    assert await handshake_refused(api, "/sub/ds1/job", other, 503) == "unavailable"
    await first[0].close()
    fourth = await connect(api, "/sub/ds1/job", other)
    for ws in (first[1], third, fourth):
        await ws.close()


async def test_metrics_gauge_counts_open_sockets(api: Api) -> None:
    admin = api.token("admin")
    ws = await connect(api, "/sub/ds1/job", api.token())
    text = await api.call("GET", "/metrics", admin, expect=200)
    assert re.search(r"^jobqueue_websockets 1$", text, re.M), text
    await ws.close()
    while "jobqueue_websockets 0\n" not in text:  # the server notices the close shortly
        await asyncio.sleep(0.01)
        text = await api.call("GET", "/metrics", admin, expect=200)


# incoming frames ------------------------------------------------------------------------------
async def test_incoming_frames_are_ignored_or_answered(api: Api) -> None:
    tok = api.token()
    ws = await connect(api, "/sub/ds1/job", tok)
    await ws.send_str('{"hello": "store"}')  # valid JSON: ignored
    await ws.send_str("not json")
    err = await receive(ws, "error")
    assert err["code"] == "bad_request"
    await ws.send_bytes(b"\x00\x01")
    assert (await receive(ws, "error"))["code"] == "bad_request"
    await submit(api, tok, "j1")
    assert (await receive(ws, "notification"))["job"] == "j1"
    await ws.send_str("x" * (70 * 1024))  # over max_ws_message (64 KiB)
    msg = await receive_close(ws)
    assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


# slow consumers, expiry, shutdown -------------------------------------------------------------
async def test_slow_subscriber_is_closed_then_resumes_without_loss(make_api: AppFactory) -> None:
    api = await make_api(limits=Limits(ws_send_queue=5, ws_send_timeout=0.5))
    await api.declare("ds1")
    tok = api.token()
    ws = await connect(api, "/sub/ds1/job", tok)
    # Stop reading: with the client's transport paused, the socket buffers fill (a few MiB)
    # and the server's sends back up; 80 notifications of 192 KiB are well over that.
    conn = ws._response.connection
    assert conn is not None and conn.transport is not None
    conn.transport.pause_reading()
    big = "x" * (192 * 1024)
    for i in range(80):
        await submit(api, tok, f"j{i}", {"i": i, "pad": big})
    conn.transport.resume_reading()

    received: list[dict[str, Any]] = []
    while True:
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        if msg.type is not WSMsgType.TEXT:
            break
        body = orjson.loads(msg.data)
        validate("notification", body)
        received.append(body)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4008, msg
    assert len(msg.extra.encode()) < 123
    match = re.fullmatch(r"slow consumer; resume with after=(\d+)", msg.extra)
    assert match, msg.extra
    last = int(match.group(1))
    assert received, "a few frames are sent before the subscriber falls behind"
    assert received[-1]["seq"] == last, "the reason names the last seq that was sent"
    assert len(received) < 80

    ws = await api.client.ws_connect(
        "/sub/ds1/job", params={"after": str(last)}, headers=api.auth(tok)
    )
    while received[-1]["job"] != "j79":
        received.append(await receive(ws, "notification"))
    await ws.close()
    assert [f["job"] for f in received] == [f"j{i}" for i in range(80)]
    assert_increasing([f["seq"] for f in received])


async def test_expired_token_closes_with_4001(api: Api) -> None:
    # time < caveats have whole seconds, so a 2 s token lives for 1 to 2 s.
    tok = api.token(ttl=2)
    ws = await connect(api, "/sub/ds1/job", tok)
    msg = await receive_close(ws)
    assert msg.data == 4001 and msg.extra == "token expired"


async def test_expired_token_closes_a_socket_that_keeps_sending(api: Api) -> None:
    # The expiry timer, not a pause between events, ends the socket: jobs keep coming.
    ws = await connect(api, "/sub/ds1/job", api.token(ttl=2))
    submitter = api.token()
    for i in itertools.count():
        await submit(api, submitter, f"j{i}")
        msg = await asyncio.wait_for(ws.receive(), WAIT)
        if msg.type is not WSMsgType.TEXT:
            break
        assert i < 10_000, "the socket outlived its token"
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 4001 and msg.extra == "token expired"


async def test_an_early_expiry_timer_is_armed_again(api: Api) -> None:
    # A loop may run a timer up to its clock's resolution early: the token has not expired
    # then, and the timer is set again for the deadline.
    loop = asyncio.get_running_loop()
    sock = ws_module._Socket(
        aiohttp.web.WebSocketResponse(),
        hub=api.client.app[HUB],
        store=api.client.app[STORE],
        limits=Limits(),
        dsid="ds1",
        client="app1",
        driver=False,
        after=None,
        expires_at=None,
    )
    sock.subscribe()
    assert sock.sub is not None
    sock.deadline = loop.time() + 60
    sock._on_expiry()
    assert not sock.expired and sock.expiry is not None
    assert sock.expiry.when() == sock.deadline
    sock.expiry.cancel()
    waiting = asyncio.create_task(sock.sub.wait())
    await asyncio.sleep(0)
    sock.deadline = loop.time()
    sock._on_expiry()
    assert sock.expired and sock.expiry is None
    assert await asyncio.wait_for(waiting, WAIT), "the waiting sender is woken"
    sock.unsubscribe()


async def test_shutdown_closes_every_socket_with_1001(api: Api) -> None:
    tok = api.token()
    client = await connect(api, "/sub/ds1/job", tok)
    driver = await connect(api, "/sub/ds1/jobs", api.token("driver"))
    await submit(api, tok, "j1")
    assert (await receive(client, "notification"))["job"] == "j1"
    assert (await receive(driver, "stream_entry"))["job"] == "j1"
    await api.client.server.app.shutdown()
    for ws in (client, driver):
        msg = await receive_close(ws)
        assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
    assert await handshake_refused(api, "/sub/ds1/job", tok, 503) == "unavailable"
