"""The OpenAPI 3.1 document of the HTTP interface, built from the wire schemas in ``schemas/``.

The JSON Schemas are the source of truth: they are embedded as ``components/schemas`` with their
cross-file ``$ref`` rewritten to component references, and every operation of protocol.md §5-6
and 6 points at them. Served at ``GET /openapi.json``.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from jobqueue_store import __version__, codec

COMPONENT = "#/components/schemas/"
METASCHEMA = "https://json-schema.org/draft/2020-12/schema"


def load_schemas() -> dict[str, dict[str, Any]]:
    """Every wire schema by name (file name without ``.json``), as shipped in the package."""
    folder = resources.files("jobqueue_store") / "schemas"
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            out[entry.name.removesuffix(".json")] = codec.loads(entry.read_bytes())
    return out


def _rewrite(node: Any, name: str) -> Any:
    """Rewrite ``$ref`` for embedding schema ``name`` under ``components/schemas``."""
    if isinstance(node, list):
        return [_rewrite(item, name) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$id", "$schema"):
            continue
        if key == "$ref" and isinstance(value, str):
            if value == METASCHEMA:
                # A request_schema is any JSON Schema: an object or a boolean. Never fetched.
                return {
                    "type": ["object", "boolean"],
                    **{k: v for k, v in node.items() if k not in ("$ref", "$id", "$schema")},
                }
            target, _, pointer = value.partition("#")
            component = target.removesuffix(".json") if target else name
            out[key] = COMPONENT + component + pointer
            continue
        out[key] = _rewrite(value, name)
    return out


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": COMPONENT + "error"}}},
    }


def _ok(description: str, schema: str | dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": COMPONENT + schema} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Malformed request: the sentence says what to fix.",
        401: "No token, or a token that is not valid.",
        403: "The token does not allow this request.",
        404: "Unknown datasource or job.",
        405: "Method not allowed on this path.",
        409: "Conflict with the stored state.",
        413: "Body over the limit.",
        415: "Body is not JSON.",
        429: "Quota or rate limit: see Retry-After.",
        503: "Store unavailable (shutting down or database unreachable).",
    }
    out = {str(s): _error(texts[s]) for s in (401, 403, 503, *statuses)}
    if 429 in statuses:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def _path_param(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


ID_PATTERN = "^[A-Za-z0-9._~:-]{1,128}$"
DSID = _path_param("dsid", "Datasource id.", ID_PATTERN)
JOB = _path_param("job", "Job id.", ID_PATTERN)
WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "Seconds to wait for a terminal status (0 < s <= 60).",
    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
}


def _body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": COMPONENT + schema}}},
    }


def _paths() -> dict[str, Any]:
    stream_page = {"type": "array", "items": {"$ref": COMPONENT + "stream_entry"}}
    waited = {
        "200": _ok("The job's record (terminal when ?wait= was given).", "status_record"),
        "202": _ok("?wait= ended before the job reached a terminal status.", "status_record"),
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "security": [],
                "summary": "Liveness.",
                "responses": {"200": _ok("The process is up.", "health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "security": [],
                "summary": "Readiness: database reachable.",
                "responses": {"200": _ok("Ready.", "health"), "503": _error("Not ready.")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (admin).",
                "responses": {
                    "200": {
                        "description": "Prometheus text.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(),
                },
            }
        },
        "/cat": {
            "get": {
                "operationId": "catalogue",
                "summary": "Datasources the token may use.",
                "responses": {"200": _ok("The catalogue.", "catalogue"), **_errors()},
            }
        },
        "/{dsid}/job/": {
            "parameters": [DSID],
            "post": {
                "operationId": "submit",
                "summary": "Submit a job (idempotent by id).",
                "parameters": [WAIT],
                "requestBody": _body("job"),
                "responses": {
                    "201": _ok("New job, durably stored.", "status_record"),
                    **waited,
                    **_errors(400, 404, 409, 413, 415, 429),
                },
            },
            "get": {
                "operationId": "listJobs",
                "summary": "The caller's jobs, newest first.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"$ref": COMPONENT + "common/$defs/status"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": _ok("A page.", "job_list"), **_errors(400, 404)},
            },
        },
        "/{dsid}/job/{job}/": {
            "parameters": [DSID, JOB],
            "get": {
                "operationId": "jobStatus",
                "summary": "A job's status record (long-poll).",
                "parameters": [WAIT],
                "responses": {**waited, **_errors(400, 404)},
            },
            "delete": {
                "operationId": "deleteJob",
                "summary": "Cancel a job.",
                "responses": {
                    "200": _ok("The last known record.", "status_record"),
                    **_errors(400, 404),
                },
            },
        },
        "/{dsid}/job/{job}/cancel": {
            "parameters": [DSID, JOB],
            "post": {
                "operationId": "cancelJob",
                "summary": "Cancel a job.",
                "responses": {
                    "200": _ok("The last known record.", "status_record"),
                    **_errors(400, 404),
                },
            },
        },
        "/jobs/{dsid}": {
            "parameters": [DSID],
            "put": {
                "operationId": "putDatasource",
                "summary": "Declare or update a datasource.",
                "requestBody": _body("datasource_declaration"),
                "responses": {
                    "200": _ok("The datasource.", "datasource"),
                    **_errors(400, 413, 415),
                },
            },
        },
        "/jobs/{dsid}/job/{job}/": {
            "parameters": [DSID, JOB],
            "get": {
                "operationId": "driverJob",
                "summary": "Any job's record (driver).",
                "responses": {"200": _ok("The record.", "status_record"), **_errors(400, 404)},
            },
            "post": {
                "operationId": "updateStatus",
                "summary": "Report a job's status (driver).",
                "requestBody": _body("status_update"),
                "responses": {
                    "200": _ok("The new record.", "status_record"),
                    **_errors(400, 404, 409, 413, 415),
                },
            },
        },
        "/jobs/{dsid}/claim": {
            "parameters": [DSID],
            "post": {
                "operationId": "claim",
                "summary": "Claim jobs of a lease datasource (driver; long-poll with wait).",
                "description": "Up to max jobs, oldest first, each now accepted under a new "
                "lease. 409 conflict on a stream datasource.",
                "requestBody": _body("claim"),
                "responses": {
                    "200": _ok("The claimed jobs (maybe none).", "claim_reply"),
                    **_errors(400, 404, 409, 413, 415),
                },
            },
        },
        "/jobs/{dsid}/job/{job}/heartbeat": {
            "parameters": [DSID, JOB],
            "post": {
                "operationId": "heartbeat",
                "summary": "Renew a job's lease (driver): no event, version unchanged.",
                "description": "409 lease_lost when the lease does not hold the job any more.",
                "requestBody": _body("heartbeat"),
                "responses": {
                    "200": _ok("The record, with the renewed lease.", "status_record"),
                    **_errors(400, 404, 409, 413, 415),
                },
            },
        },
        "/jobs/{dsid}/worker": {
            "parameters": [DSID],
            "post": {
                "operationId": "takeWorkerSlot",
                "summary": "Take a stream datasource's worker slot (driver).",
                "description": "409 slot_taken while another worker holds it.",
                "requestBody": _body("worker_take"),
                "responses": {
                    "200": _ok("The slot's lease and the stored resume point.", "worker_slot"),
                    **_errors(400, 404, 409, 413, 415),
                },
            },
            "delete": {
                "operationId": "releaseWorkerSlot",
                "summary": "Free the worker slot (driver); the resume point stays.",
                "requestBody": _body("worker_release"),
                "responses": {
                    "204": {"description": "Freed."},
                    **_errors(400, 404, 409, 413, 415),
                },
            },
        },
        "/jobs/{dsid}/worker/heartbeat": {
            "parameters": [DSID],
            "post": {
                "operationId": "renewWorkerSlot",
                "summary": "Renew the worker slot and store the resume point (driver).",
                "description": "409 lease_lost when the slot lapsed or another worker took it.",
                "requestBody": _body("worker_heartbeat"),
                "responses": {
                    "200": _ok("The slot's renewed lease.", "worker_slot"),
                    **_errors(400, 404, 409, 413, 415),
                },
            },
        },
        "/jobs/{dsid}/latest": {
            "parameters": [DSID],
            "get": {
                "operationId": "latest",
                "summary": "The newest request-stream entry.",
                "responses": {"200": _ok("The entry.", "stream_entry"), **_errors(400, 404)},
            },
        },
        "/jobs/{dsid}/since/{time}": {
            "parameters": [
                DSID,
                {
                    "name": "time",
                    "in": "path",
                    "required": True,
                    "description": "Milliseconds since the Unix epoch.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "get": {
                "operationId": "since",
                "summary": "Request-stream entries from a time.",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {
                        **_ok("Entries, oldest first.", stream_page),
                        "headers": {
                            "Link": {"description": 'rel="next" page', "schema": {"type": "string"}}
                        },
                    },
                    **_errors(400, 404),
                },
            },
        },
    }


def _pipeline_paths(paths: dict[str, Any]) -> dict[str, Any]:
    """Add the operations of long-running jobs: update, stop, start, revisions."""
    record = _ok("The job's record.", "status_record")
    paths["/{dsid}/job/{job}/"]["put"] = {
        "operationId": "updateJob",
        "summary": "Update a job's request: a new revision (reopens a finished job).",
        "requestBody": _body("job_update"),
        "responses": {
            "200": _ok(
                "The same request as the current revision: nothing changed.", "status_record"
            ),
            "202": _ok("A new revision, status submitted.", "status_record"),
            **_errors(400, 404, 409, 413, 415, 429),
        },
    }
    for verb, what in (("stop", "Stop"), ("start", "Start")):
        paths["/{dsid}/job/{job}/" + verb] = {
            "parameters": [DSID, JOB],
            "post": {
                "operationId": verb + "Job",
                "summary": f"{what} a long-running job (sets desired_state).",
                "responses": {"200": record, **_errors(400, 404, 409)},
            },
        }
    paths["/{dsid}/job/{job}/revisions"] = {
        "parameters": [DSID, JOB],
        "get": {
            "operationId": "jobRevisions",
            "summary": "Every revision of a job, oldest first.",
            "responses": {"200": _ok("The revisions.", "revisions"), **_errors(400, 404)},
        },
    }
    return paths


SID = _path_param("sid", "Schedule id.", "^[A-Za-z0-9._~:-]{1,100}$")
PAGE = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The 'next' value of the previous page.",
        "schema": {"type": "string"},
    },
]


def _schedule_paths() -> dict[str, Any]:
    """Schedules and their runs (client and admin tokens)."""
    record = "schedule_record"
    return {
        "/{dsid}/schedule/": {
            "parameters": [DSID],
            "post": {
                "operationId": "createSchedule",
                "summary": "Create a one-off (at) or recurring (cron) schedule (idempotent by id).",
                "requestBody": _body("schedule"),
                "responses": {
                    "201": _ok("New schedule, durably stored.", record),
                    "200": _ok("An identical schedule already exists under this id.", record),
                    **_errors(400, 404, 409, 413, 415),
                },
            },
            "get": {
                "operationId": "listSchedules",
                "summary": "The caller's schedules, newest first.",
                "parameters": PAGE,
                "responses": {
                    "200": _ok("One page.", "schedule_list"),
                    **_errors(400, 404),
                },
            },
        },
        "/{dsid}/schedule/{sid}/": {
            "parameters": [DSID, SID],
            "get": {
                "operationId": "getSchedule",
                "summary": "A schedule's record (deleted ones too).",
                "responses": {"200": _ok("The record.", record), **_errors(400, 404)},
            },
            "delete": {
                "operationId": "deleteSchedule",
                "summary": "Soft delete: no further runs; the record and its runs stay readable.",
                "responses": {"200": _ok("The deleted record.", record), **_errors(400, 404)},
            },
        },
        "/{dsid}/schedule/{sid}/runs": {
            "parameters": [DSID, SID],
            "get": {
                "operationId": "scheduleRuns",
                "summary": "The schedule's runs (ordinary jobs), newest first.",
                "parameters": PAGE,
                "responses": {"200": _ok("One page.", "job_list"), **_errors(400, 404)},
            },
        },
        "/{dsid}/schedule/{sid}/pause": {
            "parameters": [DSID, SID],
            "post": {
                "operationId": "pauseSchedule",
                "summary": "Pause: no runs until resumed.",
                "responses": {"200": _ok("The record.", record), **_errors(400, 404, 409)},
            },
        },
        "/{dsid}/schedule/{sid}/resume": {
            "parameters": [DSID, SID],
            "post": {
                "operationId": "resumeSchedule",
                "summary": "Resume: runs from the next fire time on.",
                "responses": {"200": _ok("The record.", record), **_errors(400, 404, 409)},
            },
        },
        "/{dsid}/schedule/{sid}/run/{job}/": {
            "parameters": [DSID, SID, JOB],
            "delete": {
                "operationId": "cancelRun",
                "summary": "Cancel one run of the schedule.",
                "responses": {
                    "200": _ok("The run's last known record.", "status_record"),
                    **_errors(400, 404),
                },
            },
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    schemas = {name: _rewrite(schema, name) for name, schema in load_schemas().items()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobqueue-store",
            "version": __version__,
            "description": "An asynchronous job-queue store with per-client publish/subscribe. "
            "Websocket endpoints (/sub/<DSID>/job, /sub/<DSID>/jobs) are described in "
            "docs/protocol.md, served at /ui/docs/protocol.md.",
        },
        "jsonSchemaDialect": METASCHEMA,
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {**_pipeline_paths(_paths()), **_schedule_paths()},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A macaroon minted by 'jobqueue-store token'.",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The document, encoded once."""
    return codec.dumps(document())
