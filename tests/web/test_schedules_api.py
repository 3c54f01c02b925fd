"""Schedules and their runs through the real HTTP and websocket server, on every backend: every
endpoint, the id rules, soft delete, the ``schedule`` notifications, and a sentence for every bad
value.

Runs come from the store's timer rounds on a :class:`~jobqueue_store.timers.ManualClock` that
the test moves, firing the due items itself instead of sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType

from jobqueue_store.schedules import fire_times
from jobqueue_store.timers import ManualClock
from tests.web.conftest import Api, AppFactory
from tests.web.test_leases_api import LEASED, store_of
from tests.wire import validate

START = int(datetime(2026, 12, 7, 8, 0, 3, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000


@pytest.fixture
async def sapi(make_api: AppFactory) -> Api:
    """A store on a manual clock with datasources ``ds1`` (stream) and ``lq`` (lease)."""
    api = await make_api()
    store_of(api).clock = ManualClock(START)
    await api.declare("ds1")
    await api.declare("lq", **LEASED)
    return api


def clock_of(api: Api) -> ManualClock:
    clock = store_of(api).clock
    assert isinstance(clock, ManualClock)
    return clock


async def fire(api: Api, minutes: int) -> None:
    """Move the clock ``minutes`` forward one minute at a time, firing at each."""
    for _ in range(minutes):
        clock_of(api).advance(MINUTE)
        await store_of(api).fire_due()


async def create(api: Api, body: dict[str, Any], expect: int = 201, **kw: Any) -> Any:
    return await api.call(
        "POST", "/ds1/schedule/", api.token(**kw), body, expect=expect, schema="schedule_record"
    )


EVERY_5 = {"schedule": "five", "request": {"cmd": "x"}, "cron": "*/5 * * * *"}


async def test_create_get_list_runs_pause_resume_delete(sapi: Api) -> None:
    rec = await create(sapi, {**EVERY_5, "timezone": "Europe/Paris", "timeout": 30})
    assert rec["schedule"] == "five" and rec["client"] == "app1" and rec["state"] == "active"
    assert rec["cron"] == "*/5 * * * *" and rec["timezone"] == "Europe/Paris"
    assert rec["catch_up"] == "one" and rec["timeout"] == 30 and rec["runs"] == 0
    assert (
        rec["next_run_at"] == fire_times("*/5 * * * *", "Europe/Paris", START, START + 9_000_000)[0]
    )
    assert rec["last_run"] is None and rec["version"] == 1 and "at" not in rec
    again = await create(sapi, {**EVERY_5, "timezone": "Europe/Paris", "timeout": 30}, 200)
    assert again == rec
    await create(sapi, {**EVERY_5, "cron": "*/10 * * * *"}, 409)
    tok = sapi.token()
    got = await sapi.call("GET", "/ds1/schedule/five/", tok, expect=200, schema="schedule_record")
    assert got == rec
    await fire(sapi, 11)
    runs = await sapi.call("GET", "/ds1/schedule/five/runs", tok, expect=200, schema="job_list")
    assert len(runs["jobs"]) == 2 and runs["next"] is None
    first, second = runs["jobs"][1], runs["jobs"][0]  # newest first
    assert second["scheduled_for"] - first["scheduled_for"] == 5 * MINUTE
    assert first["job"] == f"five.{first['scheduled_for']}" and first["schedule"] == "five"
    assert first["deadline"] == first["submitted_at"] + 30_000
    page = await sapi.call(
        "GET", "/ds1/schedule/five/runs?limit=1", tok, expect=200, schema="job_list"
    )
    assert [j["job"] for j in page["jobs"]] == [second["job"]] and page["next"]
    rest = await sapi.call(
        "GET", f"/ds1/schedule/five/runs?limit=1&cursor={page['next']}", tok, expect=200
    )
    assert [j["job"] for j in rest["jobs"]] == [first["job"]]
    # runs are the client's ordinary jobs
    mine = await sapi.call("GET", "/ds1/job/", tok, expect=200, schema="job_list")
    assert {j["job"] for j in mine["jobs"]} == {first["job"], second["job"]}
    got = await sapi.call("GET", "/ds1/schedule/five", tok, expect=200, schema="schedule_record")
    assert got["runs"] == 2 and got["last_run"] == second["job"] and got["version"] == 3
    paused = await sapi.call(
        "POST", "/ds1/schedule/five/pause", tok, expect=200, schema="schedule_record"
    )
    assert paused["state"] == "paused" and paused["next_run_at"] is None
    await fire(sapi, 10)
    resumed = await sapi.call(
        "POST", "/ds1/schedule/five/resume/", tok, expect=200, schema="schedule_record"
    )
    assert resumed["state"] == "active" and resumed["next_run_at"] > clock_of(sapi).now_ms()
    cancelled = await sapi.call(
        "DELETE",
        f"/ds1/schedule/five/run/{second['job']}/",
        tok,
        expect=200,
        schema="status_record",
    )
    assert cancelled["job"] == second["job"] and cancelled["cancel_requested"] is True
    deleted = await sapi.call(
        "DELETE", "/ds1/schedule/five/", tok, expect=200, schema="schedule_record"
    )
    assert deleted["state"] == "deleted" and deleted["next_run_at"] is None
    await fire(sapi, 15)
    runs = await sapi.call("GET", "/ds1/schedule/five/runs", tok, expect=200, schema="job_list")
    assert len(runs["jobs"]) == 2
    body = await create(sapi, EVERY_5, 409)
    assert "never reused" in body["error"]
    body = await sapi.call("POST", "/ds1/schedule/five/pause", tok, expect=409)
    assert body["error"] == "Schedule 'five' is deleted: it cannot be paused."
    listed = await sapi.call("GET", "/ds1/schedule/", tok, expect=200, schema="schedule_list")
    assert [s["schedule"] for s in listed["schedules"]] == ["five"] and listed["next"] is None


async def test_one_off_at_in_rfc3339_and_ms_and_in_the_past(sapi: Api) -> None:
    when = datetime.fromtimestamp((START + 3 * MINUTE) / 1000, UTC).isoformat()
    rec = await create(sapi, {"schedule": "once", "request": 1, "at": when})
    assert rec["at"] == START + 3 * MINUTE and rec["next_run_at"] == rec["at"]
    assert "cron" not in rec and "timezone" not in rec
    past = await create(sapi, {"schedule": "past", "request": 2, "at": START - 86_400_000})
    await store_of(sapi).fire_due()
    tok = sapi.token()
    (run,) = (await sapi.call("GET", "/ds1/schedule/past/runs", tok, expect=200))["jobs"]
    assert run["scheduled_for"] == past["at"] and run["request"] == 2
    await fire(sapi, 4)
    (run,) = (await sapi.call("GET", "/ds1/schedule/once/runs", tok, expect=200))["jobs"]
    assert run["job"] == f"once.{START + 3 * MINUTE}"


async def test_paging_own_schedules_and_another_clients(sapi: Api) -> None:
    for i in range(3):
        await create(sapi, {**EVERY_5, "schedule": f"s{i}"})
    await create(sapi, {**EVERY_5, "schedule": "theirs"}, client="app2")
    tok = sapi.token()
    page = await sapi.call("GET", "/ds1/schedule/?limit=2", tok, expect=200, schema="schedule_list")
    assert [s["schedule"] for s in page["schedules"]] == ["s2", "s1"]
    rest = await sapi.call("GET", f"/ds1/schedule/?limit=2&cursor={page['next']}", tok, expect=200)
    assert [s["schedule"] for s in rest["schedules"]] == ["s0"] and rest["next"] is None
    admin = await sapi.call("GET", "/ds1/schedule/", sapi.token("admin"), expect=200)
    assert len(admin["schedules"]) == 4
    for method, path in [
        ("GET", "/ds1/schedule/theirs"),
        ("GET", "/ds1/schedule/theirs/runs"),
        ("POST", "/ds1/schedule/theirs/pause"),
        ("POST", "/ds1/schedule/theirs/resume"),
        ("DELETE", "/ds1/schedule/theirs"),
        ("DELETE", "/ds1/schedule/theirs/run/theirs.1"),
    ]:
        body = await sapi.call(method, path, tok, expect=403)
        assert body["error"] == "Schedule 'theirs' belongs to another client."
    # an admin creates for a named client
    rec = await sapi.call(
        "POST",
        "/ds1/schedule/",
        sapi.token("admin"),
        {**EVERY_5, "schedule": "forapp", "client": "app1"},
        expect=201,
    )
    assert rec["client"] == "app1"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"request": 1, "cron": "* * * * *"}, "schedule id"),
        ({"schedule": "", "request": 1, "cron": "* * * * *"}, "schedule id"),
        ({"schedule": "x" * 101, "request": 1, "cron": "* * * * *"}, "1 to 100"),
        ({"schedule": "a/b", "request": 1, "cron": "* * * * *"}, "schedule id"),
        ({"schedule": "s", "cron": "* * * * *"}, 'no "request"'),
        ({"schedule": "s", "request": 1}, 'needs "at"'),
        ({"schedule": "s", "request": 1, "at": 1, "cron": "* * * * *"}, "not both"),
        ({"schedule": "s", "request": 1, "cron": "61 * * * *"}, "'61 * * * *' is not valid"),
        ({"schedule": "s", "request": 1, "cron": "* * * *"}, "must have 5 fields"),
        ({"schedule": "s", "request": 1, "cron": "* * * * * *"}, "must have 5 fields"),
        ({"schedule": "s", "request": 1, "cron": "0 0 30 2 *"}, "'0 0 30 2 *'"),
        ({"schedule": "s", "request": 1, "cron": 5}, '"cron" value'),
        (
            {"schedule": "s", "request": 1, "cron": "* * * * *", "timezone": "Mars/Base"},
            "Mars/Base",
        ),
        ({"schedule": "s", "request": 1, "cron": "* * * * *", "timezone": 3}, "IANA"),
        ({"schedule": "s", "request": 1, "at": "tomorrow"}, "'tomorrow' is not a time"),
        ({"schedule": "s", "request": 1, "at": "2026-12-24T18:00:00"}, "offset"),
        ({"schedule": "s", "request": 1, "at": -5}, "1970"),
        ({"schedule": "s", "request": 1, "at": True}, "not a time"),
        ({"schedule": "s", "request": 1, "at": 5, "timezone": "UTC"}, "own offset"),
        ({"schedule": "s", "request": 1, "at": 5, "catch_up": "some"}, '"catch_up"'),
        ({"schedule": "s", "request": 1, "at": 5, "timeout": 0}, "timeout"),
        ({"schedule": "s", "request": 1, "at": 5, "every": 3}, "'every'"),
        ([1, 2], "JSON object"),
    ],
)
async def test_bad_schedule_bodies_are_400_with_a_sentence(
    sapi: Api, body: Any, words: str
) -> None:
    reply = await sapi.call("POST", "/ds1/schedule/", sapi.token(), body, expect=400)
    assert words in reply["error"], reply["error"]


async def test_other_errors(sapi: Api) -> None:
    tok = sapi.token()
    assert (
        "not declared"
        in (await sapi.call("POST", "/nope/schedule/", tok, EVERY_5, expect=404))["error"]
    )
    assert (
        "No schedule 'ghost'"
        in (await sapi.call("GET", "/ds1/schedule/ghost/", tok, expect=404))["error"]
    )
    await sapi.call("POST", "/ds1/schedule/ghost/pause", tok, expect=404)
    await sapi.call("DELETE", "/ds1/schedule/ghost/", tok, expect=404)
    bad = await sapi.call("GET", f"/ds1/schedule/{'x' * 101}/", tok, expect=400)
    assert "1 to 100" in bad["error"]
    await create(sapi, EVERY_5)
    assert (
        "has no run"
        in (await sapi.call("DELETE", "/ds1/schedule/five/run/five.123/", tok, expect=404))["error"]
    )
    await sapi.call("GET", "/ds1/schedule/?cursor=zz", tok, expect=400)
    await sapi.call("GET", "/ds1/schedule/?limit=0", tok, expect=400)
    await sapi.call("GET", "/ds1/schedule/five/runs?cursor=zz", tok, expect=400)
    driver = sapi.token("driver")
    assert (
        "client or admin"
        in (await sapi.call("POST", "/ds1/schedule/", driver, EVERY_5, expect=403))["error"]
    )
    # a request the datasource's schema refuses is refused when the schedule is created
    await sapi.declare("typed", request_schema={"type": "object", "required": ["n"]})
    await sapi.call("POST", "/typed/schedule/", tok, {**EVERY_5, "request": {"m": 1}}, expect=400)


async def test_schedule_notifications_on_the_clients_socket(sapi: Api) -> None:
    tok = sapi.token()
    ws = await sapi.client.ws_connect("/sub/ds1/job", headers=sapi.auth(tok))
    other = await sapi.client.ws_connect(
        "/sub/ds1/job", headers=sapi.auth(sapi.token(client="app2"))
    )
    await create(sapi, EVERY_5)
    await fire(sapi, 5)

    async def frame() -> dict[str, Any]:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is WSMsgType.TEXT
        body: dict[str, Any] = orjson.loads(msg.data)
        return body

    created = await frame()
    validate("schedule_notification", created)
    assert created["type"] == "schedule" and created["schedule"] == "five"
    assert created["data"]["version"] == 1
    run = await frame()
    validate("notification", run)
    assert run["type"] == "status" and run["data"]["schedule"] == "five"
    fired = await frame()
    validate("schedule_notification", fired)
    assert fired["data"]["runs"] == 1 and fired["seq"] > run["seq"] > created["seq"]
    await ws.close()
    # a resume with ?after= replays the schedule events in seq order with the jobs'
    replay = await sapi.client.ws_connect("/sub/ds1/job?after=0", headers=sapi.auth(tok))
    seqs = []
    for _ in range(3):
        msg = await asyncio.wait_for(replay.receive(), 10)
        seqs.append(orjson.loads(msg.data)["seq"])
    assert seqs == [created["seq"], run["seq"], fired["seq"]]
    await replay.close()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(other.receive(), 0.3)
    await other.close()
