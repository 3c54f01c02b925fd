"""The driver API (docs/protocol.md, "Driver API") through the real HTTP server, on every
backend."""

from __future__ import annotations

import asyncio
import re

from tests.web.conftest import Api


async def test_declare_and_catalogue(api: Api) -> None:
    drv = api.token("driver")
    ds = await api.call(
        "PUT", "/jobs/ds2/", drv, {"description": "second"}, expect=200, schema="datasource"
    )
    assert ds == {"datasource_id": "ds2", "description": "second"}
    await api.call("PUT", "/jobs/ds2", drv, {"description": "renamed"}, expect=200)
    cat = await api.call("GET", "/cat", drv, expect=200, schema="catalogue")
    assert {d["datasource_id"]: d["description"] for d in cat["datasources"]} == {
        "ds1": "test",
        "ds2": "renamed",
    }
    narrow = api.token("driver", dsids=["ds2"])
    cat = await api.call("GET", "/cat/", narrow, expect=200, schema="catalogue")
    assert [d["datasource_id"] for d in cat["datasources"]] == ["ds2"]
    await api.call("PUT", "/jobs/ds1", narrow, {"description": "x"}, expect=403)
    await api.call("PUT", "/jobs/ds3", api.token(), {"description": "x"}, expect=403)
    await api.call("PUT", "/jobs/ds3", drv, {"description": 5}, expect=400)
    await api.call("PUT", "/jobs/ds3", drv, {"descr": "x"}, expect=400)


async def test_status_transitions(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "j", "request": 1}, expect=201)
    path = "/jobs/ds1/job/j/"
    rec = await api.call(
        "POST",
        path,
        drv,
        {"status": "accepted", "progress": 0.25},
        expect=200,
        schema="status_record",
    )
    assert (rec["status"], rec["progress"], rec["version"]) == ("accepted", 0.25, 2)
    same = await api.call("POST", path, drv, {"status": "accepted", "progress": 0.25}, expect=200)
    assert same["version"] == 2, "an identical update changes nothing"
    rec = await api.call("POST", path, drv, {"status": "retrying", "error": "flaky"}, expect=200)
    assert rec["version"] == 3 and "progress" not in rec and rec["error"] == "flaky"
    rec = await api.call(
        "POST", path, drv, {"status": "complete", "response": {"ok": True}}, expect=200
    )
    assert rec["version"] == 4 and rec["response"] == {"ok": True} and "error" not in rec
    again = await api.call(
        "POST", path, drv, {"status": "complete", "response": {"ok": True}}, expect=200
    )
    assert again == rec, "an identical repeat of the terminal update is 200"
    await api.call("POST", path, drv, {"status": "failed"}, expect=409)
    await api.call("POST", path, drv, {"status": "complete", "response": {"ok": False}}, expect=409)
    got = await api.call("GET", path, drv, expect=200, schema="status_record")
    assert got == rec
    seen = await api.call("GET", "/ds1/job/j", tok, expect=200)
    assert seen == rec


async def test_status_update_errors(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "j", "request": 1}, expect=201)
    path = "/jobs/ds1/job/j"
    for body in (
        {"status": "submitted"},
        {"status": "done"},
        {"status": 1},
        {},
        {"status": "accepted", "progress": 1.5},
        {"status": "accepted", "progress": True},
        {"status": "accepted", "error": 5},
        {"status": "accepted", "other": 1},
    ):
        await api.call("POST", path, drv, body, expect=400)
    await api.call("POST", "/jobs/ds1/job/missing", drv, {"status": "accepted"}, expect=404)
    await api.call("POST", "/jobs/nope/job/j", drv, {"status": "accepted"}, expect=404)
    await api.call("POST", path, tok, {"status": "accepted"}, expect=403)
    await api.call("GET", "/jobs/ds1/job/missing/", drv, expect=404)
    await api.call("GET", "/jobs/ds1/latest", tok, expect=403)


async def test_every_status_value(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    for status in ("accepted", "retrying", "complete", "cancelled", "forbidden", "failed"):
        await api.call("POST", "/ds1/job/", tok, {"job": status, "request": 1}, expect=201)
        rec = await api.call("POST", f"/jobs/ds1/job/{status}", drv, {"status": status}, expect=200)
        assert rec["status"] == status


async def test_latest_and_empty_stream(api: Api) -> None:
    drv = api.token("driver")
    await api.call("GET", "/jobs/ds1/latest", drv, expect=404)
    await api.call("GET", "/jobs/nope/latest", drv, expect=404)
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "a", "request": 1}, expect=201)
    await api.call("POST", "/ds1/job/", tok, {"job": "b", "request": 2}, expect=201)
    await api.call("POST", "/jobs/ds1/job/a", drv, {"status": "accepted"}, expect=200)
    latest = await api.call("GET", "/jobs/ds1/latest/", drv, expect=200, schema="stream_entry")
    assert latest["job"] == "b", "status updates are not request-stream entries"


def _next_link(header: str | None) -> str | None:
    if header is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', header)
    assert match, header
    return match.group(1)


async def test_since_pages_continue_exactly_after_the_last_entry(api: Api) -> None:
    """2,500 entries, many sharing a millisecond: pages have no gap and no duplicate."""
    tok, drv = api.token(), api.token("driver")
    first = await api.call("POST", "/ds1/job/", tok, {"job": "j0", "request": 0}, expect=201)

    async def submit(i: int) -> None:
        resp = await api.client.post(
            "/ds1/job/", json={"job": f"j{i}", "request": i}, headers=api.auth(tok)
        )
        assert resp.status == 201

    # Concurrent submits share a commit, so many entries share one millisecond.
    for start in range(1, 2500, 100):
        await asyncio.gather(*(submit(i) for i in range(start, min(start + 100, 2500))))
    url: str | None = f"/jobs/ds1/since/{first['submitted_at']}?limit=300"
    seqs: list[int] = []
    jobs: list[str] = []
    pages = 0
    while url is not None:
        resp = await api.client.get(url, headers=api.auth(drv))
        assert resp.status == 200
        page = await resp.json()
        for entry in page:
            assert entry["type"] == "request"
        seqs += [e["seq"] for e in page]
        jobs += [e["job"] for e in page]
        url = _next_link(resp.headers.get("Link"))
        pages += 1
    assert pages == 9
    assert len(jobs) == 2500 and set(jobs) == {f"j{i}" for i in range(2500)}
    assert seqs == sorted(set(seqs)), "pages continue in seq order, no gap, no duplicate"
    stamps = await api.call("GET", "/jobs/ds1/since/0?limit=10000", drv, expect=200)
    assert len(stamps) == 2500
    ts = [e["timestamp"] for e in stamps]
    assert ts == sorted(ts)
    assert len(set(ts)) < 2500, "the test needs entries sharing a millisecond"
    later = await api.call("GET", f"/jobs/ds1/since/{ts[-1] + 1}", drv, expect=200)
    assert later == []
    for bad in ("abc", "-5", "1.5"):
        await api.call("GET", f"/jobs/ds1/since/{bad}", drv, expect=400)
    await api.call("GET", "/jobs/ds1/since/0?limit=10001", drv, expect=400)
    await api.call("GET", "/jobs/ds1/since/0?after=x", drv, expect=400)
