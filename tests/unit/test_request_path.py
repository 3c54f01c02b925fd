"""The middleware's shortcut to a request's path agrees with aiohttp's ``request.path``."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from jobqueue_store.web.middleware import _path


@pytest.mark.parametrize(
    "raw",
    [
        "/jobs/ds/job/j1/",
        "/jobs/ds/latest?limit=3",
        "/jobs/ds/since/0?limit=100&x=/jobs/",
        "/jo%62s/ds/job/j1/",
        "/./jobs/ds/",
        "/a/../jobs/ds/",
        "/jobs/d%2Fs/",
        "/ds/job/?/jobs/",
        "/jobs",
        "/",
    ],
)
def test_the_same_path_as_aiohttp(raw: str) -> None:
    request = make_mocked_request("POST", raw)
    assert _path(request) == request.path
