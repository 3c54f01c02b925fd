"""The one-piece JSON reply sends the bytes aiohttp's own response would send."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jobqueue_store.web.responses import JSON, JsonReply

BODY = b'{"job":"j1","status":"submitted"}'


def _app() -> web.Application:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=BODY, status=int(request.match_info["status"]), content_type=JSON)

    async def fast(request: web.Request) -> web.Response:
        return JsonReply(BODY, int(request.match_info["status"]))

    app = web.Application()
    app.router.add_route("*", "/plain/{status}", plain)
    app.router.add_route("*", "/fast/{status}", fast)
    return app


async def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a new connection; everything the server sends until it closes or
    0.2 seconds pass without data."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 0.2):
            chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", b"".join(chunks))


@pytest.mark.parametrize("status", [200, 201, 202, 404])
@pytest.mark.parametrize(
    "request_head",
    [
        "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET {path} HTTP/1.0\r\n\r\n",
        "GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
        # Two pipelined requests: both answered, in order, on the one connection.
        "GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_same_bytes_as_aiohttp(status: int, request_head: str, aiohttp_server: Any) -> None:
    server: TestServer = await aiohttp_server(_app())
    assert server.port is not None
    plain = await _exchange(
        server.port, request_head.format(path=f"/plain/{status}").encode("latin-1")
    )
    fast = await _exchange(
        server.port, request_head.format(path=f"/fast/{status}").encode("latin-1")
    )
    assert plain.startswith(b"HTTP/1.")
    assert fast == plain


@pytest.mark.parametrize("status", [200, 201, 404, 503])
def test_built_as_aiohttp_builds_it(status: int) -> None:
    """JsonReply sets its state itself: it is the state aiohttp's constructor sets."""
    fast = JsonReply(BODY, status)
    plain = web.Response(body=BODY, status=status, content_type=JSON)
    assert {k: v for k, v in vars(fast).items() if k != "_headers"} == {
        k: v for k, v in vars(plain).items() if k != "_headers"
    }
    assert list(fast.headers.items()) == list(plain.headers.items()) == [("Content-Type", JSON)]
    assert (fast.status, fast.reason, fast.body) == (plain.status, plain.reason, plain.body)
