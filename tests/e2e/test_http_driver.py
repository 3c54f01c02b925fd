"""The built-in http driver: ``fetch`` in this process, and the driver in a real process.

The target is a real aiohttp server started by each test on a free port of 127.0.0.1; it records
every request it receives, so that a test can tell that nothing was fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from jobqueue_store.client import JobClient
from jobqueue_store.driver import RetryableError
from jobqueue_store.drivers.http import (
    REQUEST_SCHEMA,
    HTTPError,
    HttpOptions,
    InvalidRequest,
    TimeLimit,
    URLNotAllowed,
    fetch,
)
from jobqueue_store.drivers.urls import AllowList
from jobqueue_store.errors import BadRequest
from jobqueue_store.models import JobRecord
from tests.e2e.conftest import DriverProcess, StoreProcess, free_port, jq

DSID = "http"
HUGE = 100_000


@dataclass
class Target:
    """The test's HTTP server: its base URL and every request it received."""

    base: str
    seen: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of each request, in order."""
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    flaky_failures: int = 2

    def paths(self) -> list[str]:
        return [path for _, path in self.seen]


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    """A real aiohttp server on a free port, serving the paths the tests use."""
    port = free_port()
    t = Target(f"http://127.0.0.1:{port}")

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        t.seen.append((request.method, request.path))
        t.bodies.append(await request.read())
        t.headers.append(dict(request.headers))
        response: web.StreamResponse = await handler(request)
        return response

    async def json_answer(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world", "method": request.method})

    async def text_answer(request: web.Request) -> web.Response:
        return web.Response(text="plain words")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such   widget\nhere")

    async def flaky(request: web.Request) -> web.Response:
        if t.paths().count(request.path) <= t.flaky_failures:
            return web.Response(status=503, text="busy")
        return web.json_response({"after": "retries"})

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(text="too late")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(text="x" * HUGE, content_type="application/json")

    async def redirect_out(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{t.base}/secret")

    async def redirect_in(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/ok/json")

    async def redirect_host(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://localhost:{port}/ok/json")

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="the secret")

    app = web.Application(middlewares=[record])
    app.router.add_route("*", "/ok/json", json_answer)
    app.router.add_route("*", "/ok/text", text_answer)
    app.router.add_route("*", "/ok/missing", missing)
    app.router.add_route("*", "/ok/flaky", flaky)
    app.router.add_route("*", "/ok/hang", hang)
    app.router.add_route("*", "/ok/huge", huge)
    app.router.add_route("*", "/ok/redirect-out", redirect_out)
    app.router.add_route("*", "/ok/redirect-in", redirect_in)
    app.router.add_route("*", "/ok/redirect-host", redirect_host)
    app.router.add_route("*", "/secret", secret)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield t
    finally:
        await runner.cleanup()


def options(t: Target, **kw: Any) -> HttpOptions:
    return HttpOptions(allow=AllowList([f"{t.base}/ok/"]), **kw)


# fetch, in this process -------------------------------------------------------------------------
async def test_fetch_reports_json_and_text_answers(target: Target) -> None:
    answer = await fetch(
        {"url": f"{target.base}/ok/json", "body": {"n": 1}, "headers": {"X-Key": "k"}},
        options(target),
        job_id="job-1",
    )
    assert answer == {
        "status": 200,
        "url": f"{target.base}/ok/json",
        "content_type": "application/json",
        "body": {"hello": "world", "method": "POST"},
        "truncated": False,
    }
    assert target.bodies[0] == b'{"n":1}'
    sent = target.headers[0]
    assert (sent["Content-Type"], sent["X-Key"], sent["X-Jobqueue-Job"]) == (
        "application/json",
        "k",
        "job-1",
    )
    text = await fetch({"url": f"{target.base}/ok/text", "method": "GET"}, options(target))
    assert (text["body"], text["content_type"], text["truncated"]) == (
        "plain words",
        "text/plain",
        False,
    )
    assert target.seen == [("POST", "/ok/json"), ("GET", "/ok/text")]
    assert target.bodies[1] == b""


async def test_fetch_fails_on_4xx_and_retries_5xx(target: Target) -> None:
    with pytest.raises(HTTPError, match=r"/ok/missing answered 404 Not Found: no such widget here"):
        await fetch({"url": f"{target.base}/ok/missing"}, options(target))
    with pytest.raises(RetryableError, match=r"/ok/flaky answered 503 Service Unavailable"):
        await fetch({"url": f"{target.base}/ok/flaky"}, options(target))


async def test_fetch_truncates_a_huge_answer_to_the_limit(target: Target) -> None:
    answer = await fetch({"url": f"{target.base}/ok/huge"}, options(target, max_response=1000))
    assert answer["truncated"] is True
    assert answer["body"] == "x" * 1000  # cut JSON is kept as text


async def test_fetch_time_limit_is_the_driver_s_or_a_shorter_one_of_the_request(
    target: Target,
) -> None:
    with pytest.raises(TimeLimit, match=r"no complete answer from .*/ok/hang within 0.2s"):
        await fetch({"url": f"{target.base}/ok/hang"}, options(target, timeout=0.2))
    with pytest.raises(TimeLimit, match=r"within 0.1s"):
        await fetch({"url": f"{target.base}/ok/hang", "timeout": 0.1}, options(target, timeout=30))
    with pytest.raises(TimeLimit, match=r"within 0.2s"):
        await fetch({"url": f"{target.base}/ok/hang", "timeout": 50}, options(target, timeout=0.2))


async def test_fetch_retries_a_connection_error(target: Target) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(RetryableError, match="could not get an answer from"):
        await fetch({"url": closed}, HttpOptions(allow=AllowList([closed])))


@pytest.mark.parametrize(
    "url",
    [
        "{base}/secret",
        "{base}/ok/../secret",
        "{base}/ok/%2e%2e/secret",
        "{base}/ok/..%2fsecret",
        "{base}/ok/..;/secret",
        "{base}/okx",
        "http://127.0.0.1:{base_port}@localhost:{base_port}/ok/json",
        "http://localhost:{base_port}/ok/json",
        "https://127.0.0.1:{base_port}/ok/json",
        "{base}\\@evil.example/ok/json",
    ],
)
async def test_fetch_of_a_url_outside_the_allow_list_fetches_nothing(
    target: Target, url: str
) -> None:
    port = target.base.rsplit(":", 1)[1]
    with pytest.raises(URLNotAllowed, match="nothing was fetched"):
        await fetch({"url": url.format(base=target.base, base_port=port)}, options(target))
    assert target.seen == []


async def test_fetch_follows_a_redirect_only_to_an_allowed_url(target: Target) -> None:
    answer = await fetch({"url": f"{target.base}/ok/redirect-in"}, options(target))
    assert (answer["status"], answer["url"], answer["body"]["method"]) == (
        200,
        f"{target.base}/ok/json",
        "GET",  # 303: the POST becomes a GET
    )
    with pytest.raises(URLNotAllowed, match=r"redirected \(302\) to .*/secret is not under"):
        await fetch({"url": f"{target.base}/ok/redirect-out"}, options(target))
    assert target.paths() == ["/ok/redirect-in", "/ok/json", "/ok/redirect-out"]


async def test_fetch_keeps_method_and_body_on_307_but_not_credentials_across_origins(
    target: Target,
) -> None:
    port = target.base.rsplit(":", 1)[1]
    allow = AllowList([f"{target.base}/ok/", f"http://localhost:{port}/ok/"])
    request = {
        "url": f"{target.base}/ok/redirect-host",
        "method": "PUT",
        "body": {"n": 2},
        "headers": {"Authorization": "Bearer s3cret", "content-type": "application/x+json"},
    }
    answer = await fetch(request, HttpOptions(allow=allow))
    assert (answer["url"], answer["body"]["method"]) == (f"http://localhost:{port}/ok/json", "PUT")
    assert target.seen == [("PUT", "/ok/redirect-host"), ("PUT", "/ok/json")]
    assert target.bodies == [b'{"n":2}', b'{"n":2}']
    first, second = target.headers
    assert first["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in second  # another origin
    for sent in (first, second):  # the request's header replaced the default, of any case
        assert sent["Content-Type"] == "application/x+json"


async def test_fetch_refuses_a_request_of_the_wrong_shape(target: Target) -> None:
    with pytest.raises(InvalidRequest, match="'Host' is set by the driver"):
        await fetch({"url": f"{target.base}/ok/json", "headers": {"Host": "x"}}, options(target))
    with pytest.raises(InvalidRequest, match="schema at method"):
        await fetch({"url": f"{target.base}/ok/json", "method": "TRACE"}, options(target))
    assert target.seen == []


# the driver, in a real process ------------------------------------------------------------------
def start_http_driver(
    store: StoreProcess,
    drivers: list[DriverProcess],
    tmp_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> DriverProcess:
    driver = DriverProcess(
        "http",
        store.url,
        store.token("driver", dsid=DSID),
        DSID,
        tmp_path / "http-state.json",
        env=env,
        options=["--retry-backoff", "0.05", "--max-retries", "3", *extra],
    )
    drivers.append(driver)
    driver.start()
    return driver


async def run_job(client: JobClient, request: dict[str, Any]) -> tuple[JobRecord, list[str]]:
    """Submit a job and follow it: its terminal record and every status it went through."""
    statuses: list[str] = []
    async with asyncio.timeout(30), client.subscribe(DSID) as notes:
        job = await client.submit(DSID, request)
        async for note in notes:
            if note.job != job.job:
                continue
            statuses.append(note.record.status)
            if note.record.terminal:
                return note.record, statuses
    raise AssertionError("the subscription ended")


async def test_http_driver_completes_fails_and_retries(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path, target: Target
) -> None:
    start_http_driver(
        store_proc, drivers, tmp_path, "--allow-url", f"{target.base}/ok/", "--max-response", "1000"
    )
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        done, statuses = await run_job(client, {"url": f"{target.base}/ok/json", "body": [1, 2]})
        assert statuses == ["submitted", "accepted", "complete"]
        assert done.response["body"] == {"hello": "world", "method": "POST"}
        assert done.response["status"] == 200

        done, _ = await run_job(client, {"url": f"{target.base}/ok/text", "method": "GET"})
        assert (done.status, done.response["body"]) == ("complete", "plain words")

        done, _ = await run_job(client, {"url": f"{target.base}/ok/huge"})
        assert (done.status, done.response["truncated"]) == ("complete", True)
        assert done.response["body"] == "x" * 1000

        done, statuses = await run_job(client, {"url": f"{target.base}/ok/missing"})
        assert statuses == ["submitted", "accepted", "failed"]
        assert "answered 404 Not Found: no such widget here" in (done.error or "")
        assert done.response is None

        done, statuses = await run_job(client, {"url": f"{target.base}/ok/flaky"})
        assert statuses == [
            "submitted",
            "accepted",
            "retrying",
            "accepted",
            "retrying",
            "accepted",
            "complete",
        ]
        assert done.response["body"] == {"after": "retries"}
        assert target.paths().count("/ok/flaky") == 3
        # every attempt carries the same job id, so that the server can tell a repeat
        assert {h["X-Jobqueue-Job"] for h in target.headers[-3:]} == {done.job}


async def test_http_driver_time_limit_fails_the_job(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path, target: Target
) -> None:
    start_http_driver(
        store_proc, drivers, tmp_path, "--allow-url", f"{target.base}/ok/", "--timeout", "0.5"
    )
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        done, statuses = await run_job(client, {"url": f"{target.base}/ok/hang"})
    assert statuses == ["submitted", "accepted", "failed"]
    assert "no complete answer from" in (done.error or "")
    assert "within 0.5s" in (done.error or "")
    assert target.paths() == ["/ok/hang"]  # tried once: a time limit is not retried


async def test_http_driver_fetches_nothing_outside_its_allow_list(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path, target: Target
) -> None:
    # the allow-list from the environment this time
    start_http_driver(
        store_proc, drivers, tmp_path, env={"HTTP_DRIVER_ALLOW_URL": f"{target.base}/ok/"}
    )
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        for url, why in (
            (f"{target.base}/secret", "is not under a URL prefix this driver allows"),
            (f"{target.base}/ok/../secret", "/secret is not under a URL prefix"),
            (
                f"http://127.0.0.1:1@{target.base[len('http://') :]}/ok/json",
                "has a user name or password before its host",
            ),
        ):
            done, statuses = await run_job(client, {"url": url})
            assert statuses == ["submitted", "accepted", "failed"], url
            assert why in (done.error or ""), done.error
            assert "nothing was fetched" in (done.error or ""), done.error
        done, _ = await run_job(client, {"url": f"{target.base}/ok/redirect-out"})
        assert done.status == "failed"
        assert "redirected (302)" in (done.error or "")
        assert "the redirect was not followed" in (done.error or "")
        # a request of the wrong shape is refused by the store: the driver declared its schema
        with pytest.raises(BadRequest, match="request_schema"):
            await client.submit(DSID, {"url": f"{target.base}/ok/json", "verb": "GET"})
    assert target.paths() == ["/ok/redirect-out"]


async def test_http_driver_gives_up_after_its_retries(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    start_http_driver(store_proc, drivers, tmp_path, "--allow-url", closed, "--max-retries", "2")
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        done, statuses = await run_job(client, {"url": closed})
    assert statuses.count("retrying") == 2
    assert statuses[-1] == "failed"
    assert "gave up after 3 attempts: could not get an answer from" in (done.error or "")


def test_http_driver_declares_its_request_schema(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    start_http_driver(store_proc, drivers, tmp_path, "--allow-url", "http://127.0.0.1:1/")
    token = store_proc.token("client", "app1")
    listed = jq("datasource", "list", "--json", "--url", store_proc.url, "--token", token)
    assert listed.returncode == 0, listed.stderr
    assert '"request_schema"' in listed.stdout
    assert REQUEST_SCHEMA["title"] in listed.stdout


def test_bad_driver_options_are_refused_with_a_sentence() -> None:
    bad = jq("run-driver", "http", "--allow-url", "http://user@example.com/", "--token", "t")
    assert bad.returncode == 2
    assert "user name or password" in bad.stderr
    bad = jq("run-driver", "shell", "--max-timeout", "-1", "--token", "t")
    assert bad.returncode == 2
    assert "must be a number above 0" in bad.stderr
    for name, expected in (
        ("shell", ["--allow", "SHELL_DRIVER_ALLOW", "--max-output", "SHELL_DRIVER_GRACE"]),
        ("http", ["--allow-url", "HTTP_DRIVER_ALLOW_URL", "--max-response", "--max-retries"]),
    ):
        shown = jq("run-driver", name, "--help")
        assert shown.returncode == 0
        for text in expected:
            assert text in shown.stdout, (name, text)
