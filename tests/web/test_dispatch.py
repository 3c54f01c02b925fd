"""The dispatcher's route match is aiohttp's: the same route and parameters, or no opinion."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue_store.config import Settings
from jobqueue_store.web.app import create_app
from jobqueue_store.web.dispatch import Dispatcher

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]
SEGMENTS = [
    "ds1", "job", "jobs", "j1", "cancel", "stop", "start", "revisions", "claim", "heartbeat",
    "latest", "since", "123", "worker", "schedule", "s1", "runs", "pause", "resume", "run",
    "healthz", "readyz", "metrics", "openapi.json", "cat", "sub", "ui", "docs", "index.html",
    "", "a{b", "x}", "%2F", "%41", "a b", ".", "..", "é", "a#b",
]  # fmt: skip


@pytest.fixture(scope="module")
def dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Dispatcher:
    app = create_app(Settings(data_dir=Path(tmp_path_factory.mktemp("data"))))
    app.freeze()
    return Dispatcher(app)


async def _agree(dispatcher: Dispatcher, method: str, path: str) -> bool:
    """Assert the dispatcher agrees with aiohttp on ``method path``; whether it matched."""
    request = make_mocked_request(method, path, app=dispatcher._app)
    expected = await dispatcher._app.router.resolve(request)
    found = dispatcher.match(method, path)
    if found is None:
        return False
    route, values = found
    assert route is expected.route, (method, path, route, expected.route)
    assert values == dict(expected), (method, path)
    return True


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/ds1/job/j1", "job_status"),
        ("GET", "/ds1/job/j1/", "job_status"),
        ("POST", "/ds1/job/", "submit"),
        ("POST", "/ds1/job/j1/cancel", "cancel"),
        ("POST", "/jobs/ds1/job/j1/", "update_status"),
        ("GET", "/jobs/ds1/job/j1", "driver_job"),
        # aiohttp tries the '/jobs' routes before the '/' ones: 'latest' of datasource 'job',
        # not the status of job 'latest' on datasource 'jobs'.
        ("GET", "/jobs/job/latest", "latest"),
        ("GET", "/jobs/ds1/since/5", "since"),
        ("GET", "/healthz", "healthz"),
        ("GET", "/sub/ds1/job", "sub_client"),
    ],
)
async def test_busy_routes_are_matched(
    dispatcher: Dispatcher, method: str, path: str, name: str
) -> None:
    assert await _agree(dispatcher, method, path)
    found = dispatcher.match(method, path)
    assert found is not None and found[0].name == name


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/ui/job/j1"),  # the dashboard's prefix is aiohttp's to match
        ("GET", "/ds%2F1/job/j1"),  # an escaped slash
        ("GET", "/ds1/job/j1//"),
        ("GET", "/ds1/job/a{b"),
        ("GET", "/ds1/job/../job/j1"),
        ("GET", "/ds1/job/j%31"),
        ("HEAD", "/ds1/job/j1"),
        ("PATCH", "/ds1/job/j1"),  # 405: aiohttp lists the allowed methods
        ("GET", "/nothing/here/at/all/x"),
    ],
)
async def test_left_to_aiohttp(dispatcher: Dispatcher, method: str, path: str) -> None:
    assert not await _agree(dispatcher, method, path)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    segments=st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=6),
    slash=st.booleans(),
)
async def test_agrees_with_aiohttp_on_any_path(
    dispatcher: Dispatcher, method: str, segments: list[str], slash: bool
) -> None:
    path = "/" + "/".join(segments) + ("/" if slash and segments else "")
    await _agree(dispatcher, method, path)
