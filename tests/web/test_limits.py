"""Abuse limits through the real server: quotas (429 + Retry-After), body size and depth, ?wait=."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

from jobqueue_store.config import Limits
from jobqueue_store.models import Datasource, Status, StatusUpdate
from jobqueue_store.quota import Quotas
from jobqueue_store.storage.base import Store
from jobqueue_store.storage.sqlite import UNFINISHED_SQL, SQLiteStore
from jobqueue_store.web.keys import SERVICE
from tests.web.conftest import Api, AppFactory

JSON = {"Content-Type": "application/json"}


async def _api_with(make_api: AppFactory, limits: Limits) -> Api:
    api = await make_api(limits=limits)
    # create_app builds Quotas from the submit rate only; pass every quota of the limits.
    assert api.client.server.app is not None
    api.client.server.app[SERVICE].quotas = Quotas.from_limits(limits)
    await api.declare("ds1")
    return api


async def _too_many(api: Api, token: str, job: str, dsid: str = "ds1") -> int:
    """Submit ``job``, assert a JSON 429, and return its ``Retry-After`` (an integer)."""
    resp = await api.client.post(
        f"/{dsid}/job/", json={"job": job, "request": 1}, headers=api.auth(token)
    )
    assert resp.status == 429, await resp.text()
    body = await resp.json()
    assert body["code"] == "too_many" and body["error"]
    retry_after = resp.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    return int(retry_after)


async def test_submit_rate_is_per_client_and_answers_retry_after(make_api: AppFactory) -> None:
    # 0.5/s with a burst of 1: the second submit within two seconds is refused.
    api = await _api_with(make_api, Limits(submits_per_second=0.5))
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "a1", "request": 1}, expect=201)
    assert 1 <= await _too_many(api, tok, "a2") <= 2
    # Another client has its own bucket.
    other = api.token(client="app2")
    await api.call("POST", "/ds1/job/", other, {"job": "b1", "request": 1}, expect=201)
    # A refused submit stored nothing.
    await api.call("GET", "/ds1/job/a2/", tok, expect=404)


async def test_max_unfinished_jobs_per_client_and_datasource(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_unfinished_jobs=2))
    await api.declare("ds2")
    tok, driver = api.token(), api.token("driver")
    for job in ("j1", "j2"):
        await api.call("POST", "/ds1/job/", tok, {"job": job, "request": 1}, expect=201)
    assert await _too_many(api, tok, "j3") == 1
    # Retrying a job already stored is not a new job: 200 (same request) or 409 (different).
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=200)
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 2}, expect=409)
    # Other clients and other datasources are counted apart.
    other = api.token(client="app2")
    await api.call("POST", "/ds1/job/", other, {"job": "k1", "request": 1}, expect=201)
    await api.call("POST", "/ds2/job/", tok, {"job": "j3", "request": 1}, expect=201)
    # A non-terminal update keeps the job unfinished; a terminal one frees a place.
    await api.call("POST", "/jobs/ds1/job/j1/", driver, {"status": "accepted"}, expect=200)
    await _too_many(api, tok, "j3")
    await api.call("POST", "/jobs/ds1/job/j1/", driver, {"status": "complete"}, expect=200)
    await api.call("POST", "/ds1/job/", tok, {"job": "j3", "request": 1}, expect=201)
    await _too_many(api, tok, "j4")
    # A cancel request alone does not free a place (the job is unfinished until the driver
    # reports it); the driver's "cancelled" does.
    await api.call("POST", "/ds1/job/j2/cancel", tok, expect=200)
    await _too_many(api, tok, "j4")
    await api.call("POST", "/jobs/ds1/job/j2/", driver, {"status": "cancelled"}, expect=200)
    await api.call("POST", "/ds1/job/", tok, {"job": "j4", "request": 1}, expect=201)


async def test_admin_submits_count_against_the_named_client(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_unfinished_jobs=1))
    admin = api.token("admin")
    body = {"job": "j1", "client": "app1", "request": 1}
    await api.call("POST", "/ds1/job/", admin, body, expect=201)
    await _too_many(api, api.token(), "j2")


async def test_count_unfinished_is_exact(store: Store) -> None:
    for dsid in ("ds1", "ds2"):
        await store.put_datasource(Datasource(dsid, "", None))
    for job in ("a", "b", "c", "d"):
        await store.submit("ds1", job, "app1", 1)
    await store.submit("ds1", "z", "app2", 1)
    await store.submit("ds2", "a", "app1", 1)
    await store.update_status("ds1", "a", StatusUpdate(Status.COMPLETE))
    await store.update_status("ds1", "b", StatusUpdate(Status.ACCEPTED))
    await store.update_status("ds1", "c", StatusUpdate(Status.RETRYING))
    await store.cancel("ds1", "d", "app1")
    assert await store.count_unfinished("ds1", "app1") == 3
    assert await store.count_unfinished("ds1", "app2") == 1
    assert await store.count_unfinished("ds2", "app1") == 1
    assert await store.count_unfinished("ds1", "nobody") == 0
    # The backend's indexed count agrees with the interface's generic one.
    assert await Store.count_unfinished(store, "ds1", "app1") == 3


async def test_sqlite_counts_unfinished_jobs_from_the_partial_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    try:
        plan = await store._read(
            lambda db: db.execute(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM jobs WHERE datasource_id = ? AND "
                f"client = ? AND {UNFINISHED_SQL}",
                ("ds1", "app1"),
            ).fetchall()
        )
        assert any("jobs_unfinished" in str(row) for row in plan), plan
    finally:
        await store.close()


async def test_deeply_nested_bodies_are_400(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_json_depth=16))
    tok = api.token()
    # Far past orjson's own limit (1024): refused while decoding.
    err = await api.call("POST", "/ds1/job/", tok, expect=400, data=b"[" * 10_000, headers=JSON)
    assert err["code"] == "bad_request"
    # Valid JSON, deeper than the store's limit, and brackets in strings are not nesting.
    deep: object = 1
    for _ in range(16):
        deep = [deep]
    err = await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": deep}, expect=400)
    assert "deeper than 16" in err["error"]
    wide = {"job": "j2", "request": {"s": "[[[[" * 50, "a": [[1]] * 500}}
    await api.call("POST", "/ds1/job/", tok, wide, expect=201)
    # The limit holds for every JSON body: a datasource's schema, a driver's response.
    driver = api.token("driver")
    schema = {"type": "object", "properties": {"x": {"not": deep}}}
    await api.call("PUT", "/jobs/ds1", driver, {"request_schema": schema}, expect=400)
    await api.call(
        "POST", "/jobs/ds1/job/j2/", driver, {"status": "complete", "response": deep}, expect=400
    )


async def test_default_depth_limit_keeps_bodies_storable(api: Api) -> None:
    # 300 levels decode with orjson but could not be encoded again: refused with 400, not 500.
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    await api.call("POST", "/ds1/job/", api.token(), {"job": "j1", "request": deep}, expect=400)


async def test_chunked_body_over_the_limit_is_a_json_413(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_body=1000))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"job": "j1", "request": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    err = await api.call("POST", "/ds1/job/", api.token(), expect=413, data=chunks(), headers=JSON)
    assert err["code"] == "too_large"
    # A declared Content-Length over the limit is refused before the body is read.
    err = await api.call(
        "POST", "/ds1/job/", api.token(), expect=413, data=b"[" + b"1," * 600 + b"1]", headers=JSON
    )
    assert err["code"] == "too_large"


async def _one_write(port: int, head: str, body: bytes) -> tuple[bytes, bytes]:
    """Send a request in one write (body included, so it arrives with its headers); return the
    status line and the body of the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await reader.readexactly(length)
    finally:
        writer.close()


async def test_a_whole_chunked_body_is_measured_against_the_limit(make_api: AppFactory) -> None:
    """A chunked body that arrives whole with its headers is read at once: over the limit it is
    a JSON 413, within it the job is stored with the request it carries."""
    api = await _api_with(make_api, Limits(max_body=1000))
    port = api.client.port
    assert port is not None
    head = (
        "POST /ds1/job/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api.token()}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def chunked(data: bytes) -> bytes:
        return (
            b"".join(
                b"%x\r\n%s\r\n" % (len(data[i : i + 100]), data[i : i + 100])
                for i in range(0, len(data), 100)
            )
            + b"0\r\n\r\n"
        )

    big = orjson.dumps({"job": "big", "request": "x" * 2000})
    status, body = await _one_write(port, head, chunked(big))
    assert status.startswith(b"HTTP/1.1 413")
    assert orjson.loads(body)["code"] == "too_large"
    small = orjson.dumps({"job": "small", "request": {"n": 1}})
    status, body = await _one_write(port, head, chunked(small))
    assert status.startswith(b"HTTP/1.1 201")
    assert orjson.loads(body)["request"] == {"n": 1}
    await api.call("GET", "/ds1/job/big/", api.token(), expect=404)


async def test_wait_longer_than_max_wait_is_400(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_wait=5))
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    for wait in ("5.5", "0", "-1", "nan", "inf", "soon"):
        err = await api.call("GET", f"/ds1/job/j1/?wait={wait}", tok, expect=400)
        assert "wait" in err["error"]
        await api.call(
            "POST", f"/ds1/job/?wait={wait}", tok, {"job": "j2", "request": 1}, expect=400
        )
    await api.call("GET", "/ds1/job/j2/", tok, expect=404)
    driver = api.token("driver")
    await api.call("POST", "/jobs/ds1/job/j1/", driver, {"status": "complete"}, expect=200)
    await api.call("GET", "/ds1/job/j1/?wait=5", tok, expect=200)


async def test_websocket_connections_per_client_are_limited(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_ws_per_client=1))
    tok = api.token()
    ws = await api.client.ws_connect("/sub/ds1/job", headers=api.auth(tok))
    try:
        resp = await api.client.get(
            "/sub/ds1/job",
            headers={
                **api.auth(tok),
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert resp.status == 429
        assert (await resp.json())["code"] == "too_many"
        other_client = api.auth(api.token(client="app2"))
        other = await api.client.ws_connect("/sub/ds1/job", headers=other_client)
        await other.close()
    finally:
        await ws.close()
