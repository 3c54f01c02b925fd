"""The one middleware: token authentication, errors to JSON bodies (one table), the audit log.

One layer rather than a chain: every request pays for each middleware layer it passes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import MatchInfoError, UrlMappingMatchInfo

from jobqueue_store import audit
from jobqueue_store.auth import Principal, extract_token
from jobqueue_store.errors import StoreError, Unauthorized
from jobqueue_store.models import Role
from jobqueue_store.web import ui
from jobqueue_store.web.keys import AUTHORITY, METRICS, PRINCIPAL
from jobqueue_store.web.responses import (
    error_body,
    error_response,
    http_error_response,
    json_response,
)

log = logging.getLogger("jobqueue_store.web")

OPEN_ROUTES = frozenset({"healthz", "readyz"}) | ui.OPEN_ROUTE_NAMES
WEBSOCKET_ROUTES = frozenset({"sub_client", "sub_driver"})


@web.middleware
async def store_middleware(
    request: web.Request, handler: Handler, app: web.Application | None = None
) -> web.StreamResponse:
    """Authenticate, run the handler, answer every failure with the protocol's error body; count the
    reply; audit every write. ``app``: the request's application, when the caller has it (the
    dispatcher): ``request.app`` takes three Python calls."""
    code: str | None = None
    started = time.perf_counter()
    match = request.match_info
    name = match.route.name
    if app is None:
        app = request.app
    metrics = app[METRICS]
    principal: Principal | None = None
    try:
        principal = authenticate(request, match, name, app)
        around = None
        if principal is not None and principal.role is Role.DRIVER:
            around = metrics.presence(name, _path(request), match.get("dsid"), principal)
        if around is None:
            response = await handler(request)
        else:
            with around:
                response = await handler(request)
    except StoreError as exc:
        response = error_response(exc)
        code = exc.code
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response, code = http_error_response(exc)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.rel_url.path)
        code = "internal"
        response = json_response(
            error_body(code, "The store failed to handle this request; it was logged."),
            500,
        )
    status = response.status
    method = request.method
    metrics.count_request(method, name or "unmatched", status, time.perf_counter() - started)
    if method in audit.WRITE_METHODS:
        audit.emit(request, status, code, principal)
    return response


def is_plain_path(path: str) -> bool:
    """Whether aiohttp leaves ``path`` (a request line's path, without the query) as it is: no
    percent-escapes, dot segments, fragment or characters other than ASCII to normalise."""
    return not ("%" in path or "/." in path or "#" in path) and path.isascii()


def _path(request: web.Request) -> str:
    """``request.path``, without building a URL (about 1 us) when the request line's path is
    already that (:func:`is_plain_path`; the query cut off)."""
    raw = request.raw_path.partition("?")[0]
    return raw if is_plain_path(raw) else request.path


def authenticate(
    request: web.Request,
    match: UrlMappingMatchInfo | None = None,
    name: str | None = None,
    app: web.Application | None = None,
) -> Principal | None:
    """Verify the caller's token and the request-dependent caveats; set ``request[PRINCIPAL]``
    and return the principal (``None`` for a route that needs no token).

    Open routes (health) and unmatched paths (404/405 follow) need no token. ``match``, ``name``
    and ``app`` are the request's match info, route name and application, when the caller has
    them already.
    """
    if match is None:
        match = request.match_info
        name = match.route.name
    # The exact type first: isinstance() on aiohttp's match info classes (ABCs) runs Python.
    if name in OPEN_ROUTES or (
        type(match) is not UrlMappingMatchInfo and isinstance(match, MatchInfoError)
    ):
        return None
    # Only websockets take the token from the query: other requests never parse theirs here.
    allow_query = name in WEBSOCKET_ROUTES
    token = extract_token(request.headers, request.query if allow_query else {}, allow_query)
    if not token:
        raise Unauthorized(
            "This endpoint needs a token: send 'Authorization: Bearer <token>' "
            "(or 'X-Api-Key: <token>'); mint one with 'jobqueue-store token'."
        )
    authority = (request.app if app is None else app)[AUTHORITY]
    principal = authority.verify(token)
    authority.authorize(
        principal, method=request.method, path=request.raw_path, dsid=match.get("dsid")
    )
    request[PRINCIPAL] = principal
    return principal
