"""JSON responses and the one table from exception to error body (protocol.md §3)."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from jobqueue_store import codec
from jobqueue_store.errors import StoreError, TooMany

JSON = "application/json"


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
        return web.Response(body=text, status=status, content_type=JSON)
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
