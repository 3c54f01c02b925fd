"""Isolation properties: whatever caveats a holder adds to its token, it never reaches another
client's jobs or a datasource its caveats exclude, over HTTP or a websocket subscription.

The store holds jobs of two clients (``appA``, ``appB``) on three datasources. Each example takes
a token of ``appA`` (or a driver's), attenuates it as a holder would (deserialize, add first-party
caveats, serialize: ``dsid``, ``method``, ``path``, ``time <``, ``client``, ``role``,
``target``) and tries to read, cancel, list, resubmit and subscribe to what it must not reach.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymacaroons import Macaroon

from tests.fuzz.live import LiveStore, live_store
from tests.wire import validate

DATASOURCES = ["dsA", "dsB", "dsC"]
EXAMPLES = 40
WAIT = 10.0
"""Seconds to wait for a frame that must come (a hang guard, not a timing assertion)."""

DSID_CAVEATS = st.lists(
    st.sampled_from([*DATASOURCES, "dsX"]), min_size=1, max_size=3, unique=True
).map(lambda ids: "dsid = " + ",".join(ids))
NARROWING = st.one_of(
    DSID_CAVEATS,
    DSID_CAVEATS,
    st.lists(
        st.sampled_from(["GET", "POST", "DELETE", "PUT"]), min_size=1, max_size=3, unique=True
    ).map(lambda ms: "method = " + ",".join(ms)),
    st.sampled_from(["path = *", "path = /dsA/*", "path = /*/job*", "path = /sub/*"]),
    st.sampled_from(["time < 2100-01-01T00:00:00Z", "target = fuzz-store", "client = appA"]),
)
"""Caveats a holder adds to narrow its token."""
ESCALATING = st.sampled_from(
    [[]] * 5 + [["client = appB"], ["role = admin"], ["role = driver"], ["role = client"]]
)
"""Caveats that try to change who the bearer is (refused: caveats only narrow)."""
CAVEATS = st.tuples(st.lists(NARROWING, max_size=3), ESCALATING).map(lambda t: t[0] + t[1])

UNIQUE = itertools.count()


def attenuate(token: str, caveats: list[str]) -> str:
    """``token`` with ``caveats`` added by its holder (no root key needed)."""
    macaroon = Macaroon.deserialize(token)
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat)
    serialized: str = macaroon.serialize()
    return serialized


def allowed_datasources(caveats: list[str]) -> set[str]:
    """The datasources every ``dsid`` caveat lists (all of them if there is none)."""
    allowed = set(DATASOURCES)
    for caveat in caveats:
        if caveat.startswith("dsid = "):
            allowed &= set(caveat.removeprefix("dsid = ").split(","))
    return allowed


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStore]:
    """A store with jobs ``a-<ds>`` of appA and ``b-<ds>`` of appB on every datasource."""
    with live_store(tmp_path_factory.mktemp("isolation")) as store:
        for ds in DATASOURCES:
            store.declare(ds)
            for app in ("a", "b"):
                token = store.token(client=f"app{app.upper()}")
                body = {"job": f"{app}-{ds}", "request": {"secret": app}}
                store.call("POST", f"/{ds}/job/", token, body, expect=201)
        yield store


def unchanged(live: LiveStore, ds: str, job: str) -> None:
    """The job was not cancelled (nor otherwise changed) by the attempts."""
    record = live.call("GET", f"/jobs/{ds}/job/{job}/", live.token("driver"), expect=200)
    assert record["cancel_requested"] is False and record["version"] == 1


def refused(reply_status: int) -> bool:
    """An answer that gives nothing away."""
    return reply_status in (401, 403, 404)


@given(caveats=CAVEATS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_client_token_never_reaches_other_clients_or_excluded_datasources(
    live: LiveStore, caveats: list[str]
) -> None:
    token = attenuate(live.token(client="appA"), caveats)
    allowed = allowed_datasources(caveats)
    for ds in DATASOURCES:
        targets = [f"b-{ds}"] + ([] if ds in allowed else [f"a-{ds}"])
        for job in targets:
            for method, path in (
                ("GET", f"/{ds}/job/{job}/"),
                ("GET", f"/{ds}/job/{job}"),
                ("POST", f"/{ds}/job/{job}/cancel"),
                ("DELETE", f"/{ds}/job/{job}/"),
                ("GET", f"/jobs/{ds}/job/{job}/"),
            ):
                reply = live.request(method, path, token)
                assert refused(reply.status), (method, path, caveats, reply)
                validate("error", reply.body)
            owner = job.split("-")[0]
            body = {"job": job, "request": {"secret": owner}}
            reply = live.request("POST", f"/{ds}/job/", token, body)
            assert reply.status in (401, 403, 404, 409), (ds, job, caveats, reply)
            unchanged(live, ds, job)
        listing = live.request("GET", f"/{ds}/job/", token)
        if ds not in allowed:
            assert listing.status in (401, 403), (ds, caveats, listing)
        elif listing.status == 200:
            assert {r["client"] for r in listing.body["jobs"]} <= {"appA"}
    catalogue = live.request("GET", "/cat", token)
    if catalogue.status == 200:
        assert {d["datasource_id"] for d in catalogue.body["datasources"]} <= allowed
    for ds in DATASOURCES:
        check_subscription(live, token, ds, ds in allowed, caveats)


def check_subscription(
    live: LiveStore, token: str, ds: str, may_be_allowed: bool, caveats: list[str]
) -> None:
    """An excluded datasource refuses the handshake; an accepted subscription carries only appA's
    jobs, though appB writes on the datasource before appA's sentinel job arrives."""
    n = next(UNIQUE)

    async def subscribe() -> None:
        async with aiohttp.ClientSession() as session:
            url = f"{live.url}/sub/{ds}/job"
            try:
                ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            except aiohttp.WSServerHandshakeError as exc:
                assert refused(exc.status), (ds, caveats, exc.status)
                return
            assert may_be_allowed, (ds, caveats, "a subscription to an excluded datasource")
            async with ws:
                await asyncio.gather(*(write_as_b(live, ds, n), write_sentinel(live, ds, n)))
                while True:
                    msg = await asyncio.wait_for(ws.receive(), WAIT)
                    assert msg.type is aiohttp.WSMsgType.TEXT, msg
                    frame: dict[str, Any] = orjson.loads(msg.data)
                    validate("notification", frame)
                    assert frame["client"] == "appA" and frame["data"]["client"] == "appA"
                    if frame["job"] == f"a-sentinel-{n}":
                        break

    live.run(subscribe())


async def write_as_b(live: LiveStore, ds: str, n: int) -> None:
    """appB submits, cancels, and its job gets a driver update."""
    b, driver = live.token(client="appB"), live.token("driver")
    async with aiohttp.ClientSession(live.url) as session:

        async def post(path: str, token: str, body: Any = None) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(path, json=body, headers=headers) as resp:
                assert resp.status in (200, 201), (path, await resp.text())

        await post(f"/{ds}/job/", b, {"job": f"b-new-{n}", "request": {"secret": "b"}})
        await post(f"/{ds}/job/b-new-{n}/cancel", b)
        await post(f"/jobs/{ds}/job/b-new-{n}/", driver, {"status": "cancelled"})


async def write_sentinel(live: LiveStore, ds: str, n: int) -> None:
    """appA submits the job that ends the wait for frames, after appB's writes were issued."""
    await asyncio.sleep(0)
    token = live.token(client="appA")
    async with aiohttp.ClientSession(live.url) as session:
        headers = {"Authorization": f"Bearer {token}"}
        body = {"job": f"a-sentinel-{n}", "request": 1}
        async with session.post(f"/{ds}/job/", json=body, headers=headers) as resp:
            assert resp.status == 201


@given(caveats=CAVEATS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_driver_token_never_reaches_excluded_datasources(
    live: LiveStore, caveats: list[str]
) -> None:
    token = attenuate(live.token("driver"), caveats)
    allowed = allowed_datasources(caveats)
    for ds in set(DATASOURCES) - allowed:
        for method, path, body in (
            ("GET", f"/jobs/{ds}/job/a-{ds}/", None),
            ("POST", f"/jobs/{ds}/job/a-{ds}/", {"status": "failed"}),
            ("GET", f"/jobs/{ds}/latest", None),
            ("GET", f"/jobs/{ds}/since/0", None),
            ("PUT", f"/jobs/{ds}", {"description": "taken over"}),
            ("GET", f"/{ds}/job/a-{ds}/", None),
        ):
            reply = live.request(method, path, token, body)
            assert reply.status in (401, 403), (method, path, caveats, reply)
        unchanged(live, ds, f"a-{ds}")

        async def subscribe(ds: str = ds) -> None:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
                    await session.ws_connect(
                        f"{live.url}/sub/{ds}/jobs", headers={"Authorization": f"Bearer {token}"}
                    )
                assert refusal.value.status in (401, 403)

        live.run(subscribe())
    catalogue = live.request("GET", "/cat", token)
    if catalogue.status == 200:
        assert {d["datasource_id"] for d in catalogue.body["datasources"]} <= allowed
