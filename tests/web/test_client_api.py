"""The client API (docs/protocol.md, "Client API") through the real HTTP server, on every
backend."""

from __future__ import annotations

import asyncio
import io

from tests.web.conftest import Api


async def test_submit_creates_job_and_appends_request(api: Api) -> None:
    tok = api.token()
    rec = await api.call(
        "POST",
        "/ds1/job/",
        tok,
        {"job": "j1", "request": {"x": 1}},
        expect=201,
        schema="status_record",
    )
    assert rec["status"] == "submitted" and rec["client"] == "app1" and rec["version"] == 1
    assert rec["cancel_requested"] is False and rec["datasource_id"] == "ds1"
    assert rec["submitted_at"] == rec["updated_at"] > 0
    entry = await api.call(
        "GET", "/jobs/ds1/latest", api.token("driver"), expect=200, schema="stream_entry"
    )
    assert entry["type"] == "request" and entry["job"] == "j1" and entry["client"] == "app1"
    assert entry["data"] == {"job": "j1", "client": "app1", "request": {"x": 1}}


async def test_submit_without_trailing_slash_and_with_matching_client(api: Api) -> None:
    tok = api.token()
    await api.call(
        "POST",
        "/ds1/job",
        tok,
        {"job": "j1", "request": 1, "client": "app1"},
        expect=201,
        schema="status_record",
    )


async def test_idempotent_retry_and_conflicts(api: Api) -> None:
    tok = api.token()
    body = {"job": "j1", "request": {"a": 1, "b": [1, 2]}}
    first = await api.call("POST", "/ds1/job/", tok, body, expect=201)
    again = await api.call(
        "POST",
        "/ds1/job/",
        tok,
        {"job": "j1", "request": {"b": [1, 2], "a": 1}},
        expect=200,
        schema="status_record",
    )
    assert again == first
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": {"a": 2}}, expect=409)
    other = api.token(client="app2")
    await api.call("POST", "/ds1/job/", other, body, expect=409)
    page = await api.call("GET", "/jobs/ds1/since/0", api.token("driver"), expect=200)
    assert [e["job"] for e in page] == ["j1"], "a retry must append nothing"


async def test_submit_errors(api: Api) -> None:
    tok = api.token()
    await api.call("POST", "/nope/job/", tok, {"job": "j1", "request": 1}, expect=404)
    await api.call(
        "POST", "/ds1/job/", tok, {"job": "j1", "request": 1, "client": "other"}, expect=403
    )
    await api.call("POST", "/ds1/job/", tok, {"job": "bad id!", "request": 1}, expect=400)
    await api.call("POST", "/ds1/job/", tok, {"job": "x" * 129, "request": 1}, expect=400)
    await api.call("POST", "/ds1/job/", tok, {"job": "", "request": 1}, expect=400)
    await api.call("POST", "/ds1/job/", tok, {"job": 5, "request": 1}, expect=400)
    await api.call("POST", "/ds1/job/", tok, {"job": "j1"}, expect=400)
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1, "extra": 1}, expect=400)
    await api.call("POST", "/ds1/job/", tok, [1, 2], expect=400)
    await api.call(
        "POST",
        "/ds1/job/",
        tok,
        expect=400,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    await api.call(
        "POST",
        "/ds1/job/",
        tok,
        expect=415,
        data=b"job=j1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await api.call(
        "POST",
        "/ds1/job/",
        tok,
        expect=413,
        data=io.BytesIO(b"[" + b"1," * 600_000 + b"1]"),
        headers={"Content-Type": "application/json"},
    )


async def test_request_schema_validation(api: Api) -> None:
    await api.declare(
        "typed",
        request_schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    )
    tok = api.token()
    await api.call("POST", "/typed/job/", tok, {"job": "ok", "request": {"n": 3}}, expect=201)
    err = await api.call(
        "POST", "/typed/job/", tok, {"job": "bad", "request": {"n": "x"}}, expect=400
    )
    assert "n" in err["error"] and "request_schema" in err["error"]
    await api.call(
        "PUT",
        "/jobs/typed",
        api.token("driver"),
        {"request_schema": {"type": "nonsense"}},
        expect=400,
    )


async def test_status_and_visibility(api: Api) -> None:
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    rec = await api.call("GET", "/ds1/job/j1/", tok, expect=200, schema="status_record")
    assert rec["job"] == "j1"
    await api.call("GET", "/ds1/job/j1", tok, expect=200)
    await api.call("GET", "/ds1/job/j1/", api.token(client="app2"), expect=403)
    await api.call("GET", "/ds1/job/missing/", tok, expect=404)
    await api.call("GET", "/nope/job/j1/", tok, expect=404)
    admin = await api.call("GET", "/ds1/job/j1/", api.token("admin"), expect=200)
    assert admin["client"] == "app1"


async def test_wait_async_rpc(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    rec = await api.call(
        "POST",
        "/ds1/job/?wait=0.2",
        tok,
        {"job": "slow", "request": 1},
        expect=202,
        schema="status_record",
    )
    assert rec["status"] == "submitted"

    async def complete_soon() -> None:
        await asyncio.sleep(0.2)
        await api.call(
            "POST", "/jobs/ds1/job/fast/", drv, {"status": "complete", "response": 7}, expect=200
        )

    async def submit_and_wait() -> dict[str, object]:
        body = {"job": "fast", "request": 1}
        return await api.call("POST", "/ds1/job/?wait=10", tok, body, expect=200)  # type: ignore[no-any-return]

    task = asyncio.create_task(submit_and_wait())
    await asyncio.sleep(0.05)
    await complete_soon()
    done = await task
    assert done["status"] == "complete" and done["response"] == 7
    polled = await api.call("GET", "/ds1/job/slow/?wait=0.1", tok, expect=202)
    assert polled["status"] == "submitted"
    finished = await api.call("GET", "/ds1/job/fast/?wait=5", tok, expect=200)
    assert finished["status"] == "complete"
    for bad in ("0", "-1", "61", "abc", "nan", "inf"):
        await api.call("GET", f"/ds1/job/slow/?wait={bad}", tok, expect=400)


async def test_long_poll_wakes_on_terminal_update(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "j", "request": 1}, expect=201)
    poll = asyncio.create_task(api.call("GET", "/ds1/job/j/?wait=10", tok, expect=200))
    await asyncio.sleep(0.1)
    await api.call("POST", "/jobs/ds1/job/j", drv, {"status": "accepted"}, expect=200)
    await asyncio.sleep(0.05)
    assert not poll.done(), "a non-terminal change must not end the wait"
    await api.call(
        "POST", "/jobs/ds1/job/j", drv, {"status": "failed", "error": "boom"}, expect=200
    )
    rec = await poll
    assert rec["status"] == "failed" and rec["error"] == "boom"


async def test_list_own_jobs_newest_first_with_paging(api: Api) -> None:
    tok, other = api.token(), api.token(client="app2")
    for i in range(25):
        await api.call("POST", "/ds1/job/", tok, {"job": f"j{i:02d}", "request": i}, expect=201)
    await api.call("POST", "/ds1/job/", other, {"job": "theirs", "request": 0}, expect=201)
    await api.call(
        "POST", "/jobs/ds1/job/j03", api.token("driver"), {"status": "complete"}, expect=200
    )
    seen: list[str] = []
    cursor = None
    while True:
        q = "?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = await api.call("GET", f"/ds1/job/{q}", tok, expect=200, schema="job_list")
        seen += [j["job"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"j{i:02d}" for i in reversed(range(25))]
    done = await api.call("GET", "/ds1/job?status=complete", tok, expect=200, schema="job_list")
    assert [j["job"] for j in done["jobs"]] == ["j03"] and done["next"] is None
    await api.call("GET", "/ds1/job?status=bogus", tok, expect=400)
    await api.call("GET", "/ds1/job?limit=0", tok, expect=400)
    await api.call("GET", "/ds1/job?limit=1001", tok, expect=400)
    await api.call("GET", "/ds1/job?cursor=%%%garbage", tok, expect=400)
    everyone = await api.call("GET", "/ds1/job?limit=1000", api.token("admin"), expect=200)
    assert len(everyone["jobs"]) == 26


async def test_cancel_appends_exactly_one_entry(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    rec = await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200, schema="status_record")
    assert rec["cancel_requested"] is True and rec["version"] == 2
    again = await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200)
    assert again == rec
    await api.call("DELETE", "/ds1/job/j1/", tok, expect=200)
    await api.call("DELETE", "/ds1/job/j1", tok, expect=200)
    entries = await api.call("GET", "/jobs/ds1/since/0", drv, expect=200)
    assert [e["type"] for e in entries] == ["request", "cancel"]
    assert entries[1]["data"] == {"job": "j1", "client": "app1"}
    done = await api.call("POST", "/jobs/ds1/job/j1", drv, {"status": "cancelled"}, expect=200)
    assert done["status"] == "cancelled"
    after = await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200)
    assert after == done, "cancelling a terminal job changes nothing"
    await api.call("POST", "/ds1/job/nope/cancel", tok, expect=404)
    await api.call("POST", "/ds1/job/j1/cancel", api.token(client="app2"), expect=403)
    await api.call("DELETE", "/ds1/job/j1", api.token(client="app2"), expect=403)
    entries = await api.call("GET", "/jobs/ds1/since/0", drv, expect=200)
    assert len(entries) == 2


async def test_cancel_of_terminal_job_appends_nothing(api: Api) -> None:
    tok, drv = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    await api.call("POST", "/jobs/ds1/job/j1", drv, {"status": "complete"}, expect=200)
    rec = await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200)
    assert rec["status"] == "complete" and rec["cancel_requested"] is False
    entries = await api.call("GET", "/jobs/ds1/since/0", drv, expect=200)
    assert [e["type"] for e in entries] == ["request"]
