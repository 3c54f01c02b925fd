"""Schedules as the store's callers see them: who may do what (section 10 of the wire contract).

One method per endpoint, called by :mod:`jobqueue_store.web.schedule_handlers` with the caller's
verified :class:`~jobqueue_store.auth.Principal`. The rules that decide a change against the
stored schedule live in :mod:`jobqueue_store.schedules` and run inside the store's transaction.
A client sees and changes only its own schedules and their runs; an admin sees every client's.
"""

from __future__ import annotations

from typing import Any

from jobqueue_store import schedules, validation
from jobqueue_store.auth import Principal
from jobqueue_store.errors import BadRequest, Forbidden, NotFound
from jobqueue_store.models import JobPage, JobRecord, Role
from jobqueue_store.schedules import ScheduleAction, SchedulePage, ScheduleRecord
from jobqueue_store.service import JobService, _require_role


def schedule_id(value: str) -> str:
    """``value`` if it is a valid schedule id (in a path), else ``BadRequest``."""
    if not schedules.SCHEDULE_ID_RE.fullmatch(value):
        raise BadRequest(
            f"The schedule id must be 1 to 100 characters of A-Z a-z 0-9 . _ ~ : -, not {value!r}."
        )
    return value


class ScheduleService:
    """Schedule operations over a :class:`~jobqueue_store.service.JobService`'s store."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store

    async def create(
        self, principal: Principal, dsid: str, body: Any
    ) -> tuple[ScheduleRecord, bool]:
        """``POST /<DSID>/schedule/``: ``(record, created)``."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        spec = schedules.schedule_submission(body)
        client = self.jobs._submitting_client(principal, spec.client)
        datasource = await self.jobs._datasource(dsid)
        self.jobs._request_validators.validate(datasource, spec.request)
        return await self.store.create_schedule(dsid, spec, client)

    async def get(self, principal: Principal, dsid: str, sid: str) -> ScheduleRecord:
        """``GET /<DSID>/schedule/<ID>/``: the caller's schedule (deleted ones too)."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        schedule_id(sid)
        await self.jobs._datasource(dsid)
        record = await self.store.get_schedule(dsid, sid)
        if record is None:
            raise NotFound(f"No schedule '{sid}' on datasource '{dsid}'.")
        if principal.role is Role.CLIENT and record.client != principal.client:
            raise Forbidden(f"Schedule '{sid}' belongs to another client.")
        return record

    async def list(
        self, principal: Principal, dsid: str, *, limit: int, cursor: str | None
    ) -> SchedulePage:
        """``GET /<DSID>/schedule/``: the caller's schedules, newest first (an admin's: all)."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        await self.jobs._datasource(dsid)
        client = principal.client if principal.role is Role.CLIENT else None
        return await self.store.list_schedules(dsid, client, limit=limit, cursor=cursor)

    async def runs(
        self, principal: Principal, dsid: str, sid: str, *, limit: int, cursor: str | None
    ) -> JobPage:
        """``GET /<DSID>/schedule/<ID>/runs``: the schedule's runs, newest first."""
        await self.get(principal, dsid, sid)
        return await self.store.list_runs(dsid, sid, limit=limit, cursor=cursor)

    async def change(
        self, principal: Principal, dsid: str, sid: str, action: ScheduleAction
    ) -> ScheduleRecord:
        """``POST .../pause``, ``POST .../resume``, ``DELETE /<DSID>/schedule/<ID>/``."""
        await self.get(principal, dsid, sid)
        return await self.store.change_schedule(dsid, sid, action)

    async def cancel_run(self, principal: Principal, dsid: str, sid: str, job: str) -> JobRecord:
        """``DELETE /<DSID>/schedule/<ID>/run/<JOBID>/``: cancel one run of the schedule."""
        await self.get(principal, dsid, sid)
        validation.job_id(job)
        record = await self.store.get_job(dsid, job)
        if record is None or record.schedule != sid:
            raise NotFound(f"Schedule '{sid}' has no run '{job}'.")
        return await self.jobs.cancel(principal, dsid, job)
