"""HTTP handlers of the client API for long-running jobs: update (a new revision), stop, start
and the revisions list. Parse, call one service method, encode."""

from __future__ import annotations

from aiohttp import web

from jobqueue_store.web.handlers import read_json
from jobqueue_store.web.keys import SERVICE, principal_of
from jobqueue_store.web.responses import json_response


async def revise(request: web.Request) -> web.Response:
    """``PUT /<DSID>/job/<JOBID>/``: 202 with a new revision, 200 if the request is the same."""
    body = await read_json(request)
    record, revised = await request.app[SERVICE].revise(
        principal_of(request), request.match_info["dsid"], request.match_info["job"], body
    )
    return json_response(record.to_wire(), 202 if revised else 200)


async def stop(request: web.Request) -> web.Response:
    """``POST /<DSID>/job/<JOBID>/stop``."""
    record = await request.app[SERVICE].set_desired(
        principal_of(request), request.match_info["dsid"], request.match_info["job"], "stopped"
    )
    return json_response(record.to_wire())


async def start(request: web.Request) -> web.Response:
    """``POST /<DSID>/job/<JOBID>/start``."""
    record = await request.app[SERVICE].set_desired(
        principal_of(request), request.match_info["dsid"], request.match_info["job"], "running"
    )
    return json_response(record.to_wire())


async def revisions(request: web.Request) -> web.Response:
    """``GET /<DSID>/job/<JOBID>/revisions``: every revision, oldest first."""
    revs = await request.app[SERVICE].revisions(
        principal_of(request), request.match_info["dsid"], request.match_info["job"]
    )
    return json_response({"revisions": [rev.to_wire() for rev in revs]})
