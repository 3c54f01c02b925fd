"""Parsing of request bodies and query values into domain values, with 400s a person can act on."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from jobqueue_store.errors import BadRequest
from jobqueue_store.models import (
    CLIENT_ID_RE,
    DEFAULT_CANCEL_GRACE,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DSID_RE,
    JOB_ID_RE,
    Dispatch,
    Status,
    StatusUpdate,
)

JOB_FIELDS = frozenset({"job", "request", "client", "timeout"})
UPDATE_FIELDS = frozenset(
    {"status", "response", "error", "progress", "lease", "retry_in", "revision"}
)
REVISION_FIELDS = frozenset({"request", "rollback"})
MAX_REVISION = 2**31 - 1
SETTINGS_FIELDS = frozenset(
    {"dispatch", "lease_seconds", "max_attempts", "job_timeout", "cancel_grace"}
)
DATASOURCE_FIELDS = frozenset({"description", "request_schema"}) | SETTINGS_FIELDS
CLAIM_FIELDS = frozenset({"worker", "max", "wait"})
MAX_TIMEOUT = 86_400
MAX_WORKER_NAME = 200
MAX_ERROR_TEXT = 64 * 1024
_INTEGER_RE = re.compile(r"-?[0-9]{1,30}")


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"The body must be a JSON object: {what}.")
    return body


def _no_unknown(body: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    if allowed.issuperset(body):  # the usual case, without building a set of the keys
        return
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(
            f"Unknown field(s) {', '.join(repr(u) for u in unknown)} in {what}; allowed: "
            f"{', '.join(sorted(allowed))}."
        )


def _no_nul(text: str, field: str) -> None:
    """Refuse U+0000 in a text field the store keeps as text (PostgreSQL cannot store it in
    ``TEXT``; SQLite could, so both refuse it alike). JSON values (``request``, ``response``,
    ``request_schema``) keep it: they are stored encoded, where it is the escape ``\\u0000``."""
    if "\x00" in text:
        raise BadRequest(
            f'"{field}" contains a NUL character (U+0000), which the store does not keep in '
            "text: remove it."
        )


def job_id(value: Any) -> str:
    """A client-allocated job id: 1-128 of ``A-Z a-z 0-9 . _ ~ : -``."""
    if not isinstance(value, str) or not JOB_ID_RE.fullmatch(value):
        raise BadRequest(
            "The job id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ : - (a GUID works)."
        )
    return value


def datasource_id(value: str) -> str:
    """A datasource id from a path: same alphabet as job ids."""
    if not DSID_RE.fullmatch(value):
        raise BadRequest("The datasource id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ : -.")
    return value


def client_id(value: Any) -> str:
    """A client id as carried by a token or an admin's submit."""
    if not isinstance(value, str) or not CLIENT_ID_RE.fullmatch(value):
        raise BadRequest("The client id must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ : @ -.")
    return value


def job_submission(body: Any) -> tuple[str, Any, str | None]:
    """``(job, request, client or None)`` from a submit body ``{"job", "request", "client"?}``."""
    obj = _object(body, '{"job": "<id>", "request": <any JSON>}')
    _no_unknown(obj, JOB_FIELDS, "the job record")
    if "job" not in obj:
        raise BadRequest('The job record needs a "job" field: the id you choose for the job.')
    if "request" not in obj:
        raise BadRequest('The job record needs a "request" field: what the driver should do.')
    client = obj.get("client")
    if client is not None and not isinstance(client, str):
        raise BadRequest('"client" must be a string (your client id), or be left out.')
    return job_id(obj["job"]), obj["request"], client


_STATUSES = {s.value: s for s in Status}
_DRIVER_STATUSES = ", ".join(s.value for s in Status if s is not Status.SUBMITTED)


def status_update(body: Any) -> StatusUpdate:
    """A driver's ``{"status", "response"?, "error"?, "progress"?}``."""
    obj = _object(
        body, '{"status": "<status>", "response"?: ..., "error"?: "...", "progress"?: 0.5}'
    )
    _no_unknown(obj, UPDATE_FIELDS, "the status update")
    raw = obj.get("status")
    status = _STATUSES.get(raw) if isinstance(raw, str) else None
    if status is None:
        raise BadRequest(f'"status" must be one of: {_DRIVER_STATUSES}.')
    if status is Status.SUBMITTED:
        raise BadRequest(f'A driver cannot set "submitted"; use one of: {_DRIVER_STATUSES}.')
    error = obj.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > MAX_ERROR_TEXT):
        raise BadRequest('"error" must be a string of at most 64 KiB describing what went wrong.')
    if error is not None:
        _no_nul(error, "error")
    progress = obj.get("progress")
    if progress is not None:
        if (
            isinstance(progress, bool)
            or not isinstance(progress, int | float)
            or not math.isfinite(progress)
            or not 0 <= progress <= 1
        ):
            raise BadRequest('"progress" must be a number from 0 to 1.')
        progress = float(progress)
    lease = obj.get("lease")
    if lease is not None and not isinstance(lease, str):
        raise BadRequest('"lease" must be the lease id (a string) that the claim returned.')
    retry_in = obj.get("retry_in")
    if retry_in is not None:
        if status is not Status.RETRYING:
            raise BadRequest('"retry_in" goes with status "retrying" (giving the job back).')
        retry_in = number_field(obj, "retry_in", 0, MAX_TIMEOUT, "seconds before a new claim")
    revision = None
    if "revision" in obj:
        revision = whole_number(
            obj, "revision", 0, MAX_REVISION, "the revision the update is about"
        )
    return StatusUpdate(
        status=status,
        response=obj.get("response"),
        has_response="response" in obj,
        error=error,
        progress=progress,
        lease=lease,
        retry_in=retry_in,
        revision=revision,
    )


def revision_body(body: Any) -> tuple[Any, bool]:
    """``(request, rollback)`` from a client's update ``{"request", "rollback"?}``."""
    obj = _object(body, '{"request": <any JSON>, "rollback"?: true}')
    _no_unknown(obj, REVISION_FIELDS, "the update")
    if "request" not in obj:
        raise BadRequest('The update needs a "request" field: the new request of the job.')
    rollback = obj.get("rollback", False)
    if not isinstance(rollback, bool):
        raise BadRequest(
            '"rollback" must be true (roll back if this revision fails) or false (the default).'
        )
    return obj["request"], rollback


def whole_number(obj: Mapping[str, Any], name: str, low: int, high: int, what: str) -> int:
    """``obj[name]``: a whole number from ``low`` to ``high`` (``what`` names its meaning)."""
    value = obj[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
        or not low <= value <= high
    ):
        raise BadRequest(
            f'"{name}" must be a whole number of {what} from {low} to {high}, not {value!r}.'
        )
    return int(value)


def number_field(obj: Mapping[str, Any], name: str, low: float, high: float, what: str) -> float:
    """``obj[name]``: a number from ``low`` to ``high``."""
    value = obj[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise BadRequest(f'"{name}" must be a number of {what} from {low:g} to {high:g}.')
    return float(value)


def submit_timeout(body: Any) -> int | None:
    """A submit's optional ``"timeout"`` (seconds, 1-86400); call after :func:`job_submission`."""
    if not isinstance(body, dict) or body.get("timeout") is None:
        return None
    return whole_number(body, "timeout", 1, MAX_TIMEOUT, "seconds")


def datasource_settings(body: dict[str, Any]) -> dict[str, Any]:
    """The dispatch and deadline settings of ``PUT /jobs/<DSID>``, defaults filled in."""
    dispatch = body.get("dispatch", "stream")
    if dispatch not in {d.value for d in Dispatch}:
        raise BadRequest(
            '"dispatch" must be "stream" (one driver follows the request stream) or "lease" '
            "(any number of workers claim jobs)."
        )
    out: dict[str, Any] = {
        "dispatch": Dispatch(dispatch),
        "lease_seconds": DEFAULT_LEASE_SECONDS,
        "max_attempts": DEFAULT_MAX_ATTEMPTS,
        "job_timeout": None,
        "cancel_grace": DEFAULT_CANCEL_GRACE,
    }
    if "lease_seconds" in body:
        out["lease_seconds"] = whole_number(body, "lease_seconds", 1, 3600, "seconds")
    if "max_attempts" in body:
        if out["dispatch"] is not Dispatch.LEASE:
            raise BadRequest(
                '"max_attempts" is for lease datasources: add "dispatch": "lease" or leave it out.'
            )
        out["max_attempts"] = whole_number(body, "max_attempts", 1, 100, "claims")
    if body.get("job_timeout") is not None:
        out["job_timeout"] = whole_number(body, "job_timeout", 1, MAX_TIMEOUT, "seconds")
    if "cancel_grace" in body:
        out["cancel_grace"] = whole_number(body, "cancel_grace", 0, MAX_TIMEOUT, "seconds")
    return out


def worker_name(obj: Mapping[str, Any]) -> str:
    """The ``"worker"`` name of a claim or a slot request."""
    value = obj.get("worker")
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_WORKER_NAME
        or not value.isprintable()
    ):
        raise BadRequest(
            '"worker" must name the worker: 1 to 200 printable characters (e.g. host name and pid).'
        )
    return value


def claim_body(body: Any) -> tuple[str, int, float]:
    """``(worker, max, wait)`` from ``{"worker", "max"?, "wait"?}``."""
    obj = _object(body, '{"worker": "<name>", "max"?: 1-100, "wait"?: 0-60}')
    _no_unknown(obj, CLAIM_FIELDS, "the claim")
    worker = worker_name(obj)
    max_jobs = whole_number(obj, "max", 1, 100, "jobs") if "max" in obj else 1
    wait = number_field(obj, "wait", 0, 60, "seconds to wait") if "wait" in obj else 0.0
    return worker, max_jobs, wait


def lease_body(body: Any, *, resume: bool = False) -> tuple[str, int | None]:
    """``(lease, resume)`` from ``{"lease": "<id>"}`` (``"resume"`` allowed if ``resume``)."""
    shape = '{"lease": "<id>", "resume"?: <seq>}' if resume else '{"lease": "<id>"}'
    obj = _object(body, shape)
    _no_unknown(obj, frozenset({"lease", "resume"} if resume else {"lease"}), "the request")
    lease = obj.get("lease")
    if not isinstance(lease, str):
        raise BadRequest(f'"lease" must be the lease id (a string): send {shape}.')
    seq: int | None = None
    if resume and obj.get("resume") is not None:
        seq = whole_number(obj, "resume", 0, 2**62, "the last seq finished")
    return lease, seq


def worker_take_body(body: Any) -> str:
    """The worker name from ``{"worker": "<name>"}``."""
    obj = _object(body, '{"worker": "<name>"}')
    _no_unknown(obj, frozenset({"worker"}), "the request")
    return worker_name(obj)


def datasource_body(body: Any) -> tuple[str, dict[str, Any] | None]:
    """``(description, request_schema)`` from ``PUT /jobs/<DSID>``."""
    obj = _object(body, '{"description": "<text>", "request_schema"?: <JSON Schema>}')
    _no_unknown(obj, DATASOURCE_FIELDS, "the datasource")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise BadRequest('"description" must be a string.')
    _no_nul(description, "description")
    schema = obj.get("request_schema")
    if schema is not None and not isinstance(schema, dict | bool):
        raise BadRequest('"request_schema" must be a JSON Schema (an object).')
    if isinstance(schema, dict) and not isinstance(schema.get("$schema", ""), str):
        raise BadRequest('"request_schema"\'s "$schema" must be the URI of a JSON Schema dialect.')
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    return description, schema


def seconds(value: str | None, name: str, maximum: float) -> float | None:
    """A ``?wait=`` style duration: ``0 < s <= maximum``."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not 0 < number <= maximum:
        raise BadRequest(
            f"?{name}= must be a number of seconds greater than 0 and at most {maximum:g}."
        )
    return number


def integer(value: str | None, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query value within bounds."""
    if value is None:
        return default
    # int() alone would also take " 7", "1_000" and non-ASCII digits.
    if not _INTEGER_RE.fullmatch(value):
        raise BadRequest(f"?{name}= must be a whole number.")
    number = int(value)
    if not minimum <= number <= maximum:
        raise BadRequest(f"?{name}= must be from {minimum} to {maximum}.")
    return number


def status_filter(value: str | None) -> Status | None:
    """``?status=`` of a job listing."""
    if value is None:
        return None
    if value not in {s.value for s in Status}:
        raise BadRequest(f"?status= must be one of: {', '.join(s.value for s in Status)}.")
    return Status(value)
