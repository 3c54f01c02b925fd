"""HTTP handlers of the driver API for many workers: claims, job heartbeats and the stream
worker slot. Parse, call one service method, encode."""

from __future__ import annotations

from aiohttp import web

from jobqueue_store.web.handlers import read_json
from jobqueue_store.web.keys import SERVICE, SETTINGS, principal_of
from jobqueue_store.web.responses import json_response


async def claim(request: web.Request) -> web.Response:
    """``POST /jobs/<DSID>/claim``."""
    body = await read_json(request)
    jobs = await request.app[SERVICE].claim(
        principal_of(request),
        request.match_info["dsid"],
        body,
        request.app[SETTINGS].limits.max_wait,
    )
    return json_response({"jobs": [job.to_wire() for job in jobs]})


async def heartbeat(request: web.Request) -> web.Response:
    """``POST /jobs/<DSID>/job/<JOBID>/heartbeat``."""
    body = await read_json(request)
    record = await request.app[SERVICE].heartbeat(
        principal_of(request), request.match_info["dsid"], request.match_info["job"], body
    )
    return json_response(record.to_wire())


async def take_slot(request: web.Request) -> web.Response:
    """``POST /jobs/<DSID>/worker``."""
    body = await read_json(request)
    slot = await request.app[SERVICE].take_slot(
        principal_of(request), request.match_info["dsid"], body
    )
    return json_response(slot.to_wire())


async def renew_slot(request: web.Request) -> web.Response:
    """``POST /jobs/<DSID>/worker/heartbeat``."""
    body = await read_json(request)
    slot = await request.app[SERVICE].renew_slot(
        principal_of(request), request.match_info["dsid"], body
    )
    return json_response(slot.to_wire())


async def release_slot(request: web.Request) -> web.Response:
    """``DELETE /jobs/<DSID>/worker``: 204."""
    body = await read_json(request)
    await request.app[SERVICE].release_slot(principal_of(request), request.match_info["dsid"], body)
    return web.Response(status=204)
