"""A Hypothesis state machine of the job lifecycle against the real HTTP API of a real store.

Each run of the machine gets its own datasource on one live SQLite store (so the request stream
of the run is exactly what the run did). Rules submit, retry, conflict, cancel (own and another
client's), driver updates of any status (with or without response, error, progress) and reads; a
model holds what each job's record must be (status, version, cancel_requested, response, error,
progress, terminal finality, idempotent repeats), and after every step every record and the
request stream (``since/0``: one ``request`` entry per job, at most one ``cancel``) are compared
with it.

Long-running jobs too: updates of the request (new revisions, reopening finished jobs, with or
without rollback), stop and start, driver updates naming the current, an older or a future
revision, ``running`` and ``stopped``, and automatic rollback to the last revision that ran. The
model keeps every revision; the revisions list must match it, and every job's record must be the
fold of its events (the last event's record, versions 1..n with no gap).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.fuzz.live import LiveStore, live_store

JOBS = st.sampled_from(["j0", "j1", "j2", "j3"])
REQUESTS = st.sampled_from([1, "x", {"a": 1}, [1, 2], None])
STATUSES = st.sampled_from(
    ["accepted", "retrying", "running", "stopped", "complete", "cancelled", "forbidden", "failed"]
)
TERMINAL = {"complete", "cancelled", "forbidden", "failed"}
RUNS = 60
STEPS = 40

STEPS_RUN = itertools.count()
ROLLBACKS = itertools.count()


@dataclass
class Job:
    """What a job's status record must be."""

    request: Any
    status: str = "submitted"
    version: int = 1
    cancel_requested: bool = False
    update: dict[str, Any] = field(default_factory=dict)
    """The record's optional fields (response, error, progress)."""
    sent: dict[str, Any] = field(default_factory=dict)
    """The last applied update's optional fields as the driver sent them."""
    revision: int = 0
    desired_state: str = "running"
    rollback: bool = False
    rollback_of: int | None = None
    revisions: list[Rev] = field(default_factory=list)


@dataclass
class Rev:
    """What one revision of a job must be in its revisions list."""

    request: Any
    status: str = "submitted"
    ran: bool = False
    rollback_of: int | None = None


def refused(job: str, revision: int, error: str | None) -> str:
    """The error of a failed revision whose rollback found no revision that ran."""
    why = (
        f"revision {revision} failed and was not rolled back: no earlier revision of job "
        f"'{job}' ever reached running"
    )
    return why[0].upper() + why[1:] + "." if error is None else f"{error} ({why})"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStore]:
    """One live store for every run of the machine (each run has its own datasource)."""
    with live_store(tmp_path_factory.mktemp("machine")) as store:
        yield store


class Lifecycle(RuleBasedStateMachine):
    """The model and the rules; ``live`` and ``dsid`` are set per run."""

    live: LiveStore
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.dsid = f"sm{next(self.counter)}"
        self.live.declare(self.dsid)
        self.client = self.live.token()
        self.other = self.live.token(client="app2")
        self.driver = self.live.token("driver")
        self.jobs: dict[str, Job] = {}
        self.stream: list[tuple[str, str]] = []

    # rules --------------------------------------------------------------------------------------
    @rule(job=JOBS, request=REQUESTS)
    def submit(self, job: str, request: Any) -> None:
        """A new job is 201; the same id and request again is 200 with the record; else 409."""
        known = self.jobs.get(job)
        body = {"job": job, "request": request}
        if known is None:
            self.live.call("POST", f"/{self.dsid}/job/", self.client, body, expect=201)
            self.jobs[job] = Job(request, revisions=[Rev(request)])
            self.stream.append(("request", job))
        elif known.request == request:
            record = self.live.call(
                "POST", f"/{self.dsid}/job/", self.client, body, expect=200, schema="status_record"
            )
            self.check_record(job, record)
        else:
            self.live.call("POST", f"/{self.dsid}/job/", self.client, body, expect=409)

    @rule(job=JOBS, request=REQUESTS)
    def submit_as_another_client(self, job: str, request: Any) -> None:
        """An id held by another client is 409, whatever the request."""
        if job in self.jobs:
            body = {"job": job, "request": request}
            self.live.call("POST", f"/{self.dsid}/job/", self.other, body, expect=409)

    @rule(job=JOBS, delete=st.booleans())
    def cancel(self, job: str, delete: bool) -> None:
        """Cancel: 404 unknown; else 200 with the record, which changes at most once."""
        path = f"/{self.dsid}/job/{job}/" if delete else f"/{self.dsid}/job/{job}/cancel"
        method = "DELETE" if delete else "POST"
        known = self.jobs.get(job)
        if known is None:
            self.live.call(method, path, self.client, expect=404)
            return
        if known.status not in TERMINAL and not known.cancel_requested:
            known.cancel_requested = True
            known.version += 1
            self.stream.append(("cancel", job))
        record = self.live.call(method, path, self.client, expect=200, schema="status_record")
        self.check_record(job, record)

    @rule(job=JOBS)
    def cancel_as_another_client(self, job: str) -> None:
        """Another client's job is 403 (404 if there is none)."""
        expect = 403 if job in self.jobs else 404
        self.live.call("POST", f"/{self.dsid}/job/{job}/cancel", self.other, expect=expect)

    @rule(
        job=JOBS,
        status=STATUSES,
        response=st.none() | REQUESTS.map(lambda r: {"response": r}),
        error=st.none() | st.just({"error": "boom"}),
        progress=st.none() | st.sampled_from([0, 0.5, 1]).map(lambda p: {"progress": p}),
        revision=st.sampled_from([None, "current", "older", "future"]),
    )
    def update(
        self,
        job: str,
        status: str,
        response: dict[str, Any] | None,
        error: dict[str, Any] | None,
        progress: dict[str, Any] | None,
        revision: str | None,
    ) -> None:
        """A driver update: 404 unknown, 409 on a terminal job unless an identical repeat."""
        fields = {**(response or {}), **(error or {}), **(progress or {})}
        body: dict[str, Any] = {"status": status, **fields}
        path = f"/jobs/{self.dsid}/job/{job}/"
        known = self.jobs.get(job)
        if known is None:
            self.live.call("POST", path, self.driver, body, expect=404)
            return
        if revision == "current":
            body["revision"] = known.revision
        elif revision == "future":
            body["revision"] = known.revision + 1
            self.live.call("POST", path, self.driver, body, expect=409)
            return
        elif revision == "older" and known.revision > 0:
            n = known.revision - 1
            body["revision"] = n
            known.revisions[n].status = status
            known.revisions[n].ran |= status == "running"
            known.version += 1
            record = self.live.call(
                "POST", path, self.driver, body, expect=200, schema="status_record"
            )
            self.check_record(job, record)
            return
        same = status == known.status and fields == known.sent
        if known.status in TERMINAL and not same:
            self.live.call("POST", path, self.driver, body, expect=409)
            return
        if not same:
            self.apply_update(job, known, status, fields)
        record = self.live.call("POST", path, self.driver, body, expect=200, schema="status_record")
        self.check_record(job, record)

    def apply_update(self, job: str, known: Job, status: str, fields: dict[str, Any]) -> None:
        """The model of a driver's update of the current revision, rollback included."""
        current = known.revisions[known.revision]
        known.status, known.update, known.sent = status, dict(fields), dict(fields)
        known.version += 1
        current.status = status
        current.ran |= status == "running"
        if status != "failed" or not known.rollback:
            return
        target = next(
            (r for r in reversed(known.revisions[: known.revision]) if r.ran),
            None,
        )
        if target is None:
            known.update["error"] = refused(job, known.revision, fields.get("error"))
            return
        next(ROLLBACKS)
        failed = known.revision
        self.new_revision(known, target.request, rollback=False, rollback_of=failed)
        self.stream.append(("update", job))

    @staticmethod
    def new_revision(known: Job, request: Any, *, rollback: bool, rollback_of: int | None) -> None:
        """The model of a new revision."""
        known.revision += 1
        known.revisions.append(Rev(request, rollback_of=rollback_of))
        known.request = request
        known.status = "submitted"
        known.update, known.sent = {}, {}
        known.cancel_requested = False
        known.desired_state = "running"
        known.rollback, known.rollback_of = rollback, rollback_of
        known.version += 1

    @rule(job=JOBS, request=REQUESTS, rollback=st.none() | st.booleans())
    def revise(self, job: str, request: Any, rollback: bool | None) -> None:
        """PUT a new request: 202 and a new revision; the current request again is 200."""
        body: dict[str, Any] = {"request": request}
        if rollback is not None:
            body["rollback"] = rollback
        path = f"/{self.dsid}/job/{job}/"
        known = self.jobs.get(job)
        if known is None:
            self.live.call("PUT", path, self.client, body, expect=404)
            return
        if known.status == "forbidden":
            self.live.call("PUT", path, self.client, body, expect=409)
            return
        if known.request == request:
            record = self.live.call(
                "PUT", path, self.client, body, expect=200, schema="status_record"
            )
        else:
            self.new_revision(known, request, rollback=bool(rollback), rollback_of=None)
            self.stream.append(("update", job))
            record = self.live.call(
                "PUT", path, self.client, body, expect=202, schema="status_record"
            )
        self.check_record(job, record)

    @rule(job=JOBS, request=REQUESTS, outcome=st.sampled_from(["running", "failed"]))
    def deploy(self, job: str, request: Any, outcome: str) -> None:
        """A deployment: the current revision runs (or is finished: 409), an update with
        rollback, then the driver reports the new revision running or failed (a failure rolls
        back to the last revision that ran, if any)."""
        known = self.jobs.get(job)
        if known is None:
            return
        self.update(job, "running", None, None, None, "current")
        if known.request == request:
            request = {"other than": request}
        self.revise(job, request, True)
        self.update(job, outcome, None, None, None, "current")

    @rule(job=JOBS, request=REQUESTS)
    def revise_as_another_client(self, job: str, request: Any) -> None:
        """Another client's job is 403 to update (404 if there is none)."""
        expect = 403 if job in self.jobs else 404
        body = {"request": request}
        self.live.call("PUT", f"/{self.dsid}/job/{job}/", self.other, body, expect=expect)

    @rule(job=JOBS, stop=st.booleans())
    def stop_or_start(self, job: str, stop: bool) -> None:
        """Stop or start: 404 unknown, 409 finished, else 200; a change appends an entry."""
        verb, state = ("stop", "stopped") if stop else ("start", "running")
        path = f"/{self.dsid}/job/{job}/{verb}"
        known = self.jobs.get(job)
        if known is None:
            self.live.call("POST", path, self.client, expect=404)
            return
        if known.status in TERMINAL:
            self.live.call("POST", path, self.client, expect=409)
            return
        if known.desired_state != state:
            known.desired_state = state
            known.version += 1
            self.stream.append((verb, job))
        record = self.live.call("POST", path, self.client, expect=200, schema="status_record")
        self.check_record(job, record)

    @rule(job=JOBS)
    def submitted_status_is_refused(self, job: str) -> None:
        """A driver may not set ``submitted``."""
        body = {"status": "submitted"}
        self.live.call("POST", f"/jobs/{self.dsid}/job/{job}/", self.driver, body, expect=400)

    @rule(job=JOBS)
    def read_as_another_client(self, job: str) -> None:
        """Another client's job is 403 to read."""
        expect = 403 if job in self.jobs else 404
        self.live.call("GET", f"/{self.dsid}/job/{job}/", self.other, expect=expect)

    # checks -------------------------------------------------------------------------------------
    def check_record(self, job: str, record: dict[str, Any]) -> None:
        """``record`` is what the model says ``job``'s record is."""
        known = self.jobs[job]
        expected = {
            "job": job,
            "client": "app1",
            "datasource_id": self.dsid,
            "status": known.status,
            "request": known.request,
            "cancel_requested": known.cancel_requested,
            "version": known.version,
            "revision": known.revision,
            "desired_state": known.desired_state,
            **known.update,
        }
        if known.rollback:
            expected["rollback"] = True
        if known.rollback_of is not None:
            expected["rollback_of"] = known.rollback_of
        got = {k: v for k, v in record.items() if k not in ("submitted_at", "updated_at")}
        assert got == expected
        assert record["submitted_at"] <= record["updated_at"]

    @invariant()
    def records_match_the_model(self) -> None:
        """Every job reads back as the model says, to its client and to the driver."""
        next(STEPS_RUN)
        for job in self.jobs:
            mine = self.live.call(
                "GET", f"/{self.dsid}/job/{job}/", self.client, expect=200, schema="status_record"
            )
            self.check_record(job, mine)
            theirs = self.live.call("GET", f"/jobs/{self.dsid}/job/{job}/", self.driver, expect=200)
            assert theirs == mine
        listed = self.live.call("GET", f"/{self.dsid}/job/", self.client, expect=200)
        assert sorted(r["job"] for r in listed["jobs"]) == sorted(self.jobs)
        assert self.live.call("GET", f"/{self.dsid}/job/", self.other, expect=200)["jobs"] == []

    @invariant()
    def request_stream_matches_the_model(self) -> None:
        """One ``request`` entry per job and at most one ``cancel``, in the order they happened."""
        entries = self.live.call("GET", f"/jobs/{self.dsid}/since/0", self.driver, expect=200)
        assert [(e["type"], e["job"]) for e in entries] == self.stream
        seqs = [e["seq"] for e in entries]
        assert seqs == sorted(set(seqs))
        for entry in entries:
            known = self.jobs[entry["job"]]
            if entry["type"] == "request":
                assert entry["data"]["request"] == known.revisions[0].request
            elif entry["type"] == "update":
                n = entry["data"]["revision"]
                assert entry["data"]["request"] == known.revisions[n].request
                assert entry["data"].get("rollback_of") == known.revisions[n].rollback_of

    @invariant()
    def records_are_the_fold_of_their_events(self) -> None:
        """Each job's record is its last event's record, versions 1..n without a gap, and the
        revisions list (the fold of the same events) is what the model holds."""
        store = self.live.store
        for job, known in self.jobs.items():
            events = self.live.run(store.job_events(self.dsid, job))
            assert [e.record.version for e in events] == list(range(1, len(events) + 1))
            current = self.live.run(store.get_job(self.dsid, job))
            assert events[-1].record == current
            revs = self.live.call(
                "GET",
                f"/{self.dsid}/job/{job}/revisions",
                self.client,
                expect=200,
                schema="revisions",
            )["revisions"]
            got = [(r["request"], r["status"], r["rollback_of"]) for r in revs]
            assert got == [(r.request, r.status, r.rollback_of) for r in known.revisions]
            assert [r["running_at"] is not None for r in revs] == [r.ran for r in known.revisions]


def test_job_lifecycle_state_machine(live: LiveStore) -> None:
    """The lifecycle rules hold over random sequences of requests to the real store."""
    Lifecycle.live = live
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=RUNS,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    steps, rollbacks = next(STEPS_RUN), next(ROLLBACKS)
    print(f"\nlifecycle state machine: {RUNS} runs, {steps} checked steps, {rollbacks} rollbacks")
    assert rollbacks > 0, "no run reached an automatic rollback: the rules are not exercised"
