"""JSON responses and the one table from exception to error body (protocol.md §3)."""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from jobqueue_store import codec
from jobqueue_store.errors import StoreError, TooMany

JSON = "application/json"

_SERVER = f"\r\nServer: {SERVER_SOFTWARE}\r\n".encode("latin-1")
_CONNECTION = {
    # (HTTP version, keep the connection): the Connection header aiohttp would send
    (HttpVersion11, True): b"",
    (HttpVersion11, False): b"Connection: close\r\n",
    (HttpVersion10, True): b"Connection: keep-alive\r\n",
    (HttpVersion10, False): b"",
}
_HEADS: dict[tuple[HttpVersion, int, str, bool], tuple[bytes, bytes]] = {}
"""(version, status, reason, keep-alive) -> the bytes before the length, those after the date."""
_EMPTY_BODY_STATUSES = frozenset({204, 304})
_date = [0, b""]


def _head(version: HttpVersion, status: int, reason: str, keep_alive: bool) -> tuple[bytes, bytes]:
    key = (version, status, reason, keep_alive)
    head = _HEADS.get(key)
    if head is None:
        before = f"HTTP/{version.major}.{version.minor} {status} {reason}\r\n"
        before += f"Content-Type: {JSON}\r\nContent-Length: "
        head = (before.encode("latin-1"), _SERVER + _CONNECTION[(version, keep_alive)] + b"\r\n")
        if len(_HEADS) < 256:  # a handful of statuses in practice
            _HEADS[key] = head
    return head


def _date_bytes() -> bytes:
    """The Date header's value, as aiohttp formats it (it changes once a second)."""
    now = int(time.time())
    if now != _date[0]:
        _date[1] = rfc822_formatted_time().encode("latin-1")
        _date[0] = now
    return _date[1]  # type: ignore[return-value]


class JsonReply(web.Response):
    """A JSON reply whose only headers are those every reply carries, sent in one write.

    aiohttp prepares a response through several layers (headers into a multidict, a hook, a
    serializer, then the body); for the store's replies, whose headers are always the same four,
    that costs more than building the reply. The bytes are those aiohttp would send (a test
    compares them); anything unusual (HEAD, an empty-body status, compression, cookies, another
    header, a handler of ``on_response_prepare``, a version other than HTTP/1.0 and 1.1) goes
    aiohttp's own way.
    """

    __slots__ = ()

    def __init__(self, body: bytes, status: int = 200) -> None:
        """The reply with ``body`` (JSON text) and ``status``: the state ``web.Response(body=body,
        status=status, content_type=JSON)`` has (a test compares them), set without its checks
        of arguments the store never passes (half the cost of building a reply)."""
        headers: CIMultiDict[str] = CIMultiDict()
        headers[hdrs.CONTENT_TYPE] = JSON
        web.StreamResponse.__init__(self, status=status, _real_headers=headers)
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        """Send the status line, headers and body, or leave it to aiohttp."""
        body = self._body
        writer = request._payload_writer
        version = request.version
        if (
            type(body) is not bytes
            or self._payload_writer is not None
            or self._eof_sent
            or self._compression
            or self._cookies
            or self._chunked
            or len(self._headers) != 1
            or self._status in _EMPTY_BODY_STATUSES
            or self._status < 200
            or request.method == "HEAD"
            or (version != HttpVersion11 and version != HttpVersion10)
            or type(writer) is not StreamWriter
            or writer.output_size
            or self._headers.get("Content-Type") != JSON
            or _has_prepare_signal(request)
        ):
            return await super().prepare(request)
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        before, after = _head(version, self._status, self._reason, keep_alive)
        writer._write(b"".join((before, b"%d\r\nDate: " % len(body), _date_bytes(), after, body)))
        self._eof_sent = True
        self._body_length = writer.output_size
        await writer.drain()
        return writer


def _has_prepare_signal(request: BaseRequest) -> bool:
    match_info = getattr(request, "_match_info", None)
    if match_info is None:
        return True
    for app in match_info.apps:  # noqa: SIM110 (a loop, not any(): no generator per response)
        if app.on_response_prepare:
            return True
    return False


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``value`` encoded with orjson."""
    return json_text_response(codec.dumps(value), status, headers)


def json_text_response(
    text: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A reply whose body is ``text``, JSON already encoded (a stored record, say)."""
    if headers is None:
        return JsonReply(text, status)
    return web.Response(body=text, status=status, headers={**headers, "Content-Type": JSON})


def error_body(code: str, message: str) -> dict[str, str]:
    """The error object of protocol.md §3."""
    return {"error": message, "code": code}


def error_response(exc: StoreError) -> web.Response:
    """The JSON error reply for a store error."""
    headers: dict[str, str] | None = None
    if isinstance(exc, TooMany):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return json_response(error_body(exc.code, exc.message), exc.status, headers)


# aiohttp's own HTTP errors (no route, wrong method, body too large) mapped to protocol codes.
HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    404: (
        "not_found",
        "No such endpoint: the paths are in /ui/docs/protocol.md and /openapi.json.",
    ),
    405: ("bad_request", "This method is not allowed on this path."),
    413: ("too_large", "The request body is larger than the store accepts."),
    415: ("unsupported_media_type", "The request body must be JSON."),
}


def http_error_response(exc: web.HTTPException) -> tuple[web.Response, str]:
    """A JSON body for an aiohttp HTTP exception, keeping its status; and its error code."""
    code, message = HTTP_CODES.get(exc.status, ("bad_request", exc.reason))
    if exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"Method {exc.method} is not allowed here; use {allowed}."
    if exc.status == 413:
        message = "The request body is larger than the store accepts (default limit 1 MiB)."
    if exc.status >= 500:
        code, message = "unavailable", "The store could not answer; retry later."
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return json_response(error_body(code, message), exc.status, headers or None), code
