"""Schemathesis against a live store: every operation of ``/openapi.json``, bounded examples.

The document is loaded from the running store (``GET /openapi.json`` with a token) and each
operation is driven with generated requests, in positive and negative generation modes, with the
token of the role the path is for (and now and then another role's). Checks on every reply: no 5xx,
a documented status code, a documented content type, and a body valid against the documented
schema (headers included). A seeded datasource with jobs in every status is substituted for the
generated path parameters in most examples, so that requests reach real jobs rather than 404s.

The number of examples run is printed at the end of the module (``pytest -s``).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobqueue_store.config import Limits
from tests.fuzz.live import LiveStore, live_store

MAX_EXAMPLES = int(os.environ.get("JOBQUEUE_FUZZ_EXAMPLES", "100"))
"""Examples per operation and generation mode (``JOBQUEUE_FUZZ_EXAMPLES`` raises it locally)."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

OPERATIONS = [
    "healthz",
    "readyz",
    "metrics",
    "openapi",
    "catalogue",
    "submit",
    "listJobs",
    "jobStatus",
    "deleteJob",
    "cancelJob",
    "putDatasource",
    "driverJob",
    "updateStatus",
    "latest",
    "since",
    "claim",
    "heartbeat",
    "takeWorkerSlot",
    "releaseWorkerSlot",
    "renewWorkerSlot",
    "updateJob",
    "stopJob",
    "startJob",
    "jobRevisions",
    "createSchedule",
    "listSchedules",
    "getSchedule",
    "deleteSchedule",
    "scheduleRuns",
    "pauseSchedule",
    "resumeSchedule",
    "cancelRun",
]

SEEDED = "ds1"
"""A datasource with jobs of app1 in every status."""
SCHEMA_DS = "ds2"
"""A datasource with a request_schema."""
SEEDED_JOBS = [
    "j-submitted",
    "j-accepted",
    "j-retrying",
    "j-complete",
    "j-cancelled",
    "j-forbidden",
    "j-failed",
    "j-cancel-requested",
    "j-running",
    "j-stopped",
]
MAX_WAIT = 0.5
"""The store's ``?wait=`` limit here, and what generated waits are clamped to: never a long hang."""

EXAMPLES: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()


def seed(live: LiveStore) -> None:
    """Declare the datasources and put a job of app1 in every status."""
    live.declare(SEEDED)
    live.declare(SCHEMA_DS, request_schema={"type": "object", "required": ["n"]})
    client, driver = live.token(), live.token("driver")
    for job in SEEDED_JOBS:
        live.call("POST", f"/{SEEDED}/job/", client, {"job": job, "request": {"n": 1}}, expect=201)
        status = job.removeprefix("j-")
        if status == "cancel-requested":
            live.call("POST", f"/{SEEDED}/job/{job}/cancel", client, expect=200)
        elif status != "submitted":
            live.call("POST", f"/jobs/{SEEDED}/job/{job}/", driver, {"status": status}, expect=200)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStore]:
    """One seeded store for the module; prints the number of examples run at the end."""
    path: Path = tmp_path_factory.mktemp("openapi-fuzz")
    with live_store(path, limits=Limits(max_wait=MAX_WAIT)) as store:
        seed(store)
        yield store
    total = sum(EXAMPLES.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(EXAMPLES.items()))
    print(f"\nschemathesis: {total} examples run against the live store ({detail})")
    print("replies by status: " + ", ".join(f"{k} {v}" for k, v in sorted(STATUSES.items())))


@pytest.fixture(scope="module")
def schema(live: LiveStore) -> Any:
    """The OpenAPI document as the store serves it (a token is needed to read it)."""
    live.call("GET", "/openapi.json", None, expect=401)
    document = live.call("GET", "/openapi.json", live.token(), expect=200)
    return schemathesis.openapi.from_dict(document)


def test_document_covers_every_route(schema: Any) -> None:
    """Every HTTP operation the app routes (websockets aside) is in the document."""
    ids = {result.ok().definition.raw.get("operationId") for result in schema.get_all_operations()}
    assert ids == set(OPERATIONS)


def role_of(path: str) -> str:
    """The role a path is for: driver for ``/jobs/...``, admin for ``/metrics``, else client."""
    if path.startswith("/jobs/"):
        return "driver"
    if path == "/metrics":
        return "admin"
    return "client"


def aim(case: Any, data: st.DataObject) -> None:
    """Point most examples at the seeded datasource and its jobs; clamp ``?wait=``."""
    params = case.path_parameters
    if params and "dsid" in params and case.operation.path != "/jobs/{dsid}":
        choice = data.draw(st.sampled_from(["generated", "seeded", "seeded", SCHEMA_DS]))
        if choice == "seeded":
            params["dsid"] = SEEDED
            if "job" in params and data.draw(st.booleans()):
                params["job"] = data.draw(st.sampled_from(SEEDED_JOBS))
        elif choice == SCHEMA_DS:
            params["dsid"] = SCHEMA_DS
    body = case.body
    if isinstance(body, dict) and "client" in body and data.draw(st.booleans()):
        # A generated "client" is almost never the token's: leave it out to reach real submits.
        del body["client"]
    wait = body.get("wait") if isinstance(body, dict) else None
    if isinstance(wait, int | float) and math.isfinite(wait) and wait > MAX_WAIT:
        body["wait"] = MAX_WAIT  # a claim's long-poll wait, in the body
    query = case.query
    if query and isinstance(query.get("wait"), int | float) and not isinstance(query["wait"], bool):
        wait = query["wait"]
        if math.isfinite(wait) and wait > MAX_WAIT:
            query["wait"] = MAX_WAIT


CASES = [
    (operation_id, mode)
    for operation_id in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Nothing to negate in an operation without parameters or body.
    if mode is GenerationMode.POSITIVE or operation_id not in ("healthz", "readyz")
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
def test_operation(live: LiveStore, schema: Any, operation_id: str, mode: GenerationMode) -> None:
    """Generated requests to one operation: no 5xx, replies as documented."""
    operation = schema.find_operation_by_id(operation_id)
    strategy = operation.as_strategy(generation_mode=mode)
    tokens = {
        "client": live.token(),
        "other": live.token(client="app2"),
        "driver": live.token("driver"),
        "admin": live.token("admin"),
    }
    role = role_of(operation.path)
    session = requests.Session()

    @given(data=st.data())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        aim(case, data)
        who = data.draw(
            st.sampled_from([role] * 6 + ["client", "other", "driver", "admin", "none"])
        )
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who != "none" else {}
        EXAMPLES[operation_id] += 1
        response = case.call_and_validate(
            base_url=live.url, session=session, headers=headers, checks=CHECKS, timeout=30
        )
        STATUSES[response.status_code] += 1

    try:
        run()
    finally:
        session.close()
