"""A small keep-alive HTTP/1.1 client for load generators written in Python.

aiohttp's client spends a few hundred microseconds of Python on each request; at a few thousand
requests per second that fills the generator's core, and a generator queueing its own work adds
its delays to the latencies it reports. This client writes a request's bytes as given and reads
back only the status line, the headers it needs and a ``Content-Length`` body, on connections it
keeps open and reuses (one request at a time on each, as HTTP/1.1 clients do without pipelining).
"""

from __future__ import annotations

import asyncio
from typing import cast


class ResponseError(Exception):
    """The server's reply could not be read (the connection closed, or an unsupported reply)."""


class HttpHead:
    """The parts of a reply's head the client needs."""

    __slots__ = ("close", "length", "status")

    def __init__(self, status: int, length: int, close: bool) -> None:
        self.status = status
        self.length = length
        self.close = close


def parse_head(head: bytes) -> HttpHead:
    """The status, ``Content-Length`` and ``Connection: close`` of a reply's head (without its
    final blank line). A reply without a length (chunked, or up to the close) is refused."""
    first, _, rest = head.partition(b"\r\n")
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ResponseError(f"not an HTTP/1.x status line: {first[:80]!r}")
    length: int | None = None
    close = parts[0] == b"HTTP/1.0"
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            token = value.strip().lower()
            close = token == b"close" or (close and token != b"keep-alive")
        elif name == b"transfer-encoding":
            raise ResponseError("a chunked reply is not supported by this client")
    status = int(parts[1])
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        else:
            raise ResponseError("a reply without Content-Length is not supported by this client")
    return HttpHead(status, length, close)


class _Connection(asyncio.Protocol):
    """One connection: a request written, its reply awaited."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: HttpHead | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self._parse()
        except (ResponseError, ValueError) as exc:
            self._fail(exc if isinstance(exc, ResponseError) else ResponseError(str(exc)))

    def _parse(self) -> None:
        buffer = self.buffer
        if self.head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head = parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
        head = self.head
        if len(buffer) < head.length:
            return
        del buffer[: head.length]
        self.head = None
        waiter, self.waiter = self.waiter, None
        if head.close:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(head.status)

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ResponseError(f"the connection closed before the reply: {exc}"))

    def close(self) -> None:
        """Close the connection (it is not reused)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RawHttpPool:
    """Keep-alive connections to ``host:port``; :meth:`request` sends one request's bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    def request_bytes(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        """The bytes of a request with ``body`` (``Host`` and ``Content-Length`` added)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(self, raw: bytes) -> int:
        """Send ``raw`` (a whole request) on an idle connection, or a new one; the reply's
        status. Raises :class:`ResponseError` or ``OSError`` when there is no reply."""
        loop = asyncio.get_running_loop()
        connection = None
        while self._idle and connection is None:
            connection = self._idle.pop()
            if connection.closed:  # the server closed it while it was idle
                self._all.discard(connection)
                connection = None
        if connection is None:
            _, connection = await loop.create_connection(_Connection, self.host, self.port)
            self._all.add(connection)
        assert connection.transport is not None
        waiter: asyncio.Future[int] = loop.create_future()
        connection.waiter = waiter
        connection.transport.write(raw)
        try:
            status = await waiter
        except BaseException:
            connection.close()
            self._all.discard(connection)
            raise
        if connection.closed:
            self._all.discard(connection)
        else:
            self._idle.append(connection)
        return status

    def close(self) -> None:
        """Close every connection."""
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._idle.clear()
