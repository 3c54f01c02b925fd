"""The ceiling: a bare aiohttp server whose POST handler decodes and encodes JSON with orjson.

Run: ``python -m bench.baseline PORT [--uvloop]``. It answers ``POST /<anything>/job/`` with 201
and a small JSON record, and ``GET`` likewise with 200, doing no storage and no auth.
"""

from __future__ import annotations

import sys
import time

import orjson
from aiohttp import web


async def post(request: web.Request) -> web.Response:
    """Decode the body, answer a record like a submit's."""
    body = orjson.loads(await request.read())
    now = time.time_ns() // 1_000_000
    record = {
        "job": body.get("job"),
        "client": "app",
        "datasource_id": "ds1",
        "status": "submitted",
        "request": body.get("request"),
        "cancel_requested": False,
        "version": 1,
        "submitted_at": now,
        "updated_at": now,
    }
    return web.Response(body=orjson.dumps(record), status=201, content_type="application/json")


async def get(request: web.Request) -> web.Response:
    """Answer a small record."""
    now = time.time_ns() // 1_000_000
    record = {
        "job": request.match_info.get("tail", ""),
        "status": "submitted",
        "version": 1,
        "submitted_at": now,
    }
    return web.Response(body=orjson.dumps(record), content_type="application/json")


def main() -> None:
    """Serve on the port given as the first argument."""
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", post)
    app.router.add_route("GET", "/{tail:.*}", get)
    loop_factory = None
    if "--uvloop" in sys.argv:
        import uvloop

        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        # Called once the socket listens: the ready line must not come before (a client
        # connecting at once would be refused).
        print=lambda _: print(f"baseline listening on {port}", flush=True),
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
