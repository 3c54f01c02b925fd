"""Protocol conformance checks a black-box tester would make, through the real HTTP server, on
every backend: each pins a reading of docs/protocol.md that the rest of the suite does not state
directly."""

from __future__ import annotations

import orjson

from tests.web.conftest import Api


# idempotency: "same request" is the same JSON, where true is not 1 -----------------------------
async def test_retry_with_true_instead_of_1_is_a_different_request(api: Api) -> None:
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": {"x": 1}}, expect=201)
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": {"x": True}}, expect=409)
    await api.call("POST", "/ds1/job/", tok, {"job": "j2", "request": [False]}, expect=201)
    await api.call("POST", "/ds1/job/", tok, {"job": "j2", "request": [0]}, expect=409)
    # the same number written as an integer or a float is the same JSON: a retry, 200
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": {"x": 1.0}}, expect=200)
    page = await api.call("GET", "/jobs/ds1/since/0", api.token("driver"), expect=200)
    assert [e["job"] for e in page] == ["j1", "j2"]


async def test_update_from_0_to_false_is_a_change(api: Api) -> None:
    await api.call("POST", "/ds1/job/", api.token(), {"job": "j1", "request": 1}, expect=201)
    driver = api.token("driver")
    path = "/jobs/ds1/job/j1/"
    first = await api.call("POST", path, driver, {"status": "accepted", "response": 0}, expect=200)
    rec = await api.call(
        "POST", path, driver, {"status": "accepted", "response": False}, expect=200
    )
    assert rec["response"] is False and rec["version"] == first["version"] + 1
    await api.call("POST", path, driver, {"status": "complete", "response": True}, expect=200)
    await api.call("POST", path, driver, {"status": "complete", "response": True}, expect=200)
    await api.call("POST", path, driver, {"status": "complete", "response": 1}, expect=409)


# transport --------------------------------------------------------------------------------------
async def test_json_content_type_with_parameters_is_accepted(api: Api) -> None:
    tok = api.token()
    for n, ctype in enumerate(
        ["application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON"]
    ):
        body = orjson.dumps({"job": f"j{n}", "request": 1})
        headers = {"Content-Type": ctype}
        await api.call("POST", "/ds1/job/", tok, data=body, headers=headers, expect=201)


async def test_a_body_that_is_not_json_is_415(api: Api) -> None:
    tok = api.token()
    body = orjson.dumps({"job": "j1", "request": 1})
    for headers in ({"Content-Type": "text/plain"}, {}):
        err = await api.call("POST", "/ds1/job/", tok, data=body, headers=headers, expect=415)
        assert err["code"] == "unsupported_media_type"


async def test_every_path_with_and_without_trailing_slash(api: Api) -> None:
    client, driver, admin = api.token(), api.token("driver"), api.token("admin")
    await api.call("PUT", "/jobs/ds2/", driver, {"description": "d"}, expect=200)
    await api.call("POST", "/ds1/job", client, {"job": "a", "request": 1}, expect=201)
    await api.call("POST", "/ds1/job/", client, {"job": "b", "request": 1}, expect=201)
    for path, token in [
        ("/healthz", None),
        ("/metrics", admin),
        ("/cat", client),
        ("/ds1/job", client),
        ("/ds1/job/a", client),
        ("/jobs/ds1/latest", driver),
        ("/jobs/ds1/since/0", driver),
        ("/jobs/ds1/job/a", driver),
    ]:
        for p in (path, path + "/"):
            await api.call("GET", p, token, expect=200)
    await api.call("POST", "/ds1/job/a/cancel", client, expect=200)
    await api.call("POST", "/ds1/job/b/cancel/", client, expect=200)
    await api.call("DELETE", "/ds1/job/a", client, expect=200)
    await api.call("DELETE", "/ds1/job/b/", client, expect=200)
    await api.call("POST", "/jobs/ds1/job/a", driver, {"status": "cancelled"}, expect=200)
    await api.call("POST", "/jobs/ds1/job/b/", driver, {"status": "cancelled"}, expect=200)


# client API -------------------------------------------------------------------------------------
async def test_another_clients_job_is_404_on_unknown_datasource_403_on_known(api: Api) -> None:
    await api.call("POST", "/ds1/job/", api.token(), {"job": "j1", "request": 1}, expect=201)
    other = api.token(client="app2")
    for method, suffix in [("GET", ""), ("POST", "/cancel"), ("DELETE", "")]:
        err = await api.call(method, f"/ds1/job/j1{suffix}", other, expect=403)
        assert err["code"] == "forbidden"
        err = await api.call(method, f"/dsX/job/j1{suffix}", other, expect=404)
        assert err["code"] == "not_found"
        await api.call(method, f"/ds1/job/nope{suffix}", other, expect=404)


async def test_cancel_returns_record_at_once_and_appends_one_entry(api: Api) -> None:
    tok, driver = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    rec = await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200, schema="status_record")
    assert rec["status"] == "submitted" and rec["cancel_requested"] is True
    again = await api.call("DELETE", "/ds1/job/j1/", tok, expect=200, schema="status_record")
    assert again == rec
    entries = await api.call("GET", "/jobs/ds1/since/0", driver, expect=200)
    assert [(e["type"], e["data"]) for e in entries] == [
        ("request", {"job": "j1", "client": "app1", "request": 1}),
        ("cancel", {"job": "j1", "client": "app1"}),
    ]
    done = await api.call("POST", "/jobs/ds1/job/j1", driver, {"status": "failed"}, expect=200)
    assert await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200) == done
    assert len(await api.call("GET", "/jobs/ds1/since/0", driver, expect=200)) == 2


async def test_wait_bounds(api: Api) -> None:
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    for bad in ("0", "-1", "60.5", "61", "nan", "inf", "x", ""):
        await api.call("GET", f"/ds1/job/j1?wait={bad}", tok, expect=400)
        await api.call(
            "POST", f"/ds1/job/?wait={bad}", tok, {"job": "j1", "request": 1}, expect=400
        )
    await api.call("GET", "/ds1/job/j1?wait=0.01", tok, expect=202)
    await api.call(
        "POST", "/jobs/ds1/job/j1", api.token("driver"), {"status": "complete"}, expect=200
    )
    # terminal: answered at once with 200, whatever the wait (60 is the largest allowed)
    await api.call("GET", "/ds1/job/j1?wait=60", tok, expect=200)
    await api.call("POST", "/ds1/job/?wait=60", tok, {"job": "j1", "request": 1}, expect=200)


async def test_list_limit_bounds(api: Api) -> None:
    tok = api.token()
    for n in range(3):
        await api.call("POST", "/ds1/job/", tok, {"job": f"j{n}", "request": n}, expect=201)
    for ok in ("1", "1000"):
        await api.call("GET", f"/ds1/job/?limit={ok}", tok, expect=200, schema="job_list")
    for bad in ("0", "1001", "x"):
        await api.call("GET", f"/ds1/job/?limit={bad}", tok, expect=400)
    page = await api.call("GET", "/ds1/job/", tok, expect=200, schema="job_list")
    assert [j["job"] for j in page["jobs"]] == ["j2", "j1", "j0"] and page["next"] is None


# driver API -------------------------------------------------------------------------------------
async def test_since_is_inclusive_and_link_pages_continue_exactly(api: Api) -> None:
    tok, driver = api.token(), api.token("driver")
    for n in range(5):
        await api.call("POST", "/ds1/job/", tok, {"job": f"j{n}", "request": n}, expect=201)
    entries = await api.call("GET", "/jobs/ds1/since/0", driver, expect=200)
    t = entries[2]["timestamp"]
    later = await api.call("GET", f"/jobs/ds1/since/{t}", driver, expect=200)
    assert [e["seq"] for e in later] == [e["seq"] for e in entries if e["timestamp"] >= t]
    url: str | None = "/jobs/ds1/since/0?limit=2"
    seqs: list[int] = []
    while url is not None:
        resp = await api.client.get(url, headers=api.auth(driver))
        assert resp.status == 200
        seqs += [e["seq"] for e in await resp.json()]
        link = resp.headers.get("Link")
        if link is None:
            url = None
        else:
            target, rel = link.split(";", 1)
            assert rel.strip() == 'rel="next"'
            url = target.strip().removeprefix("<").removesuffix(">")
    assert seqs == [e["seq"] for e in entries]
    for bad in ("0", "10001"):
        await api.call("GET", f"/jobs/ds1/since/0?limit={bad}", driver, expect=400)
    await api.call("GET", "/jobs/ds1/since/0?limit=10000", driver, expect=200)


# operations and auth ----------------------------------------------------------------------------
async def test_healthz_open_metrics_admin_only_query_token_only_on_websockets(api: Api) -> None:
    assert await api.call("GET", "/healthz", None, expect=200, schema="health") == {"status": "ok"}
    await api.call("GET", "/metrics", None, expect=401)
    await api.call("GET", "/metrics", api.token(), expect=403)
    await api.call("GET", "/metrics", api.token("driver"), expect=403)
    await api.call("GET", "/metrics", api.token("admin"), expect=200)
    tok = api.token()
    await api.call("GET", f"/ds1/job/?token={tok}", None, expect=401)
    await api.call("GET", "/ds1/job/", None, headers={"X-Api-Key": tok}, expect=200)


async def test_catalogue_lists_what_the_token_may_use(api: Api) -> None:
    await api.declare("ds2")
    everything = await api.call("GET", "/cat", api.token(), expect=200, schema="catalogue")
    assert [d["datasource_id"] for d in everything["datasources"]] == ["ds1", "ds2"]
    narrowed = api.token("driver", dsids=["ds2", "ds9"])
    cat = await api.call("GET", "/cat", narrowed, expect=200, schema="catalogue")
    assert [d["datasource_id"] for d in cat["datasources"]] == ["ds2"]
