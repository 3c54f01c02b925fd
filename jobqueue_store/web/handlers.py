"""HTTP handlers: parse, call one service method, encode. A few lines each."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from jobqueue_store import audit, codec, openapi, validation
from jobqueue_store.errors import BadRequest, Forbidden, TooLarge, UnsupportedMediaType
from jobqueue_store.metrics import CONTENT_TYPE
from jobqueue_store.models import Role
from jobqueue_store.service import Waited
from jobqueue_store.web.keys import METRICS, SERVICE, SETTINGS, STORE, principal_of
from jobqueue_store.web.responses import json_response, json_text_response

STREAM_LIMIT_DEFAULT = 1000
STREAM_LIMIT_MAX = 10_000
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000


async def read_json(request: web.Request) -> Any:
    """The request's JSON body: 413 over the limit, 415 if not JSON, 400 if malformed or nested
    deeper than ``max_json_depth``.

    A declared ``Content-Length`` over the limit is refused before reading; a chunked body that
    arrived whole is measured at once, one still arriving is cut off by aiohttp's
    ``client_max_size`` (the same limit) as soon as it exceeds it.
    """
    limits = request.app[SETTINGS].limits
    limit = limits.max_body
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLarge(f"The request body is {declared} bytes; the limit is {limit} bytes.")
    if not request.body_exists:
        raise BadRequest("The request has no body: send a JSON object.")
    # Most clients send exactly this: aiohttp's parse of the header (content_type) costs more
    # than the comparison.
    if request.headers.get(hdrs.CONTENT_TYPE) != "application/json":
        mimetype = request.content_type
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise UnsupportedMediaType(
                f"The body must be JSON with 'Content-Type: application/json', not '{mimetype}'."
            )
    content = request.content
    try:
        if content.is_eof():
            # The whole body came with the headers (nearly every request): take it as it is,
            # without aiohttp's read loop, and keep it where request.read() finds it.
            data = content.read_nowait()
            if len(data) > limit:
                raise TooLarge(f"The request body is over the limit of {limit} bytes.")
            request._read_bytes = data
        else:
            data = await request.read()
    except RequestPayloadError:
        # e.g. a Content-Encoding the body is not in: the payload cannot be decoded.
        raise BadRequest(
            "The request body could not be read: check its Content-Encoding (or send none)."
        ) from None
    # orjson itself refuses nesting deeper than 1024 as soon as it reaches it; the store's own
    # limit is lower (orjson cannot encode more than 254 levels). Counting brackets is an upper
    # bound on depth, in C, so only bodies with many brackets are walked.
    body = codec.parse_body(data)
    depth = limits.max_json_depth
    if data.count(b"[") + data.count(b"{") > depth and _deeper_than(body, depth):
        raise BadRequest(f"The request body nests arrays and objects deeper than {depth} levels.")
    audit.note_body(request, body)
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``value`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, level = stack.pop()
        if level > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return False


def _wait(request: web.Request) -> float | None:
    if "?" not in request.raw_path:  # no query: none parsed (request.query builds a mapping)
        return None
    maximum = request.app[SETTINGS].limits.max_wait
    return validation.seconds(request.query.get("wait"), "wait", maximum)


def _waited_response(waited: Waited, waiting: bool) -> web.Response:
    if waiting:
        return json_text_response(waited.record.wire_bytes(), 200 if waited.done else 202)
    return json_text_response(waited.record.wire_bytes(), 201 if waited.created else 200)


# operations -------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: the database answers (503 otherwise); no token needed."""
    await request.app[STORE].ping()
    return json_response({"status": "ok"})


async def openapi_document(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI 3.1 document of the HTTP interface."""
    return web.Response(body=openapi.document_bytes(), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text, for admin tokens."""
    if principal_of(request).role is not Role.ADMIN:
        raise Forbidden("/metrics is for admin tokens.")
    body = await request.app[METRICS].scrape(request.app[STORE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


# client API -------------------------------------------------------------------------------------
async def submit(request: web.Request) -> web.Response:
    """``POST /<DSID>/job/``."""
    body = await read_json(request)
    wait = _wait(request)
    waited = await request.app[SERVICE].submit(
        principal_of(request), request.match_info["dsid"], body, wait
    )
    return _waited_response(waited, wait is not None)


async def job_status(request: web.Request) -> web.Response:
    """``GET /<DSID>/job/<JOBID>/``."""
    wait = _wait(request)
    if wait is None:
        text = await request.app[SERVICE].status_wire(
            principal_of(request), request.match_info["dsid"], request.match_info["job"]
        )
        return json_text_response(text)
    waited = await request.app[SERVICE].status(
        principal_of(request), request.match_info["dsid"], request.match_info["job"], wait
    )
    return _waited_response(waited, wait is not None)


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /<DSID>/job/``."""
    query = request.query
    page = await request.app[SERVICE].list_jobs(
        principal_of(request),
        request.match_info["dsid"],
        status=validation.status_filter(query.get("status")),
        limit=validation.integer(
            query.get("limit"),
            "limit",
            default=LIST_LIMIT_DEFAULT,
            minimum=1,
            maximum=LIST_LIMIT_MAX,
        ),
        cursor=query.get("cursor"),
    )
    return json_response({"jobs": [r.to_wire() for r in page.jobs], "next": page.next_cursor})


async def cancel(request: web.Request) -> web.Response:
    """``POST /<DSID>/job/<JOBID>/cancel`` and ``DELETE /<DSID>/job/<JOBID>/``."""
    record = await request.app[SERVICE].cancel(
        principal_of(request), request.match_info["dsid"], request.match_info["job"]
    )
    return json_text_response(record.wire_bytes())


# driver API -------------------------------------------------------------------------------------
async def put_datasource(request: web.Request) -> web.Response:
    """``PUT /jobs/<DSID>``."""
    body = await read_json(request)
    datasource = await request.app[SERVICE].put_datasource(
        principal_of(request), request.match_info["dsid"], body
    )
    return json_response(datasource.to_wire())


async def catalogue(request: web.Request) -> web.Response:
    """``GET /cat``."""
    entries = await request.app[SERVICE].catalogue(principal_of(request))
    return json_response({"datasources": [e.to_wire() for e in entries]})


async def update_status(request: web.Request) -> web.Response:
    """``POST /jobs/<DSID>/job/<JOBID>/``."""
    body = await read_json(request)
    record = await request.app[SERVICE].update_status(
        principal_of(request), request.match_info["dsid"], request.match_info["job"], body
    )
    return json_text_response(record.wire_bytes())


async def driver_job(request: web.Request) -> web.Response:
    """``GET /jobs/<DSID>/job/<JOBID>/``."""
    text = await request.app[SERVICE].driver_job_wire(
        principal_of(request), request.match_info["dsid"], request.match_info["job"]
    )
    return json_text_response(text)


async def latest(request: web.Request) -> web.Response:
    """``GET /jobs/<DSID>/latest``."""
    entry = await request.app[SERVICE].latest(principal_of(request), request.match_info["dsid"])
    return json_text_response(entry)


async def since(request: web.Request) -> web.Response:
    """``GET /jobs/<DSID>/since/<TIME>``: a page, with ``Link: rel="next"`` when more remain."""
    dsid = request.match_info["dsid"]
    raw_time = request.match_info["time"]
    if not raw_time.isdigit() or len(raw_time) > 18:
        raise BadRequest("The time in since/<TIME> must be milliseconds since the Unix epoch.")
    limit = validation.integer(
        request.query.get("limit"),
        "limit",
        default=STREAM_LIMIT_DEFAULT,
        minimum=1,
        maximum=STREAM_LIMIT_MAX,
    )
    after = validation.integer(
        request.query.get("after"), "after", default=0, minimum=0, maximum=2**62
    )
    page = await request.app[SERVICE].since(
        principal_of(request), dsid, int(raw_time), after=after, limit=limit
    )
    headers = None
    if page.next_after is not None:
        url = f"/jobs/{quote(dsid, safe='')}/since/{raw_time}?after={page.next_after}&limit={limit}"
        headers = {"Link": f'<{url}>; rel="next"'}
    return json_text_response(b"[" + b",".join(page.entries) + b"]", headers=headers)
