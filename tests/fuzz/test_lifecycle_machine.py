"""A Hypothesis state machine of the job lifecycle against the real HTTP API of a real store.

Each run of the machine gets its own datasource on one live SQLite store (so the request stream
of the run is exactly what the run did). Rules submit, retry, conflict, cancel (own and another
client's), driver updates of any status (with or without response, error, progress) and reads; a
model holds what each job's record must be (status, version, cancel_requested, response, error,
progress, terminal finality, idempotent repeats), and after every step every record and the
request stream (``since/0``: one ``request`` entry per job, at most one ``cancel``) are compared
with it.
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
STATUSES = st.sampled_from(["accepted", "retrying", "complete", "cancelled", "forbidden", "failed"])
TERMINAL = {"complete", "cancelled", "forbidden", "failed"}
RUNS = 60
STEPS = 40

STEPS_RUN = itertools.count()


@dataclass
class Job:
    """What a job's status record must be."""

    request: Any
    status: str = "submitted"
    version: int = 1
    cancel_requested: bool = False
    update: dict[str, Any] = field(default_factory=dict)
    """The last applied update's optional fields (response, error, progress)."""


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
            self.jobs[job] = Job(request)
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
    )
    def update(
        self,
        job: str,
        status: str,
        response: dict[str, Any] | None,
        error: dict[str, Any] | None,
        progress: dict[str, Any] | None,
    ) -> None:
        """A driver update: 404 unknown, 409 on a terminal job unless an identical repeat."""
        fields = {**(response or {}), **(error or {}), **(progress or {})}
        body = {"status": status, **fields}
        path = f"/jobs/{self.dsid}/job/{job}/"
        known = self.jobs.get(job)
        if known is None:
            self.live.call("POST", path, self.driver, body, expect=404)
            return
        same = status == known.status and fields == known.update
        if known.status in TERMINAL and not same:
            self.live.call("POST", path, self.driver, body, expect=409)
            return
        if not same:
            known.status, known.update = status, fields
            known.version += 1
        record = self.live.call("POST", path, self.driver, body, expect=200, schema="status_record")
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
            **known.update,
        }
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
            if entry["type"] == "request":
                assert entry["data"]["request"] == self.jobs[entry["job"]].request


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
    print(f"\nlifecycle state machine: {RUNS} runs, {next(STEPS_RUN)} checked steps")
