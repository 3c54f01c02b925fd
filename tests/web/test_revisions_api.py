"""Long-running jobs through the real server, on every backend: PUT (a new revision), stop,
start, revisions, driver updates naming a revision, and the websockets for a rollback. Every
reply and frame is checked against the schemas; every refusal carries a sentence."""

from __future__ import annotations

from typing import Any

from jobqueue_store.config import Limits
from tests.web.conftest import Api, AppFactory
from tests.web.test_limits import _api_with
from tests.web.test_ws import connect, receive, receive_n


async def _pipeline(api: Api, job: str = "p1", request: Any = None) -> str:
    """Submit ``job`` as app1 and have the driver report revision 0 running; the client token."""
    tok = api.token()
    await api.call(
        "POST",
        "/ds1/job/",
        tok,
        {"job": job, "request": request if request is not None else {"v": 0}},
        expect=201,
        schema="status_record",
    )
    await _report(api, job, "running", 0)
    return tok


async def _report(api: Api, job: str, status: str, revision: int | None, **kw: Any) -> Any:
    body: dict[str, Any] = {"status": status, **kw}
    if revision is not None:
        body["revision"] = revision
    return await api.call(
        "POST",
        f"/jobs/ds1/job/{job}/",
        api.token("driver"),
        body,
        expect=200,
        schema="status_record",
    )


async def test_put_makes_a_revision_and_a_repeat_is_200(api: Api) -> None:
    tok = await _pipeline(api)
    first = await api.call("GET", "/ds1/job/p1", tok, expect=200, schema="status_record")
    assert first["revision"] == 0 and first["desired_state"] == "running"
    body = await api.call(
        "PUT", "/ds1/job/p1/", tok, {"request": {"v": 1}}, expect=202, schema="status_record"
    )
    assert body["revision"] == 1 and body["status"] == "submitted"
    assert body["request"] == {"v": 1}
    again = await api.call(
        "PUT", "/ds1/job/p1", tok, {"request": {"v": 1}}, expect=200, schema="status_record"
    )
    assert again == body
    latest = await api.call(
        "GET", "/jobs/ds1/latest", api.token("driver"), expect=200, schema="stream_entry"
    )
    assert latest["type"] == "update"
    assert latest["data"] == {
        "job": "p1",
        "client": "app1",
        "request": {"v": 1},
        "revision": 1,
        "previous_revision": 0,
    }


async def test_bad_updates_get_a_sentence(api: Api) -> None:
    tok = await _pipeline(api)
    other = api.token(client="app2")
    err = await api.call("PUT", "/ds1/job/p1", other, {"request": 2}, expect=403)
    assert "another client" in err["error"]
    err = await api.call("PUT", "/ds1/job/nope", tok, {"request": 2}, expect=404)
    assert "nope" in err["error"]
    err = await api.call("PUT", "/ds1/job/p1", tok, {"request": 2, "extra": 1}, expect=400)
    assert "'extra'" in err["error"]
    err = await api.call("PUT", "/ds1/job/p1", tok, {"rollback": True}, expect=400)
    assert '"request"' in err["error"]
    err = await api.call("PUT", "/ds1/job/p1", tok, {"request": 2, "rollback": "yes"}, expect=400)
    assert "rollback" in err["error"]
    err = await api.call("PUT", "/ds1/job/p1", tok, [1], expect=400)
    assert "JSON object" in err["error"]
    err = await api.call("PUT", "/ds1/job/bad id!", tok, {"request": 2}, expect=400)
    err = await api.call("PUT", "/ds1/job/p1", api.token("driver"), {"request": 2}, expect=403)
    # a driver's update naming a revision the job never had
    err = await api.call(
        "POST",
        "/jobs/ds1/job/p1/",
        api.token("driver"),
        {"status": "running", "revision": 7},
        expect=409,
    )
    assert "no revision 7" in err["error"]
    for bad in (-1, "1", 1.5, True):
        err = await api.call(
            "POST",
            "/jobs/ds1/job/p1/",
            api.token("driver"),
            {"status": "running", "revision": bad},
            expect=400,
        )
        assert '"revision"' in err["error"]
    err = await api.call("POST", "/ds1/job/p1/stop", other, expect=403)
    err = await api.call("POST", "/ds1/job/nope/stop", tok, expect=404)
    err = await api.call("GET", "/ds1/job/p1/revisions", other, expect=403)
    err = await api.call("GET", "/ds1/job/nope/revisions", tok, expect=404)


async def test_stop_and_start(api: Api) -> None:
    tok = await _pipeline(api)
    body = await api.call("POST", "/ds1/job/p1/stop", tok, expect=200, schema="status_record")
    assert body["desired_state"] == "stopped" and body["status"] == "running"
    latest = await api.call(
        "GET", "/jobs/ds1/latest", api.token("driver"), expect=200, schema="stream_entry"
    )
    assert latest["type"] == "stop" and latest["data"] == {
        "job": "p1",
        "client": "app1",
        "revision": 0,
    }
    await _report(api, "p1", "stopped", 0)
    body = await api.call("POST", "/ds1/job/p1/start/", tok, expect=200, schema="status_record")
    assert body["desired_state"] == "running" and body["status"] == "stopped"
    await _report(api, "p1", "running", 0)
    listed = await api.call("GET", "/ds1/job/?status=running", tok, expect=200, schema="job_list")
    assert [j["job"] for j in listed["jobs"]] == ["p1"]


async def test_stop_of_a_finished_job_is_409(api: Api) -> None:
    tok = await _pipeline(api)
    await _report(api, "p1", "complete", 0)
    err = await api.call("POST", "/ds1/job/p1/stop", tok, expect=409)
    assert err["error"] == (
        "Job 'p1' is complete and cannot be stopped: update it with a new request to reopen it."
    )
    err = await api.call("POST", "/ds1/job/p1/start", tok, expect=409)
    assert "cannot be started" in err["error"]
    body = await api.call(
        "PUT", "/ds1/job/p1", tok, {"request": {"v": 1}}, expect=202, schema="status_record"
    )
    assert body["status"] == "submitted" and body["revision"] == 1


async def test_rollback_over_the_wire_and_the_websockets(api: Api) -> None:
    """The exact rollback sequence, as the client's notifications and the driver's stream show
    it: in order, with no gap."""
    tok = api.token()
    client_ws = await connect(api, "/sub/ds1/job", tok)
    driver_ws = await connect(api, "/sub/ds1/jobs", api.token("driver"))
    await _pipeline(api, request={"v": "good"})
    await api.call(
        "PUT", "/ds1/job/p1", tok, {"request": {"v": "bad"}, "rollback": True}, expect=202
    )
    final = await _report(api, "p1", "failed", 1, error="bad config")
    assert final["revision"] == 2 and final["status"] == "submitted"
    assert final["rollback_of"] == 1 and final["request"] == {"v": "good"}
    await _report(api, "p1", "running", 2)
    notes = await receive_n(client_ws, 6, "notification")
    got = [(n["data"]["revision"], n["data"]["status"]) for n in notes]
    assert got == [
        (0, "submitted"),
        (0, "running"),
        (1, "submitted"),
        (1, "failed"),
        (2, "submitted"),
        (2, "running"),
    ]
    seqs = [n["seq"] for n in notes]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    assert notes[3]["data"]["error"] == "bad config"
    assert notes[4]["data"]["rollback_of"] == 1
    entries = [await receive(driver_ws, "stream_entry") for _ in range(3)]
    assert [(e["type"], e["seq"]) for e in entries] == [
        ("request", seqs[0]),
        ("update", seqs[2]),
        ("update", seqs[4]),
    ]
    assert entries[2]["data"]["rollback_of"] == 1
    # a replay after the first notification gives the same frames
    replay_ws = await connect(api, f"/sub/ds1/job?after={seqs[0]}", tok)
    replayed = await receive_n(replay_ws, 5, "notification")
    assert replayed == notes[1:]
    revs = await api.call("GET", "/ds1/job/p1/revisions", tok, expect=200, schema="revisions")
    assert [
        (r["revision"], r["status"], r["request"], r["rollback_of"]) for r in revs["revisions"]
    ] == [
        (0, "running", {"v": "good"}, None),
        (1, "failed", {"v": "bad"}, None),
        (2, "running", {"v": "good"}, 1),
    ]
    for ws in (client_ws, driver_ws, replay_ws):
        await ws.close()


async def test_rollback_with_nothing_that_ran(api: Api) -> None:
    tok = api.token()
    await api.call("POST", "/ds1/job/", tok, {"job": "p1", "request": 1}, expect=201)
    await api.call("PUT", "/ds1/job/p1", tok, {"request": 2, "rollback": True}, expect=202)
    body = await _report(api, "p1", "failed", 1, error="boom")
    assert body["status"] == "failed" and body["revision"] == 1
    assert "no earlier revision of job 'p1' ever reached running" in body["error"]
    revs = await api.call("GET", "/ds1/job/p1/revisions", tok, expect=200, schema="revisions")
    assert [r["status"] for r in revs["revisions"]] == ["submitted", "failed"]


async def test_an_older_revision_report_leaves_the_current_status(api: Api) -> None:
    tok = await _pipeline(api)
    await api.call("PUT", "/ds1/job/p1", tok, {"request": {"v": 1}}, expect=202)
    body = await _report(api, "p1", "stopped", 0)
    assert body["status"] == "submitted" and body["revision"] == 1
    revs = await api.call("GET", "/ds1/job/p1/revisions", tok, expect=200, schema="revisions")
    assert [r["status"] for r in revs["revisions"]] == ["stopped", "submitted"]


async def test_openapi_lists_the_operations(api: Api) -> None:
    doc = await api.call("GET", "/openapi.json", api.token(), expect=200)
    assert doc["paths"]["/{dsid}/job/{job}/"]["put"]["operationId"] == "updateJob"
    for path in ("/{dsid}/job/{job}/stop", "/{dsid}/job/{job}/start"):
        assert "post" in doc["paths"][path]
    assert "get" in doc["paths"]["/{dsid}/job/{job}/revisions"]


async def test_reopening_counts_against_the_unfinished_jobs_quota(make_api: AppFactory) -> None:
    api = await _api_with(make_api, Limits(max_unfinished_jobs=1))
    tok, driver = api.token(), api.token("driver")
    await api.call("POST", "/ds1/job/", tok, {"job": "a", "request": 1}, expect=201)
    await api.call("POST", "/jobs/ds1/job/a/", driver, {"status": "complete"}, expect=200)
    await api.call("POST", "/ds1/job/", tok, {"job": "b", "request": 1}, expect=201)
    err = await api.call("PUT", "/ds1/job/a", tok, {"request": 2}, expect=429)
    assert "unfinished" in err["error"]
    # updating a live job adds no unfinished job
    await api.call("PUT", "/ds1/job/b", tok, {"request": 2}, expect=202)
    await api.call("POST", "/jobs/ds1/job/b/", driver, {"status": "failed"}, expect=200)
    body = await api.call("PUT", "/ds1/job/a", tok, {"request": 2}, expect=202)
    assert body["status"] == "submitted" and body["revision"] == 1
