"""Requests leave no reference cycles behind: what a request allocates is freed by reference
counting when the request ends, not later by the cyclic garbage collector, whose collections
held the event loop for tens of milliseconds under load when each submit left a cycle."""

from __future__ import annotations

from tests.cycles import cyclic_garbage
from tests.web.conftest import Api

# Server-side objects only: the test's aiohttp client may keep cycles of its own.
SERVER_MODULES = ("jobqueue_store", "aiohttp.web_request", "aiohttp.web_urldispatcher")


async def _requests(api: Api, n: int, client: str, driver: str) -> None:
    """A round of the requests a store answers most, and some it refuses."""
    await api.call("POST", "/ds1/job/", client, {"job": f"j{n}", "request": {"n": n}}, expect=201)
    await api.call("GET", f"/ds1/job/j{n}/", client, expect=200)
    await api.call(
        "POST", f"/jobs/ds1/job/j{n}/", driver, {"status": "accepted", "progress": 0.5}, expect=200
    )
    await api.call("POST", f"/ds1/job/j{n}/cancel", client, expect=200)
    await api.call("GET", "/jobs/ds1/since/0?limit=10", driver, expect=200)
    await api.call("GET", "/jobs/ds1/latest", driver, expect=200)
    # Refused: no such job, a conflicting resubmit, no token, a malformed body.
    await api.call("POST", "/jobs/ds1/job/nope/", driver, {"status": "accepted"}, expect=404)
    await api.call("POST", "/ds1/job/", client, {"job": f"j{n}", "request": {}}, expect=409)
    await api.call("POST", "/ds1/job/", None, {"job": "x", "request": {}}, expect=401)
    await api.call(
        "POST",
        "/ds1/job/",
        client,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        expect=400,
    )


async def test_requests_leave_no_cycles_for_the_collector(api: Api) -> None:
    client, driver = api.token("client"), api.token("driver")
    await _requests(api, 0, client, driver)  # caches, statements and lazy imports made once
    with cyclic_garbage(SERVER_MODULES) as left:
        for n in range(1, 11):
            await _requests(api, n, client, driver)
    assert left == []
