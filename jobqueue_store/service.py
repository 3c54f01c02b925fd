"""The job lifecycle as the store's callers see it: who may do what, and what each request does.

Handlers call one method here per request with the caller's verified :class:`Principal`. The
rules that decide a write against stored state live in :mod:`jobqueue_store.lifecycle` and run
inside the store's transaction; this module decides *who* may ask (roles, ownership, datasource
caveats), validates requests against a datasource's ``request_schema`` and implements ``?wait=``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from jobqueue_store import request_schema, validation
from jobqueue_store.auth import Principal
from jobqueue_store.errors import BadRequest, Forbidden, NotFound
from jobqueue_store.hub import Hub, Subscription, job_channel, stream_channel
from jobqueue_store.models import (
    Datasource,
    DesiredState,
    Event,
    JobPage,
    JobRecord,
    Role,
    SlotLease,
    Status,
    WorkerInfo,
)
from jobqueue_store.quota import Quotas
from jobqueue_store.revisions import Revision, history
from jobqueue_store.storage.base import Store


@dataclass(frozen=True, slots=True)
class Waited:
    """A record returned by a request that may wait: ``done`` when it is terminal."""

    record: JobRecord
    created: bool = False

    @property
    def done(self) -> bool:
        """Whether the job is in a terminal status."""
        return self.record.terminal


CLAIM_POLL_S = 1.0
"""A waiting claim tries again at least this often (a job given back becomes claimable when its
retry time passes, which no event announces)."""


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """A datasource and its workers, as ``GET /cat`` shows it."""

    datasource: Datasource
    workers: list[WorkerInfo]

    def to_wire(self) -> dict[str, Any]:
        """The catalogue item: the datasource's wire form with its ``workers``."""
        return {**self.datasource.to_wire(), "workers": [w.to_wire() for w in self.workers]}


@dataclass(frozen=True, slots=True)
class StreamPage:
    """A page of request-stream entries, and where the next one starts (``None``: no more)."""

    entries: list[bytes]
    """Each entry's JSON text (protocol.md §6)."""
    next_after: int | None


def _require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        names = " or ".join(r.value for r in roles)
        raise Forbidden(
            f"This endpoint is for {names} tokens; this token's role is {principal.role.value}."
        )


def _check_owner(principal: Principal, job: str, client: str) -> None:
    if principal.role is Role.CLIENT and client != principal.client:
        raise Forbidden(f"Job '{job}' belongs to another client.")


class JobService:
    """The store's operations, one method per endpoint."""

    def __init__(self, store: Store, hub: Hub, quotas: Quotas | None = None) -> None:
        self.store = store
        self.hub = hub
        self.quotas = quotas or Quotas()
        self._request_validators = request_schema.Validators()
        self._waits: set[Subscription] = set()
        self._stopping = False

    # shutdown -----------------------------------------------------------------------------------
    def stop_waiting(self) -> None:
        """End every ``?wait=`` now (shutdown): waiting requests answer with the current record."""
        self._stopping = True
        for sub in tuple(self._waits):
            sub.close()

    # client API ---------------------------------------------------------------------------------
    async def submit(
        self, principal: Principal, dsid: str, body: Any, wait: float | None = None
    ) -> Waited:
        """``POST /<DSID>/job/``: a new job (``created``) or the record of an idempotent retry."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        job, request, body_client = validation.job_submission(body)
        timeout = validation.submit_timeout(body)
        client = self._submitting_client(principal, body_client)
        datasource = await self._datasource(dsid)
        self._request_validators.validate(datasource, request)
        self.quotas.check_submit(client)
        await self._check_unfinished(dsid, job, client)
        if wait is None:
            record, created = await self.store.submit(dsid, job, client, request, timeout)
            return Waited(record, created)
        with self._wait_subscription(dsid, job) as sub:
            record, created = await self.store.submit(dsid, job, client, request, timeout)
            return Waited(await self._wait_terminal(sub, record, wait), created)

    async def status(
        self, principal: Principal, dsid: str, job: str, wait: float | None = None
    ) -> Waited:
        """``GET /<DSID>/job/<JOBID>/``: the caller's job, optionally long-polled."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        validation.job_id(job)
        if wait is None:
            return Waited(await self._own_job(principal, dsid, job))
        with self._wait_subscription(dsid, job) as sub:
            record = await self._own_job(principal, dsid, job)
            return Waited(await self._wait_terminal(sub, record, wait))

    async def status_wire(self, principal: Principal, dsid: str, job: str) -> bytes:
        """``GET /<DSID>/job/<JOBID>/`` without ``wait``: the caller's job record as the JSON
        text the store holds."""
        client, text = await self._stored_job(principal, dsid, job, Role.CLIENT, Role.ADMIN)
        _check_owner(principal, job, client)
        return text

    async def list_jobs(
        self,
        principal: Principal,
        dsid: str,
        *,
        status: Status | None,
        limit: int,
        cursor: str | None,
    ) -> JobPage:
        """``GET /<DSID>/job/``: the caller's jobs, newest first (an admin's: everyone's)."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        await self._datasource(dsid)
        client = principal.client if principal.role is Role.CLIENT else None
        return await self.store.list_jobs(dsid, client, status=status, limit=limit, cursor=cursor)

    async def cancel(self, principal: Principal, dsid: str, job: str) -> JobRecord:
        """``POST .../cancel`` or ``DELETE``: request cancellation of the caller's job."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        validation.job_id(job)
        await self._datasource(dsid)
        client = principal.client if principal.role is Role.CLIENT else None
        return await self.store.cancel(dsid, job, client)

    # long-running jobs --------------------------------------------------------------------------
    async def revise(
        self, principal: Principal, dsid: str, job: str, body: Any
    ) -> tuple[JobRecord, bool]:
        """``PUT /<DSID>/job/<JOBID>/``: a new revision of the caller's job (``True``), or its
        record unchanged when the request is the current one."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        validation.job_id(job)
        request, rollback = validation.revision_body(body)
        datasource = await self._datasource(dsid)
        self._request_validators.validate(datasource, request)
        client = principal.client if principal.role is Role.CLIENT else None
        if client is not None:
            self.quotas.check_submit(client)
            await self._check_reopen(dsid, job, client)
        return await self.store.revise(dsid, job, client, request, rollback)

    async def _check_reopen(self, dsid: str, job: str, client: str) -> None:
        """An update that reopens a finished job counts against the unfinished-jobs quota."""
        if self.quotas.max_unfinished_jobs <= 0:
            return
        record = await self.store.get_job(dsid, job)
        if record is None or not record.terminal or record.client != client:
            return  # the store answers: 404, 403, or a live job that stays one
        unfinished = await self.store.count_unfinished(dsid, client)
        if unfinished >= self.quotas.max_unfinished_jobs:
            self.quotas.check_unfinished(client, dsid, unfinished)

    async def set_desired(
        self, principal: Principal, dsid: str, job: str, state: DesiredState
    ) -> JobRecord:
        """``POST .../stop`` (``"stopped"``) or ``.../start`` (``"running"``)."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        validation.job_id(job)
        await self._datasource(dsid)
        client = principal.client if principal.role is Role.CLIENT else None
        return await self.store.set_desired(dsid, job, client, state)

    async def revisions(self, principal: Principal, dsid: str, job: str) -> list[Revision]:
        """``GET .../revisions``: every revision of the caller's job, oldest first."""
        _require_role(principal, Role.CLIENT, Role.ADMIN)
        validation.job_id(job)
        await self._own_job(principal, dsid, job)
        return history(await self.store.job_events(dsid, job))

    # driver API ---------------------------------------------------------------------------------
    async def put_datasource(self, principal: Principal, dsid: str, body: Any) -> Datasource:
        """``PUT /jobs/<DSID>``: declare or update a datasource."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        validation.datasource_id(dsid)
        description, schema = validation.datasource_body(body)
        settings = validation.datasource_settings(body)
        if schema is not None:
            request_schema.check(schema)
        return await self.store.put_datasource(Datasource(dsid, description, schema, **settings))

    async def catalogue(self, principal: Principal) -> list[CatalogueEntry]:
        """``GET /cat``: the datasources the token may use, each with its workers."""
        datasources = await self.store.list_datasources()
        return [
            CatalogueEntry(d, await self.store.workers(d.id))
            for d in datasources
            if principal.allows_dsid(d.id)
        ]

    # leases and the worker slot -----------------------------------------------------------------
    async def claim(
        self, principal: Principal, dsid: str, body: Any, max_wait: float = 60.0
    ) -> list[JobRecord]:
        """``POST /jobs/<DSID>/claim``: up to ``max`` jobs, waiting up to ``wait`` seconds (at
        most ``max_wait``, the store's limit) for one. A new request-stream entry (a submit on
        any store process) wakes the wait."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        worker, max_jobs, wait = validation.claim_body(body)
        wait = min(wait, max_wait)
        await self._datasource(dsid)
        if wait <= 0:
            return await self.store.claim(dsid, worker, max_jobs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # Subscribed before the first try: a submit committed after it cannot be missed.
        sub = self._stream_subscription(dsid)
        try:
            while True:
                jobs = await self.store.claim(dsid, worker, max_jobs)
                remaining = deadline - loop.time()
                if jobs or remaining <= 0 or self._stopping:
                    return jobs
                await sub.wait(min(remaining, CLAIM_POLL_S))
                if self._stopping:  # shutting down: answer now, with nothing claimed
                    return []
                sub.drain()
                if sub.overflowed:
                    self._waits.discard(sub)
                    sub.close()
                    sub = self._stream_subscription(dsid)
        finally:
            self._waits.discard(sub)
            sub.close()

    async def heartbeat(self, principal: Principal, dsid: str, job: str, body: Any) -> JobRecord:
        """``POST /jobs/<DSID>/job/<JOBID>/heartbeat``: renew a job's lease."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        validation.job_id(job)
        lease, _ = validation.lease_body(body)
        await self._datasource(dsid)
        return await self.store.heartbeat(dsid, job, lease)

    async def take_slot(self, principal: Principal, dsid: str, body: Any) -> SlotLease:
        """``POST /jobs/<DSID>/worker``: take the stream datasource's worker slot."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        worker = validation.worker_take_body(body)
        await self._datasource(dsid)
        return await self.store.take_slot(dsid, worker)

    async def renew_slot(self, principal: Principal, dsid: str, body: Any) -> SlotLease:
        """``POST /jobs/<DSID>/worker/heartbeat``: renew the slot, store the resume point."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        lease, resume = validation.lease_body(body, resume=True)
        await self._datasource(dsid)
        return await self.store.renew_slot(dsid, lease, resume)

    async def release_slot(self, principal: Principal, dsid: str, body: Any) -> None:
        """``DELETE /jobs/<DSID>/worker``: free the slot."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        lease, _ = validation.lease_body(body)
        await self._datasource(dsid)
        await self.store.release_slot(dsid, lease)

    async def update_status(
        self, principal: Principal, dsid: str, job: str, body: Any
    ) -> JobRecord:
        """``POST /jobs/<DSID>/job/<JOBID>/``: a driver's status report."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        validation.job_id(job)
        update = validation.status_update(body)
        await self._datasource(dsid)
        return await self.store.update_status(dsid, job, update)

    async def driver_job_wire(self, principal: Principal, dsid: str, job: str) -> bytes:
        """``GET /jobs/<DSID>/job/<JOBID>/``: any job of the datasource, as the JSON text the
        store holds."""
        _, text = await self._stored_job(principal, dsid, job, Role.DRIVER, Role.ADMIN)
        return text

    async def latest(self, principal: Principal, dsid: str) -> bytes:
        """``GET /jobs/<DSID>/latest``: the newest request-stream entry, as JSON text."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        await self._datasource(dsid)
        entry = await self.store.latest_entry_wire(dsid)
        if entry is None:
            raise NotFound(f"The request stream of datasource '{dsid}' is empty.")
        return entry

    async def since(
        self, principal: Principal, dsid: str, timestamp: int, *, after: int, limit: int
    ) -> StreamPage:
        """``GET /jobs/<DSID>/since/<TIME>``: a page of the request stream, oldest first, as
        the entries' JSON texts."""
        _require_role(principal, Role.DRIVER, Role.ADMIN)
        await self._datasource(dsid)
        rows = await self.store.entries_since_wire(
            dsid, timestamp, after_seq=after, limit=limit + 1
        )
        if len(rows) > limit:
            del rows[limit:]
            return StreamPage([text for _, text in rows], rows[-1][0])
        return StreamPage([text for _, text in rows], None)

    # subscriptions (the websocket layer's checks) -----------------------------------------------
    async def authorize_subscription(
        self, principal: Principal, dsid: str, *, driver: bool
    ) -> None:
        """Raise unless ``principal`` may subscribe to ``dsid`` (driver stream or client view)."""
        if driver:
            _require_role(principal, Role.DRIVER, Role.ADMIN)
        else:
            _require_role(principal, Role.CLIENT, Role.ADMIN)
        await self._datasource(dsid)

    # helpers ------------------------------------------------------------------------------------
    def _submitting_client(self, principal: Principal, body_client: str | None) -> str:
        if principal.role is Role.CLIENT:
            assert principal.client is not None
            if body_client is not None and body_client != principal.client:
                raise Forbidden(
                    f"\"client\" is '{body_client}' but this token is for client "
                    f"'{principal.client}': leave \"client\" out or make it match."
                )
            return principal.client
        if body_client is None:
            raise BadRequest('An admin submitting a job must name its "client".')
        return validation.client_id(body_client)

    async def _check_unfinished(self, dsid: str, job: str, client: str) -> None:
        """Refuse a new job (429) when ``client`` holds the most unfinished jobs allowed.

        Checked before the write, so concurrent submits may overshoot the limit by the number in
        flight. A retry of a job already stored is let through: the store answers it (200 for
        the same request, 409 otherwise) and it adds nothing.
        """
        if self.quotas.max_unfinished_jobs <= 0:
            return
        unfinished = await self.store.count_unfinished(dsid, client)
        if unfinished >= self.quotas.max_unfinished_jobs:
            if await self.store.get_job(dsid, job) is not None:
                return
            self.quotas.check_unfinished(client, dsid, unfinished)

    async def _datasource(self, dsid: str) -> Datasource:
        datasource = await self.store.get_datasource(dsid)
        if datasource is None:
            raise NotFound(
                f"Datasource '{dsid}' is not declared: its driver declares it with "
                f"PUT /jobs/{dsid}."
            )
        return datasource

    async def _stored_job(
        self, principal: Principal, dsid: str, job: str, *roles: Role
    ) -> tuple[str, bytes]:
        """The owner and stored record text of ``job``, for a caller of one of ``roles``."""
        _require_role(principal, *roles)
        validation.job_id(job)
        await self._datasource(dsid)
        found = await self.store.get_job_wire(dsid, job)
        if found is None:
            raise NotFound(f"No job '{job}' on datasource '{dsid}'.")
        return found

    async def _own_job(self, principal: Principal, dsid: str, job: str) -> JobRecord:
        await self._datasource(dsid)
        record = await self.store.get_job(dsid, job)
        if record is None:
            raise NotFound(f"No job '{job}' on datasource '{dsid}'.")
        _check_owner(principal, job, record.client)
        return record

    def _stream_subscription(self, dsid: str) -> Subscription:
        sub = self.hub.subscribe(stream_channel(dsid), maxsize=64)
        self._waits.add(sub)
        return sub

    def _wait_subscription(self, dsid: str, job: str) -> Subscription:
        sub = self.hub.subscribe(job_channel(dsid, job), maxsize=64)
        self._waits.add(sub)
        return sub

    async def _wait_terminal(self, sub: Subscription, record: JobRecord, wait: float) -> JobRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while not record.terminal and not self._stopping:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await sub.wait(remaining):
                    break
                if sub.overflowed:
                    fresh = await self.store.get_job(record.datasource_id, record.job)
                    return fresh or record
                for event in sub.drain():
                    if isinstance(event, Event) and event.record.version > record.version:
                        record = event.record
        finally:
            self._waits.discard(sub)
        return record
