"""Many workers on one datasource through the real HTTP server, on every backend: declaring a
lease datasource, claims (and their long-poll), updates and heartbeats under a lease, the stream
worker slot, deadlines, the workers in ``GET /cat``, and a sentence for every bad value.

Time-driven behaviour uses a :class:`~jobqueue_store.timers.ManualClock` put on the app's store;
the test moves it and fires the due items itself instead of sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobqueue_store.storage.base import Store
from jobqueue_store.timers import ManualClock
from jobqueue_store.web.keys import STORE
from tests.web.conftest import Api, AppFactory

LEASED: dict[str, Any] = {
    "description": "leased",
    "dispatch": "lease",
    "lease_seconds": 30,
    "max_attempts": 2,
}


def store_of(api: Api) -> Store:
    """The app's store."""
    app = api.client.app
    assert app is not None
    store: Store = app[STORE]
    return store


def manual_clock(api: Api) -> ManualClock:
    """Put a manual clock on the app's store and return it."""
    clock = ManualClock()
    store_of(api).clock = clock
    return clock


@pytest.fixture
async def lapi(make_api: AppFactory) -> Api:
    """A store with a stream datasource ``ds1`` and a lease datasource ``lq``."""
    api = await make_api()
    await api.declare("ds1")
    await api.declare("lq", **LEASED)
    return api


async def submit(api: Api, job: str, dsid: str = "lq", **extra: Any) -> dict[str, Any]:
    """Submit ``job`` as client app1."""
    body = {"job": job, "request": {"n": job}, **extra}
    rec: dict[str, Any] = await api.call(
        "POST", f"/{dsid}/job/", api.token(), body, expect=201, schema="status_record"
    )
    return rec


async def claim(api: Api, worker: str = "w1", **body: Any) -> list[dict[str, Any]]:
    """Claim on ``lq``; return the jobs."""
    reply = await api.call(
        "POST",
        "/jobs/lq/claim",
        api.token("driver"),
        {"worker": worker, **body},
        expect=200,
        schema="claim_reply",
    )
    jobs: list[dict[str, Any]] = reply["jobs"]
    return jobs


async def bad(api: Api, method: str, path: str, body: Any, status: int, *words: str) -> str:
    """A refused request: ``status``, a sentence holding every one of ``words``."""
    token = api.token() if path.startswith("/lq/") or path.startswith("/ds1/") else None
    reply = await api.call(method, path, token or api.token("driver"), body, expect=status)
    for word in words:
        assert word in reply["error"], reply
    return str(reply["code"])


# declaring --------------------------------------------------------------------------------------
async def test_declare_a_lease_datasource(lapi: Api) -> None:
    drv = lapi.token("driver")
    ds = await lapi.call(
        "PUT",
        "/jobs/lq2",
        drv,
        {"dispatch": "lease", "job_timeout": 60, "cancel_grace": 3},
        expect=200,
        schema="datasource",
    )
    assert ds == {
        "datasource_id": "lq2",
        "description": "",
        "dispatch": "lease",
        "lease_seconds": 30,
        "max_attempts": 5,
        "job_timeout": 60,
        "cancel_grace": 3,
    }
    stream = await lapi.call("PUT", "/jobs/s2", drv, {"lease_seconds": 90}, expect=200)
    assert stream == {"datasource_id": "s2", "description": "", "lease_seconds": 90}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"dispatch": "queue"}, ['"dispatch"', "lease"]),
        ({"lease_seconds": 0}, ['"lease_seconds"', "1 to 3600"]),
        ({"lease_seconds": 3601}, ['"lease_seconds"', "1 to 3600"]),
        ({"lease_seconds": 1.5}, ['"lease_seconds"', "whole number"]),
        ({"lease_seconds": True}, ['"lease_seconds"']),
        ({"lease_seconds": "30"}, ['"lease_seconds"']),
        ({"dispatch": "lease", "max_attempts": 0}, ['"max_attempts"', "1 to 100"]),
        ({"dispatch": "lease", "max_attempts": 101}, ['"max_attempts"', "1 to 100"]),
        ({"max_attempts": 3}, ['"max_attempts"', "lease datasources"]),
        ({"job_timeout": 0}, ['"job_timeout"', "1 to 86400"]),
        ({"job_timeout": 86401}, ['"job_timeout"']),
        ({"cancel_grace": -1}, ['"cancel_grace"', "0 to 86400"]),
    ],
)
async def test_declare_bad_settings(lapi: Api, body: dict[str, Any], words: list[str]) -> None:
    assert await bad(lapi, "PUT", "/jobs/x", body, 400, *words) == "bad_request"


# claims -----------------------------------------------------------------------------------------
async def test_claim_reply_and_the_record_of_a_held_job(lapi: Api) -> None:
    for i in range(3):
        await submit(lapi, f"j{i}")
    jobs = await claim(lapi, "host-1:42", max=2)
    assert [j["job"] for j in jobs] == ["j0", "j1"]
    for job in jobs:
        assert job["status"] == "accepted" and job["attempts"] == 1 and job["version"] == 2
        lease = job["lease"]
        assert set(lease) == {"id", "worker", "attempt", "expires_at"}
        assert (lease["worker"], lease["attempt"]) == ("host-1:42", 1)
        assert lease["expires_at"] >= job["updated_at"] + 30_000 - 5
    got = await lapi.call(
        "GET", "/jobs/lq/job/j0/", lapi.token("driver"), expect=200, schema="status_record"
    )
    assert got["lease"] == jobs[0]["lease"]
    mine = await lapi.call("GET", "/lq/job/j0/", lapi.token(), expect=200, schema="status_record")
    assert mine["status"] == "accepted"
    assert [j["job"] for j in await claim(lapi, max=100)] == ["j2"]
    assert await claim(lapi) == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ['"worker"']),
        ({"worker": ""}, ['"worker"', "1 to 200"]),
        ({"worker": "x" * 201}, ['"worker"']),
        ({"worker": 5}, ['"worker"']),
        ({"worker": "w", "max": 0}, ['"max"', "1 to 100"]),
        ({"worker": "w", "max": 101}, ['"max"', "1 to 100"]),
        ({"worker": "w", "max": "2"}, ['"max"']),
        ({"worker": "w", "wait": 61}, ['"wait"', "0 to 60"]),
        ({"worker": "w", "wait": -1}, ['"wait"']),
        ({"worker": "w", "lease": "x"}, ["Unknown field", "'lease'"]),
        ([], ["JSON object"]),
    ],
)
async def test_claim_bad_values(lapi: Api, body: Any, words: list[str]) -> None:
    assert await bad(lapi, "POST", "/jobs/lq/claim", body, 400, *words) == "bad_request"


async def test_claim_refusals(lapi: Api) -> None:
    code = await bad(
        lapi, "POST", "/jobs/ds1/claim", {"worker": "w"}, 409, "stream datasource", "dispatch"
    )
    assert code == "conflict"
    await bad(lapi, "POST", "/jobs/nope/claim", {"worker": "w"}, 404, "not declared")
    await lapi.call("POST", "/jobs/lq/claim", lapi.token(), {"worker": "w"}, expect=403)
    narrow = lapi.token("driver", dsids=["ds1"])
    await lapi.call("POST", "/jobs/lq/claim", narrow, {"worker": "w"}, expect=403)


async def test_a_waiting_claim_is_woken_by_a_submit(lapi: Api) -> None:
    waiting = asyncio.create_task(claim(lapi, "sleepy", wait=30))
    await asyncio.sleep(0.3)  # let the claim start waiting (a bound, not a timing assertion)
    assert not waiting.done()
    await submit(lapi, "wake")
    jobs = await asyncio.wait_for(waiting, 10)  # far below the 30 s wait: woken, not timed out
    assert [j["job"] for j in jobs] == ["wake"]


async def test_a_waiting_claim_ends_empty(make_api: AppFactory) -> None:
    from jobqueue_store.config import Limits

    api = await make_api(limits=Limits(max_wait=0.2))
    await api.declare("lq", **LEASED)
    assert await claim(api, wait=60) == [], "the store's max wait caps a claim's wait"


# updates and heartbeats under a lease -----------------------------------------------------------
async def test_updates_need_the_lease(lapi: Api) -> None:
    await submit(lapi, "j")
    (job,) = await claim(lapi)
    lease = job["lease"]["id"]
    path = "/jobs/lq/job/j/"
    code = await bad(lapi, "POST", path, {"status": "complete"}, 409, '"lease"', "lease datasource")
    assert code == "lease_lost"
    code = await bad(
        lapi, "POST", path, {"status": "complete", "lease": "nope"}, 409, "does not hold"
    )
    assert code == "lease_lost"
    await bad(lapi, "POST", path, {"status": "accepted", "lease": 5}, 400, '"lease"')
    await bad(
        lapi, "POST", path, {"status": "accepted", "lease": lease, "retry_in": 1}, 400, "retrying"
    )
    await bad(
        lapi, "POST", path, {"status": "retrying", "lease": lease, "retry_in": -1}, 400, "retry_in"
    )
    drv = lapi.token("driver")
    rec = await lapi.call(
        "POST",
        path,
        drv,
        {"status": "accepted", "progress": 0.5, "lease": lease},
        expect=200,
        schema="status_record",
    )
    assert rec["progress"] == 0.5 and rec["lease"]["id"] == lease
    done = await lapi.call(
        "POST", path, drv, {"status": "complete", "response": 1, "lease": lease}, expect=200
    )
    assert done["status"] == "complete" and "lease" not in done
    again = await lapi.call(
        "POST", path, drv, {"status": "complete", "response": 1, "lease": lease}, expect=200
    )
    assert again == done


async def test_stream_datasource_updates_carry_no_lease(lapi: Api) -> None:
    await submit(lapi, "s", dsid="ds1")
    await bad(lapi, "POST", "/jobs/ds1/job/s/", {"status": "accepted", "lease": "x"}, 400, "stream")


async def test_heartbeat(lapi: Api) -> None:
    await submit(lapi, "j")
    (job,) = await claim(lapi)
    lease = job["lease"]["id"]
    drv = lapi.token("driver")
    rec = await lapi.call(
        "POST",
        "/jobs/lq/job/j/heartbeat",
        drv,
        {"lease": lease},
        expect=200,
        schema="status_record",
    )
    assert rec["version"] == job["version"] and rec["lease"]["id"] == lease
    assert rec["lease"]["expires_at"] >= job["lease"]["expires_at"]
    code = await bad(lapi, "POST", "/jobs/lq/job/j/heartbeat", {"lease": "x"}, 409, "stop working")
    assert code == "lease_lost"
    await bad(lapi, "POST", "/jobs/lq/job/j/heartbeat", {}, 400, '"lease"')
    await bad(lapi, "POST", "/jobs/lq/job/j/heartbeat", {"lease": lease, "x": 1}, 400, "'x'")
    await bad(lapi, "POST", "/jobs/lq/job/nope/heartbeat", {"lease": lease}, 404, "nope")
    await submit(lapi, "s", dsid="ds1")
    await bad(lapi, "POST", "/jobs/ds1/job/s/heartbeat", {"lease": lease}, 409, "stream")


async def test_give_back_and_cancel(lapi: Api) -> None:
    clock = manual_clock(lapi)
    await submit(lapi, "a")
    await submit(lapi, "b")
    drv, tok = lapi.token("driver"), lapi.token()
    a, b = await claim(lapi, max=2)
    back = await lapi.call(
        "POST",
        "/jobs/lq/job/a/",
        drv,
        {"status": "retrying", "error": "busy", "lease": a["lease"]["id"], "retry_in": 3},
        expect=200,
        schema="status_record",
    )
    assert back["retry_at"] == clock.now_ms() + 3000 and "lease" not in back
    # unheld: cancelled at once; held: cancel_requested, seen by the holder
    gone = await lapi.call("POST", "/lq/job/a/cancel", tok, expect=200, schema="status_record")
    assert gone["status"] == "cancelled" and gone["cancel_requested"]
    held = await lapi.call("POST", "/lq/job/b/cancel", tok, expect=200)
    assert held["status"] == "accepted" and held["cancel_requested"]
    seen = await lapi.call(
        "POST", "/jobs/lq/job/b/heartbeat", drv, {"lease": b["lease"]["id"]}, expect=200
    )
    assert seen["cancel_requested"] is True


async def test_expiry_through_the_server(lapi: Api) -> None:
    clock = manual_clock(lapi)
    await submit(lapi, "j")
    (job,) = await claim(lapi, "doomed")
    clock.advance(30_000)
    await store_of(lapi).fire_due()
    rec = await lapi.call("GET", "/lq/job/j/", lapi.token(), expect=200, schema="status_record")
    assert rec["status"] == "retrying" and "doomed" in rec["error"] and "lease" not in rec
    await bad(
        lapi,
        "POST",
        "/jobs/lq/job/j/",
        {"status": "complete", "lease": job["lease"]["id"]},
        409,
        "does not hold",
    )
    clock.advance(1000)
    (again,) = await claim(lapi, "next")
    assert again["attempts"] == 2 and again["lease"]["attempt"] == 2
    clock.advance(30_000)
    await store_of(lapi).fire_due()
    failed = await lapi.call("GET", "/lq/job/j/", lapi.token(), expect=200)
    assert failed["status"] == "failed" and "max_attempts" in failed["error"]


# the stream worker slot -------------------------------------------------------------------------
async def test_worker_slot(lapi: Api) -> None:
    drv = lapi.token("driver")
    slot = await lapi.call(
        "POST", "/jobs/ds1/worker", drv, {"worker": "first"}, expect=200, schema="worker_slot"
    )
    assert slot["resume"] is None and slot["lease"]["worker"] == "first"
    lease = slot["lease"]["id"]
    code = await bad(
        lapi, "POST", "/jobs/ds1/worker", {"worker": "second"}, 409, "'first'", "last seen"
    )
    assert code == "slot_taken"
    renewed = await lapi.call(
        "POST",
        "/jobs/ds1/worker/heartbeat/",
        drv,
        {"lease": lease, "resume": 17},
        expect=200,
        schema="worker_slot",
    )
    assert renewed["resume"] == 17 and renewed["lease"]["id"] == lease
    cat = await lapi.call("GET", "/cat", drv, expect=200, schema="catalogue")
    workers = {d["datasource_id"]: d["workers"] for d in cat["datasources"]}
    (holder,) = workers["ds1"]
    assert holder["worker"] == "first" and holder["resume"] == 17
    assert set(holder) == {"worker", "since", "last_seen", "expires_at", "resume"}
    assert workers["lq"] == []
    code = await bad(lapi, "POST", "/jobs/ds1/worker/heartbeat", {"lease": "x"}, 409, "stop")
    assert code == "lease_lost"
    await bad(lapi, "POST", "/jobs/ds1/worker/heartbeat", {"lease": lease, "resume": -1}, 400, "")
    await bad(lapi, "DELETE", "/jobs/ds1/worker", {}, 400, '"lease"')
    resp = await lapi.client.delete(
        "/jobs/ds1/worker", headers=lapi.auth(drv), json={"lease": lease}
    )
    assert resp.status == 204
    await bad(lapi, "DELETE", "/jobs/ds1/worker", {"lease": lease}, 409, "freed")
    second = await lapi.call("POST", "/jobs/ds1/worker", drv, {"worker": "second"}, expect=200)
    assert second["resume"] == 17, "the next holder resumes where the first stopped"


async def test_worker_slot_lapses(lapi: Api) -> None:
    clock = manual_clock(lapi)
    drv = lapi.token("driver")
    await lapi.call("POST", "/jobs/ds1/worker", drv, {"worker": "first"}, expect=200)
    clock.advance(30_000)
    cat = await lapi.call("GET", "/cat", drv, expect=200)
    assert all(d["workers"] == [] for d in cat["datasources"])
    taken = await lapi.call("POST", "/jobs/ds1/worker", drv, {"worker": "standby"}, expect=200)
    assert taken["lease"]["worker"] == "standby"


async def test_worker_slot_refusals(lapi: Api) -> None:
    assert (
        await bad(
            lapi, "POST", "/jobs/lq/worker", {"worker": "w"}, 409, "lease datasource", "claim"
        )
        == "conflict"
    )
    await bad(lapi, "POST", "/jobs/ds1/worker", {}, 400, '"worker"')
    await bad(lapi, "POST", "/jobs/ds1/worker", {"worker": "w", "x": 1}, 400, "'x'")
    await bad(lapi, "POST", "/jobs/nope/worker", {"worker": "w"}, 404, "not declared")
    await lapi.call("POST", "/jobs/ds1/worker", lapi.token(), {"worker": "w"}, expect=403)


async def test_lease_workers_in_the_catalogue(lapi: Api) -> None:
    await claim(lapi, "alpha")
    await claim(lapi, "beta")
    cat = await lapi.call("GET", "/cat", lapi.token("admin"), expect=200, schema="catalogue")
    workers = {d["datasource_id"]: d["workers"] for d in cat["datasources"]}
    assert [w["worker"] for w in workers["lq"]] == ["alpha", "beta"]
    assert all(set(w) == {"worker", "since", "last_seen"} for w in workers["lq"])


# deadlines --------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [0, 86401, 1.5, "10", True])
async def test_submit_bad_timeout(lapi: Api, timeout: Any) -> None:
    body = {"job": "t", "request": 1, "timeout": timeout}
    await bad(lapi, "POST", "/ds1/job/", body, 400, '"timeout"')


async def test_deadline_through_the_server(lapi: Api) -> None:
    clock = manual_clock(lapi)
    rec = await submit(lapi, "t", dsid="ds1", timeout=5)
    assert rec["deadline"] == rec["submitted_at"] + 5000
    entry = await lapi.call(
        "GET", "/jobs/ds1/latest", lapi.token("driver"), expect=200, schema="stream_entry"
    )
    assert entry["data"]["timeout"] == 5
    clock.advance(5000)
    await store_of(lapi).fire_due()
    entry = await lapi.call(
        "GET", "/jobs/ds1/latest", lapi.token("driver"), expect=200, schema="stream_entry"
    )
    assert entry["type"] == "cancel" and entry["data"]["reason"] == "timeout"
    clock.advance(10_000)
    await store_of(lapi).fire_due()
    done = await lapi.call("GET", "/ds1/job/t/", lapi.token(), expect=200, schema="status_record")
    assert done["status"] == "cancelled" and "deadline" in done["error"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_claim_waiting_on_one_process_is_woken_by_a_submit_on_another(
    make_api: AppFactory,
) -> None:
    """Two store apps on one PostgreSQL schema (two processes): a claim waiting on the first is
    answered as soon as the second stores a submit."""
    first = await make_api()
    await first.declare("lq", **LEASED)
    second = await make_api()
    waiting = asyncio.create_task(claim(first, "far", wait=30))
    await asyncio.sleep(0.3)  # let the claim start waiting (a bound, not a timing assertion)
    assert not waiting.done()
    await submit(second, "elsewhere")
    jobs = await asyncio.wait_for(waiting, 10)  # far below the 30 s wait: woken, not timed out
    assert [j["job"] for j in jobs] == ["elsewhere"]


async def test_fired_changes_are_notified_as_usual(lapi: Api) -> None:
    """A lease expiry and a deadline's cancel entry reach subscribers like any write."""
    from tests.web.test_ws import connect, receive

    clock = manual_clock(lapi)
    client_ws = await connect(lapi, "/sub/lq/job", lapi.token())
    stream_ws = await connect(lapi, "/sub/lq/jobs", lapi.token("driver"))
    try:
        await submit(lapi, "j", timeout=60)
        assert (await receive(client_ws, "notification"))["data"]["status"] == "submitted"
        assert (await receive(stream_ws, "stream_entry"))["type"] == "request"
        await claim(lapi, "gone")
        assert (await receive(client_ws, "notification"))["data"]["status"] == "accepted"
        clock.advance(30_000)
        await store_of(lapi).fire_due()
        note = await receive(client_ws, "notification")
        assert note["data"]["status"] == "retrying" and "gone" in note["data"]["error"]
        clock.advance(30_000)
        await store_of(lapi).fire_due()
        entry = await receive(stream_ws, "stream_entry")
        assert (entry["type"], entry["data"]["reason"]) == ("cancel", "timeout")
        note = await receive(client_ws, "notification")
        assert note["seq"] == entry["seq"] and note["data"]["status"] == "cancelled"
    finally:
        await client_ws.close()
        await stream_ws.close()
