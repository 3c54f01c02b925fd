"""HTTP handlers of schedules and their runs: parse, call one service method, encode."""

from __future__ import annotations

from aiohttp import web

from jobqueue_store import validation
from jobqueue_store.schedule_service import ScheduleService
from jobqueue_store.web.handlers import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, read_json
from jobqueue_store.web.keys import SERVICE, principal_of
from jobqueue_store.web.responses import json_response


def _service(request: web.Request) -> ScheduleService:
    return ScheduleService(request.app[SERVICE])


def _limit(request: web.Request) -> int:
    return validation.integer(
        request.query.get("limit"),
        "limit",
        default=LIST_LIMIT_DEFAULT,
        minimum=1,
        maximum=LIST_LIMIT_MAX,
    )


async def create(request: web.Request) -> web.Response:
    """``POST /<DSID>/schedule/``: 201 new, 200 identical repeat."""
    body = await read_json(request)
    record, created = await _service(request).create(
        principal_of(request), request.match_info["dsid"], body
    )
    return json_response(record.to_wire(), status=201 if created else 200)


async def list_schedules(request: web.Request) -> web.Response:
    """``GET /<DSID>/schedule/``."""
    page = await _service(request).list(
        principal_of(request),
        request.match_info["dsid"],
        limit=_limit(request),
        cursor=request.query.get("cursor"),
    )
    return json_response(
        {"schedules": [s.to_wire() for s in page.schedules], "next": page.next_cursor}
    )


async def get(request: web.Request) -> web.Response:
    """``GET /<DSID>/schedule/<ID>/``."""
    record = await _service(request).get(
        principal_of(request), request.match_info["dsid"], request.match_info["sid"]
    )
    return json_response(record.to_wire())


async def runs(request: web.Request) -> web.Response:
    """``GET /<DSID>/schedule/<ID>/runs``."""
    page = await _service(request).runs(
        principal_of(request),
        request.match_info["dsid"],
        request.match_info["sid"],
        limit=_limit(request),
        cursor=request.query.get("cursor"),
    )
    return json_response({"jobs": [r.to_wire() for r in page.jobs], "next": page.next_cursor})


async def pause(request: web.Request) -> web.Response:
    """``POST /<DSID>/schedule/<ID>/pause``."""
    record = await _service(request).change(
        principal_of(request), request.match_info["dsid"], request.match_info["sid"], "pause"
    )
    return json_response(record.to_wire())


async def resume(request: web.Request) -> web.Response:
    """``POST /<DSID>/schedule/<ID>/resume``."""
    record = await _service(request).change(
        principal_of(request), request.match_info["dsid"], request.match_info["sid"], "resume"
    )
    return json_response(record.to_wire())


async def delete(request: web.Request) -> web.Response:
    """``DELETE /<DSID>/schedule/<ID>/``: soft delete."""
    record = await _service(request).change(
        principal_of(request), request.match_info["dsid"], request.match_info["sid"], "delete"
    )
    return json_response(record.to_wire())


async def cancel_run(request: web.Request) -> web.Response:
    """``DELETE /<DSID>/schedule/<ID>/run/<JOBID>/``."""
    record = await _service(request).cancel_run(
        principal_of(request),
        request.match_info["dsid"],
        request.match_info["sid"],
        request.match_info["job"],
    )
    return json_response(record.to_wire())
