"""The HTTP server under the application: connection timeouts, a cap on open connections, JSON
answers to requests the HTTP parser refuses, and a shutdown that answers what it has read.

aiohttp's ``RequestHandler`` (one per connection) holds a connection for as long as its peer
likes before a request is complete, answers parser errors in plain text that echoes the
offending line, logs them with a traceback, and on shutdown drops requests that arrive on
kept-alive connections. :class:`StoreRequestHandler` changes those four things:

- a per-connection watchdog (one timer) closes a connection whose request line and headers are
  not complete ``header_timeout`` seconds after the connection opened or the request's first
  byte arrived, and answers ``408`` to a body that is not complete ``body_timeout`` seconds plus
  one second per ``body_min_rate`` bytes after its headers; aiohttp's own keep-alive timer
  closes connections idle between requests. Upgraded connections (websockets) have no
  watchdog: their limits are the websocket ones;
- a connection beyond ``max_open_connections`` is answered ``503`` and closed;
- parser errors are answered with the JSON error body (400, 414 or 431) and logged once, on one
  line, at INFO, without the request's bytes;
- :meth:`StoreServer.start_draining` makes every later response carry ``Connection: close`` and
  closes connections idle for a short grace, so a request that was read is always answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_server import Server

from jobqueue_store import codec
from jobqueue_store.config import Limits
from jobqueue_store.errors import (
    BadRequest,
    HeadersTooLarge,
    RequestTimeout,
    StoreError,
    Unavailable,
    UriTooLong,
)
from jobqueue_store.web.dispatch import Dispatcher
from jobqueue_store.web.responses import error_body, error_response, json_response

log = logging.getLogger("jobqueue_store.http")

LINGER = 0.5
"""Seconds a connection answered with an error before any request keeps reading (and
discarding) its input before it is closed."""

MAX_LINGERING = 1024
"""Connections lingering at once; beyond, they are closed at once."""

CLOSE_BATCH = 32
"""Timed-out connections closed per event loop iteration."""

DRAIN_GRACE = 0.5
"""Seconds a connection idle when shutdown starts is kept open for a request already sent."""

_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


def raw_error(exc: StoreError) -> bytes:
    """A complete ``Connection: close`` HTTP response with the JSON error body of ``exc``, for a
    connection that has no request to answer through aiohttp."""
    body = codec.dumps(error_body(exc.code, exc.message))
    head = (
        f"HTTP/1.1 {exc.status} {_REASONS.get(exc.status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class StoreRequestHandler(RequestHandler):
    """aiohttp's connection protocol with the store's timeouts, cap, errors and drain."""

    __slots__ = (
        "_jq_body",
        "_jq_body_deadline",
        "_jq_draining",
        "_jq_header_deadline",
        "_jq_limits",
        "_jq_line_done",
        "_jq_line_length",
        "_jq_lingering",
        "_jq_partial",
        "_jq_timer",
        "close_after_response",
    )

    def __init__(self, manager: Server, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._jq_limits = limits
        self._jq_timer: asyncio.TimerHandle | None = None
        self._jq_header_deadline: float | None = None
        self._jq_partial = False
        self._jq_line_length = 0
        self._jq_line_done = False
        self._jq_body: StreamReader | None = None
        self._jq_body_deadline = 0.0
        self._jq_draining = False
        self.close_after_response = False
        """Answer the next responses with ``Connection: close`` (draining, or a body timeout);
        :class:`~jobqueue_store.web.dispatch.Dispatcher` reads it."""
        self._jq_lingering = False

    # -- connection life -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accept the connection, or answer 503 if this process holds too many."""
        super().connection_made(transport)
        manager = self._manager
        if isinstance(manager, StoreServer) and manager.open_count > manager.max_connections:
            manager.refused()
            self._write_and_close(
                Unavailable(
                    "The store has too many open connections; retry later or on another "
                    "store process."
                )
            )
            return
        self._stop_idle_timer()  # the header timeout governs the first request
        self._jq_header_deadline = self._loop.time() + self._jq_limits.header_timeout
        self._arm(self._jq_header_deadline)

    def _stop_idle_timer(self) -> None:
        """Cancel aiohttp's keep-alive timer: a request is coming, under the header timeout.
        aiohttp arms it again after the response."""
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the watchdog with the connection."""
        if self._jq_timer is not None:
            self._jq_timer.cancel()
            self._jq_timer = None
        if self._jq_lingering and isinstance(self._manager, StoreServer):
            self._jq_lingering = False
            self._manager.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data`` as aiohttp does, keeping the deadlines of the request being read."""
        if self._force_close or self._close or self._payload_parser is not None or self._upgraded:
            super().data_received(data)
            return
        body = self._jq_body
        starting = bool(data) and (body is None or body.is_eof())
        if starting:
            self._jq_body = None
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed and self._messages:
            # Headers complete; most requests arrive whole, in one chunk, and need no header clock.
            message, payload = self._messages[-1]
            if starting and not isinstance(message, RawRequestMessage):
                # Refused by the parser: the request line's length decides between 414 and 431.
                if not self._jq_partial:
                    self._jq_line_length = 0
                    self._jq_line_done = False
                self._track_line(data)
            self._request_parsed(message, payload)
        elif starting:
            if not self._jq_partial:  # the first bytes of a request whose headers are incomplete
                self._jq_partial = True
                self._jq_line_length = 0
                self._jq_line_done = False
                if self._jq_header_deadline is None:
                    self._jq_header_deadline = self._loop.time() + self._jq_limits.header_timeout
                    self._arm(self._jq_header_deadline)
                # aiohttp's keep-alive timer must not close the connection under a request that
                # is arriving: its close time moves past the header deadline (a timer that fires
                # early re-arms itself; cancelling and re-creating it costs every request).
                self._next_keepalive_close_time = self._jq_header_deadline + 1.0
            self._track_line(data)

    def _track_line(self, data: bytes) -> None:
        """Count the request line's bytes until its end arrives."""
        if not self._jq_line_done:
            end = data.find(b"\n")
            self._jq_line_length += len(data) if end < 0 else end
            self._jq_line_done = end >= 0

    def _request_parsed(self, message: object, payload: StreamReader) -> None:
        """Headers complete: the header clock stops, the body clock starts if a body follows."""
        self._jq_partial = False
        self._jq_header_deadline = None
        if not isinstance(message, RawRequestMessage) or payload.is_eof():
            return
        limits = self._jq_limits
        length = limits.max_body
        declared = message.headers.get("Content-Length", "")
        if declared.isdigit():
            length = min(int(declared), limits.max_body)
        self._jq_body = payload
        self._jq_body_deadline = (
            self._loop.time() + limits.body_timeout + length / max(1, limits.body_min_rate)
        )
        self._arm(self._jq_body_deadline)

    # -- the watchdog ----------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        timer = self._jq_timer
        if timer is not None:
            if timer.when() <= when:
                return  # it fires first and re-arms for the later deadline
            timer.cancel()
        self._jq_timer = self._loop.call_at(when, self._watch)

    def _watch(self) -> None:
        self._jq_timer = None
        if self.transport is None or self._upgraded or self._payload_parser is not None:
            return
        now = self._loop.time()
        following: list[float] = []
        deadline = self._jq_header_deadline
        if deadline is not None:
            if now >= deadline:
                self._header_timeout()
                return
            following.append(deadline)
        body = self._jq_body
        if body is not None and not body.is_eof():
            if now >= self._jq_body_deadline:
                self._body_timeout(body)
                return
            following.append(self._jq_body_deadline)
        if following:
            self._arm(min(following))

    def _header_timeout(self) -> None:
        self._jq_header_deadline = None
        log.debug("closing a connection whose request headers did not arrive in time")
        if self._request_in_progress or self._messages:
            self.close()  # answer what is being handled, then close
            return
        error = None
        if self._jq_partial:
            error = RequestTimeout(
                f"The request headers did not arrive within "
                f"{self._jq_limits.header_timeout:g} seconds; the connection is closed."
            )
        manager = self._manager
        if isinstance(manager, StoreServer):
            manager.close_later(self, error)
        else:
            self._write_and_close(error)

    def _body_timeout(self, body: StreamReader) -> None:
        self._jq_body = None
        log.debug("closing a connection whose request body did not arrive in time")
        if not self._request_in_progress:
            self.force_close()
            return
        # The handler reading the body gets the error and answers it; no lingering read of the
        # rest, and the connection closes after the answer.
        self._lingering_time = 0.0
        self.close_after_response = True
        body.set_exception(
            RequestTimeout(
                "The request body did not arrive in time (it must come at "
                f"{self._jq_limits.body_min_rate} bytes per second or faster); it was not "
                "processed."
            )
        )

    def _write_and_close(self, exc: StoreError | None) -> None:
        """Send the error reply to no request (if any), then close.

        The peer may be sending a request right now: closing a socket with unread input resets
        the connection, and the peer would see the reset rather than the reply. So after a reply
        the store stops sending (FIN), discards what comes for :data:`LINGER` seconds, then
        closes; a bounded number of connections linger at once, the rest close at once."""
        transport = self.transport
        if transport is None:
            return
        manager = self._manager
        if (
            exc is None
            or not isinstance(manager, StoreServer)
            or manager.lingering >= MAX_LINGERING
            or not transport.can_write_eof()
        ):
            if exc is not None:
                transport.write(raw_error(exc))
            self.force_close()
            return
        transport.write(raw_error(exc))
        transport.write_eof()
        self._close = True  # input is discarded from now on
        self._jq_lingering = True
        manager.lingering += 1
        self._loop.call_later(LINGER, self.force_close)

    # -- answers ---------------------------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """The JSON error reply to a request the parser refused (or a failure inside aiohttp),
        logged on one bounded line without the request's bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response was partly sent; the connection is closed")
        if status >= 500:
            self.logger.error("error handling a request", exc_info=exc)
            resp = json_response(
                error_body("internal", "The store failed to handle this request; it was logged."),
                500,
            )
        else:
            error = self._parser_error(exc)
            log.info(
                "refused a malformed request from %s: %d %s",
                request.remote,
                error.status,
                type(exc).__name__ if exc is not None else "error",
            )
            resp = error_response(error)
        resp.force_close()
        return resp

    def _parser_error(self, exc: BaseException | None) -> StoreError:
        if isinstance(exc, LineTooLong):
            if self._jq_line_length > self.max_line_size:
                return UriTooLong(
                    f"The request line is longer than the store accepts ({self.max_line_size} "
                    "bytes): shorten the URL."
                )
            return HeadersTooLarge(
                f"A request header is longer than the store accepts ({self.max_field_size} "
                "bytes): send shorter headers."
            )
        if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
            return HeadersTooLarge(
                f"The request has more headers than the store accepts ({self.max_headers}): "
                "send fewer headers."
            )
        return BadRequest(
            "The request is not valid HTTP/1.1 (its request line, a header or its "
            "Content-Length is malformed); it was not processed."
        )

    # -- shutdown --------------------------------------------------------------------------

    def start_draining(self, grace: float) -> None:
        """From now on every response closes its connection; if no request is under way in
        ``grace`` seconds, close the connection. Websockets are left to the application."""
        self._jq_draining = True
        self.close_after_response = True
        if not (self._upgraded or self._payload_parser is not None):
            self._loop.call_later(grace, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.transport is None or self._upgraded or self._payload_parser is not None:
            return
        body = self._jq_body
        if (
            not self._request_in_progress
            and not self._messages
            and not self._jq_partial
            and (body is None or body.is_eof())
        ):
            self.force_close()


class StoreServer(Server):
    """aiohttp's server making :class:`StoreRequestHandler` connections."""

    def __init__(self, handler: Any, *, limits: Limits, max_connections: int, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.max_connections = max_connections
        self.refused_count = 0
        self.lingering = 0
        """Connections answered with an error, waiting to be closed."""
        self._closing: deque[tuple[StoreRequestHandler, StoreError | None]] = deque()
        self._closer: asyncio.Handle | None = None

    @property
    def open_count(self) -> int:
        """Connections open in this process."""
        return len(self._connections)

    def refused(self) -> None:
        """Count a connection refused for the cap; log it now and then, not every time."""
        if self.refused_count % 1000 == 0:
            log.warning(
                "refusing connections: %d open, the limit is %d (--max-open-connections)",
                self.open_count - 1,
                self.max_connections,
            )
        self.refused_count += 1

    def close_later(self, connection: StoreRequestHandler, error: StoreError | None) -> None:
        """Close a timed-out ``connection`` (after sending ``error``) soon. Thousands of
        connections opened together time out together: they are closed :data:`CLOSE_BATCH` per
        loop iteration, so that requests being served are not held up behind them."""
        self._closing.append((connection, error))
        if self._closer is None:
            self._closer = self._loop.call_soon(self._close_some)

    def _close_some(self) -> None:
        for _ in range(min(CLOSE_BATCH, len(self._closing))):
            connection, error = self._closing.popleft()
            connection._write_and_close(error)
        self._closer = self._loop.call_soon(self._close_some) if self._closing else None

    def __call__(self) -> StoreRequestHandler:
        return StoreRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)

    def start_draining(self, grace: float = DRAIN_GRACE) -> None:
        """Answer what has been read, with ``Connection: close``; close idle connections."""
        for connection in list(self._connections):
            if isinstance(connection, StoreRequestHandler):
                connection.start_draining(grace)

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until every connection is closed, at most ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Connections leave the table through aiohttp's own callbacks: poll it.
        while self._connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return not self._connections


class StoreRunner(web.AppRunner):
    """An ``AppRunner`` serving with :class:`StoreServer` and shutting down by draining: stop
    listening, answer every request already read (``Connection: close``), run the
    application's shutdown (websockets closed with 1001, waits ended), then clean up."""

    def __init__(
        self, app: web.Application, *, limits: Limits, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self._jq_limits = limits
        self._jq_max_connections = max_connections
        self._jq_shut_down = False

    async def _make_server(self) -> Server:
        plain = await super()._make_server()  # freezes the application: its routes are final
        return StoreServer(
            Dispatcher(self.app),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            limits=self._jq_limits,
            max_connections=self._jq_max_connections,
            **plain._kwargs,
        )

    async def shutdown(self) -> None:
        """The application's shutdown, once."""
        if not self._jq_shut_down:
            self._jq_shut_down = True
            await super().shutdown()

    async def cleanup(self) -> None:
        """Drain, then aiohttp's cleanup for whatever is left."""
        server = self.server
        for site in list(self.sites):
            await site.stop()
        if isinstance(server, StoreServer):
            await asyncio.sleep(0)  # connections accepted just before: let them start
            server.start_draining()
            await self.shutdown()
            await server.wait_drained(self._shutdown_timeout)
        await super().cleanup()
