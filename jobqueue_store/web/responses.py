"""JSON responses and the one table from exception to error body (protocol.md §3)."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.web_request import BaseRequest

from jobqueue_store import codec
from jobqueue_store.errors import StoreError, TooMany

JSON = "application/json"

_HEAD = b"\r\nContent-Type: application/json\r\nContent-Length: "
_SERVER = f"\r\nServer: {SERVER_SOFTWARE}\r\n".encode("latin-1")
_CONNECTION = {
    # (HTTP version, keep the connection): the Connection header aiohttp would send
    (HttpVersion11, True): b"",
    (HttpVersion11, False): b"Connection: close\r\n",
    (HttpVersion10, True): b"Connection: keep-alive\r\n",
    (HttpVersion10, False): b"",
}


class JsonReply(web.Response):
    """A JSON reply whose only headers are those every reply carries, sent in one write.

    aiohttp prepares a response through several layers (headers into a multidict, a hook, a
    serializer, then the body); for the store's replies, whose headers are always the same four,
    that costs more than building the reply. The bytes are those aiohttp would send (a test
    compares them); anything unusual (HEAD, an empty-body status, compression, cookies, another
    header, a handler of ``on_response_prepare``) goes aiohttp's own way.
    """

    __slots__ = ()

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        """Send the status line, headers and body, or leave it to aiohttp."""
        writer = request._payload_writer
        version = request.version
        keep_alive = request.keep_alive if self._keep_alive is None else self._keep_alive
        connection = _CONNECTION.get((version, keep_alive))
        match_info = getattr(request, "_match_info", None)
        body = self._body
        if (
            not isinstance(body, bytes | bytearray)
            or connection is None
            or match_info is None
            or self._eof_sent
            or self._payload_writer is not None
            or request.method == "HEAD"
            or self._status < 200
            or self._status in (204, 304)
            or self._compression
            or self._cookies
            or self._chunked
            or len(self._headers) != 1
            or self._headers.get("Content-Type") != JSON
            or not isinstance(writer, StreamWriter)
            or writer.output_size
            or any(app.on_response_prepare for app in match_info.apps)
        ):
            return await super().prepare(request)
        self._keep_alive = keep_alive
        status_line = f"HTTP/1.{version.minor} {self._status} {self._reason}"
        writer._write(
            b"".join(
                (
                    status_line.encode("latin-1"),
                    _HEAD,
                    b"%d\r\nDate: " % len(body),
                    rfc822_formatted_time().encode("latin-1"),
                    _SERVER,
                    connection,
                    b"\r\n",
                    body,
                )
            )
        )
        self._eof_sent = True
        self._body_length = writer.output_size
        await writer.drain()
        return writer


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
        return JsonReply(body=text, status=status, content_type=JSON)
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
