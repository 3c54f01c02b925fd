"""Makes an HTTP request for each job, to URLs the operator allows: {url, body?} -> {status, body}.

A job's request (JSON Schema: request_schema of the datasource, also in
jobqueue_store/drivers/schemas/http_request.json):

    {"url": "https://hooks.example.com/build",   required; http or https
     "method": "POST",                           optional: POST (default), PUT, PATCH, DELETE, GET
     "body": {"ref": "main"},                    optional: any JSON, sent as application/json
     "headers": {"X-Token": "..."},              optional: extra headers (not Host, Connection...)
     "timeout": 10}                              optional: seconds, at most --timeout

The URL must be under one of the prefixes given with --allow-url (same scheme, host and port;
the path at a segment boundary), compared after normalising it ('..' resolved, default port
dropped; a user name or password, a backslash or an encoded slash is refused). Otherwise the job
fails with a sentence and nothing is fetched. Redirects are followed (at most 5) only to URLs
that are allowed too; a redirect elsewhere fails the job and is not followed.

The job's response, on any answer that is not an error (2xx, and 3xx that is not followed):

    {"status": 200, "url": "<the URL answered>", "content_type": "application/json",
     "body": <JSON when the answer is JSON, else text>, "truncated": false}

A body longer than --max-response bytes is cut there (then kept as text) with "truncated": true.
A 4xx answer fails the job with its status and the start of its body (408 and 429 excepted: they
are retried). A 5xx answer or a connection error is retried with exponential backoff (status
"retrying" meanwhile; at most --max-retries times, a Retry-After in seconds is honoured up to
--max-retry-backoff), then fails. No complete answer within the time limit fails the job (not
retried: the server may have acted on it). Each request carries X-Jobqueue-Job: <job id>, the
same on every retry, so that the server can recognise a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urljoin

import aiohttp
import jsonschema
import orjson
from multidict import CIMultiDict
from yarl import URL

from jobqueue_store import __version__, codec
from jobqueue_store.driver import Driver, Job, RetryableError
from jobqueue_store.drivers import (
    env_help,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    split_list,
)
from jobqueue_store.drivers.urls import AllowList, NormalURL, UrlRefused, normalise

__all__ = [
    "REQUEST_SCHEMA",
    "HTTPError",
    "HttpOptions",
    "InvalidRequest",
    "TimeLimit",
    "URLNotAllowed",
    "add_options",
    "make_driver",
]

log = logging.getLogger("jobqueue_store.drivers.http")

ENV_PREFIX = "HTTP_DRIVER_"
DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE = 256 * 1024
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 1.0
DEFAULT_MAX_RETRY_BACKOFF = 60.0
MAX_REDIRECTS = 5
EXCERPT = 200
READ_CHUNK = 64 * 1024

REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRIED_4XX = frozenset({408, 429})
DRIVER_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

REQUEST_SCHEMA: dict[str, Any] = json.loads(
    resources.files("jobqueue_store.drivers").joinpath("schemas/http_request.json").read_text()
)
"""The JSON Schema of a job's request, declared as the datasource's ``request_schema``."""
_VALIDATOR = jsonschema.Draft202012Validator(REQUEST_SCHEMA)


class URLNotAllowed(Exception):
    """The job's URL (or a redirect's) is not acceptable or not under an allowed prefix."""


class InvalidRequest(Exception):
    """The job's request does not have the shape this driver needs."""


class HTTPError(Exception):
    """The server answered with a 4xx status."""


class TimeLimit(Exception):
    """No complete answer came within the time limit."""


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """What the operator allows: URL prefixes, time and size limits, retries."""

    allow: AllowList = field(default_factory=lambda: AllowList([]))
    timeout: float = DEFAULT_TIMEOUT
    max_response: int = DEFAULT_MAX_RESPONSE
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    max_retry_backoff: float = DEFAULT_MAX_RETRY_BACKOFF


def add_options(group: argparse._ArgumentGroup) -> None:
    """The http driver's command-line options (each with an environment variable)."""
    group.add_argument(
        "--allow-url",
        action="append",
        default=None,
        metavar="PREFIX",
        help="a URL prefix jobs may reach, e.g. https://hooks.example.com/ci/ (scheme, host, "
        "port and path); repeat it for more; the environment variable takes a comma- or "
        f"space-separated list {env_help(ENV_PREFIX + 'ALLOW_URL', 'none: every job fails')}",
    )
    _number(
        group,
        "--timeout",
        "TIMEOUT",
        positive_float,
        DEFAULT_TIMEOUT,
        "SECONDS",
        "the longest one attempt may take, redirects included; a request's timeout may "
        "only shorten it",
    )
    _number(
        group,
        "--max-response",
        "MAX_RESPONSE",
        positive_int,
        DEFAULT_MAX_RESPONSE,
        "BYTES",
        "the most of a response body kept (keep it well under the store's body limit); "
        "the rest is not read and 'truncated' is true",
    )
    _number(
        group,
        "--max-retries",
        "MAX_RETRIES",
        non_negative_int,
        DEFAULT_MAX_RETRIES,
        "N",
        "retries after a 5xx, 408, 429 or connection error",
    )
    _number(
        group,
        "--retry-backoff",
        "RETRY_BACKOFF",
        non_negative_float,
        DEFAULT_RETRY_BACKOFF,
        "SECONDS",
        "the first retry's delay, doubled for each next one (with jitter)",
    )
    _number(
        group,
        "--max-retry-backoff",
        "MAX_RETRY_BACKOFF",
        non_negative_float,
        DEFAULT_MAX_RETRY_BACKOFF,
        "SECONDS",
        "the longest delay between retries",
    )


def _number(
    group: argparse._ArgumentGroup,
    flag: str,
    env_name: str,
    kind: Any,
    default: float,
    metavar: str,
    text: str,
) -> None:
    env = ENV_PREFIX + env_name
    group.add_argument(
        flag,
        type=kind,
        default=os.environ.get(env, str(default)),
        metavar=metavar,
        help=f"{text} {env_help(env, default)}",
    )


def options_from(args: argparse.Namespace) -> HttpOptions:
    """The options parsed by :func:`add_options` (flags win over the environment).

    Raises ``ValueError`` with a sentence for a prefix that is not a plain http(s) URL.
    """
    if args.allow_url is not None:
        prefixes = list(args.allow_url)
    else:
        prefixes = split_list(os.environ.get(ENV_PREFIX + "ALLOW_URL", ""))
    return HttpOptions(
        allow=AllowList(prefixes),
        timeout=args.timeout,
        max_response=args.max_response,
        max_retries=args.max_retries,
        retry_backoff=args.retry_backoff,
        max_retry_backoff=args.max_retry_backoff,
    )


def make_driver(args: argparse.Namespace | HttpOptions) -> Driver:
    """An http driver with the options parsed by :func:`add_options` (or given directly).

    Raises ``ValueError`` with a sentence for an allowed prefix that is not a plain http(s) URL.
    """
    options = args if isinstance(args, HttpOptions) else options_from(args)
    driver = Driver(
        description="Makes an HTTP request to an allowed URL: {url, method, body, headers, "
        "timeout} -> {status, url, content_type, body, truncated}.",
        request_schema=REQUEST_SCHEMA,
        concurrency=DEFAULT_CONCURRENCY,
        max_retries=options.max_retries,
        retry_backoff=options.retry_backoff,
        max_retry_backoff=options.max_retry_backoff,
    )

    @driver.handler
    async def handle(job: Job) -> dict[str, Any]:
        """Make the job's request if its URL is allowed."""
        return await fetch(job.request, options, job_id=job.id)

    if options.allow:
        log.info("http driver allows URLs under: %s", options.allow)
    else:
        log.warning("http driver has no allowed URL prefix (--allow-url): every job will fail")
    return driver


# one job ----------------------------------------------------------------------------------------
def _check_request(request: Any) -> None:
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(request))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(the whole request)"
        raise InvalidRequest(
            f"the request does not match the http driver's schema at {where}: {error.message}"
        )
    for name in request.get("headers", {}):
        if name.lower() in DRIVER_HEADERS:
            raise InvalidRequest(f"the header {name!r} is set by the driver; leave it out")


def _allowed(text: str, allow: AllowList, context: str = "", outcome: str = "") -> NormalURL:
    """``text`` normalised, if it is under an allowed prefix; else :class:`URLNotAllowed`."""
    outcome = outcome or "nothing was fetched"
    try:
        url = normalise(text)
    except UrlRefused as exc:
        raise URLNotAllowed(f"{context}{exc}; {outcome}") from None
    if not allow.allows(url):
        raise URLNotAllowed(
            f"{context}{url} is not under a URL prefix this driver allows; {outcome}"
        )
    return url


async def fetch(request: Any, options: HttpOptions, *, job_id: str = "") -> dict[str, Any]:
    """Make the HTTP request described by ``request`` (one attempt) and describe the answer.

    Raises :class:`~jobqueue_store.driver.RetryableError` on a 5xx, 408 or 429 answer or a
    connection error, :class:`HTTPError` on another 4xx, :class:`TimeLimit`,
    :class:`URLNotAllowed` and :class:`InvalidRequest`.
    """
    _check_request(request)
    url = _allowed(request["url"], options.allow)
    method = request.get("method", "POST")
    headers: CIMultiDict[str] = CIMultiDict(
        {"User-Agent": f"jobqueue-store-http-driver/{__version__}"}
    )
    if job_id:
        headers["X-Jobqueue-Job"] = job_id
    body: bytes | None = None
    if "body" in request:
        body = codec.dumps(request["body"])
        headers["Content-Type"] = "application/json"
    for name, value in request.get("headers", {}).items():
        headers[name] = value  # replaces a default of any case
    timeout = min(float(request.get("timeout", options.timeout)), options.timeout)
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )
    try:
        async with asyncio.timeout(timeout):
            return await _follow(session, method, url, headers, body, options)
    except TimeoutError:
        raise TimeLimit(f"no complete answer from {url} within {timeout:g}s") from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise RetryableError(f"could not get an answer from {url}: {_describe(exc)}") from None
    except aiohttp.ClientError as exc:
        raise HTTPError(f"the answer from {url} could not be read: {_describe(exc)}") from None
    finally:
        await session.close()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _follow(
    session: aiohttp.ClientSession,
    method: str,
    url: NormalURL,
    headers: CIMultiDict[str],
    body: bytes | None,
    options: HttpOptions,
) -> dict[str, Any]:
    for _ in range(MAX_REDIRECTS + 1):
        async with session.request(
            method, URL(str(url), encoded=True), data=body, headers=headers, allow_redirects=False
        ) as resp:
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or location is None:
                return await _answer(resp, url, options)
            target = _allowed(
                urljoin(str(url), location),
                options.allow,
                f"{url} redirected ({resp.status}) to ",
                "the redirect was not followed",
            )
        if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
            method, body = "GET", None
            headers.popall("Content-Type", None)
        if target.origin != url.origin:
            for name in CREDENTIAL_HEADERS:
                headers.popall(name, None)
        url = target
    raise HTTPError(f"more than {MAX_REDIRECTS} redirects, the last to {url}")


async def _read(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more (not read)."""
    data = bytearray()
    while len(data) <= limit:
        chunk = await resp.content.read(min(READ_CHUNK, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data[:limit]), len(data) > limit


def _text(resp: aiohttp.ClientResponse, data: bytes) -> str:
    try:
        return data.decode(resp.charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


def _retry_after(resp: aiohttp.ClientResponse, cap: float) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None
    return min(float(value), cap)


async def _answer(
    resp: aiohttp.ClientResponse, url: NormalURL, options: HttpOptions
) -> dict[str, Any]:
    status = resp.status
    said = f"{url} answered {status} {resp.reason or ''}".rstrip()
    if status >= 500 or status in RETRIED_4XX:
        raise RetryableError(said, delay=_retry_after(resp, options.max_retry_backoff))
    data, truncated = await _read(resp, options.max_response)
    if status >= 400:
        excerpt = _excerpt(_text(resp, data))
        raise HTTPError(f"{said}: {excerpt}" if excerpt else said)
    content_type = resp.content_type if "Content-Type" in resp.headers else None
    body: Any = None
    decoded = False
    if content_type is not None and _is_json(content_type) and not truncated and data:
        with contextlib.suppress(orjson.JSONDecodeError):
            body, decoded = orjson.loads(data), True
    if not decoded:
        body = _text(resp, data)
    return {
        "status": status,
        "url": str(url),
        "content_type": content_type,
        "body": body,
        "truncated": truncated,
    }
