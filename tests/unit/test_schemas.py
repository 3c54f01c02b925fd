"""The wire JSON Schemas: each is a valid schema, the records the models build validate, and
malformed records are rejected."""

from __future__ import annotations

import copy
import re
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from jobqueue_store import codec
from jobqueue_store.errors import StoreError
from jobqueue_store.lifecycle import (
    cancel_entry_data,
    decide_cancel,
    decide_submit,
    decide_update,
    request_entry_data,
)
from jobqueue_store.models import (
    CLIENT_ID_RE,
    DSID_RE,
    JOB_ID_RE,
    STATUS_VALUES,
    Datasource,
    Event,
    JobRecord,
    Status,
    StatusUpdate,
)
from tests.wire import BASE_URI, SCHEMA_NAMES, SCHEMAS, schemas_dir, validate, validate_json

EXPECTED = {
    "catalogue",
    "claim",
    "claim_reply",
    "common",
    "datasource",
    "datasource_declaration",
    "error",
    "health",
    "job",
    "job_list",
    "notification",
    "status_record",
    "status_update",
    "stream_entry",
    "heartbeat",
    "worker_heartbeat",
    "worker_release",
    "worker_slot",
    "worker_take",
    "job_update",
    "revisions",
    "schedule",
    "schedule_list",
    "schedule_notification",
    "schedule_record",
}
T0 = 1_700_000_000_000


def _error_tree(cls: type[StoreError]) -> list[type[StoreError]]:
    """``cls`` and every subclass of it, at any depth."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in _error_tree(child))]


# Only the store's own errors go on the wire: the client library subclasses StoreError for a
# failure that never reached the store (connection_failed), and it may be imported before this.
ERROR_CLASSES: list[type[StoreError]] = [
    cls for cls in _error_tree(StoreError) if cls.__module__ == "jobqueue_store.errors"
]


def _submitted() -> JobRecord:
    return decide_submit(
        None,
        datasource_id="ds1",
        job="job-1",
        client="alice@example",
        request={"n": 3, "tags": ["a"]},
        timestamp=T0,
    ).record


def _completed() -> JobRecord:
    update = StatusUpdate(
        Status.COMPLETE, response={"ok": True}, has_response=True, error="", progress=1.0
    )
    return decide_update(_submitted(), update, timestamp=T0 + 5).record


def _request_event() -> Event:
    rec = _submitted()
    return Event(
        seq=1,
        datasource_id=rec.datasource_id,
        type="request",
        job=rec.job,
        client=rec.client,
        timestamp=T0,
        record=rec,
        data=request_entry_data(rec),
    )


def _cancel_event() -> Event:
    rec = decide_cancel(_submitted(), client="alice@example", timestamp=T0 + 1).record
    return Event(
        seq=2,
        datasource_id=rec.datasource_id,
        type="cancel",
        job=rec.job,
        client=rec.client,
        timestamp=T0 + 1,
        record=rec,
        data=cancel_entry_data(rec),
    )


def _rejected(name: str, instance: Any) -> str:
    with pytest.raises(AssertionError) as info:
        validate(name, instance)
    return str(info.value)


# -- the schemas themselves ----------------------------------------------------------------------


def test_every_expected_schema_is_present() -> None:
    assert set(SCHEMA_NAMES) == EXPECTED
    assert {p.stem for p in schemas_dir().glob("*.json")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = SCHEMAS[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{BASE_URI}{name}.json"
    assert schema["title"]
    assert schema["description"]


def _properties(node: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every (name, subschema) under a ``properties`` keyword, anywhere in ``node``."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                found.extend(value.items())
            found.extend(_properties(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_properties(item))
    return found


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_property_is_described(name: str) -> None:
    for prop, sub in _properties(SCHEMAS[name]):
        # Property subschemas of if/then/else only narrow an already described property.
        if set(sub) <= {"const", "$ref"} and prop in {"type", "data"}:
            continue
        assert sub.get("description"), f"{name}: property {prop!r} has no description"


def test_status_enum_matches_models() -> None:
    defs = SCHEMAS["common"]["$defs"]
    assert set(defs["status"]["enum"]) == STATUS_VALUES
    assert set(defs["driver_status"]["enum"]) == STATUS_VALUES - {"submitted"}


def test_error_codes_match_error_tree() -> None:
    codes = {cls.code for cls in ERROR_CLASSES}
    assert set(SCHEMAS["error"]["properties"]["code"]["enum"]) == codes


def test_unknown_schema_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no schema"):
        validate("nope", {})


# -- good records ----------------------------------------------------------------------------------


def test_submitted_status_record_validates() -> None:
    wire = _submitted().to_wire()
    assert "response" not in wire and "progress" not in wire
    validate("status_record", wire)


def test_completed_status_record_with_optional_fields_validates() -> None:
    wire = _completed().to_wire()
    assert {"response", "error", "progress"} <= set(wire)
    validate("status_record", wire)


def test_null_response_is_a_response() -> None:
    rec = decide_update(
        _submitted(), StatusUpdate(Status.FAILED, response=None, has_response=True), timestamp=T0
    ).record
    assert rec.to_wire()["response"] is None
    validate("status_record", rec.to_wire())


def test_status_record_survives_the_codec() -> None:
    validate_json("status_record", codec.dumps(_completed().to_wire()))


def test_job_records_validate() -> None:
    validate("job", {"job": "a", "request": None})
    validate("job", {"job": "A.b_c~d:e-9" * 11 + "xyz", "request": [1, 2]})
    validate("job", {"job": "j", "request": {"x": 1}, "client": "alice@example"})


def test_request_stream_entry_validates() -> None:
    entry = _request_event().stream_entry()
    validate("stream_entry", entry)
    validate("job", entry["data"])


def test_cancel_stream_entry_validates() -> None:
    validate("stream_entry", _cancel_event().stream_entry())


@pytest.mark.parametrize("event", [_request_event(), _cancel_event()], ids=["request", "cancel"])
def test_notification_validates(event: Event) -> None:
    validate("notification", event.notification())


def test_status_updates_validate() -> None:
    validate("status_update", {"status": "accepted"})
    validate("status_update", {"status": "retrying", "progress": 0, "error": "try again"})
    validate("status_update", {"status": "complete", "response": None, "progress": 1})


def test_errors_validate() -> None:
    for cls in ERROR_CLASSES:
        err = cls()
        validate("error", {"error": err.message, "code": err.code})


def test_datasources_validate() -> None:
    plain = Datasource("ds1").to_wire()
    typed = Datasource("ds2", "adds numbers", {"type": "object", "required": ["n"]}).to_wire()
    validate("datasource", plain)
    validate("datasource", typed)
    validate("catalogue", {"datasources": [plain, typed]})
    validate("catalogue", {"datasources": []})
    validate("datasource_declaration", {})
    validate("datasource_declaration", {"description": "d", "request_schema": True})
    validate(
        "datasource_declaration",
        {"request_schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    )


def test_job_list_validates() -> None:
    records = [_completed().to_wire(), _submitted().to_wire()]
    validate("job_list", {"jobs": records, "next": "opaque-cursor"})
    validate("job_list", {"jobs": [], "next": None})


def test_health_validates() -> None:
    validate("health", {"status": "ok"})


# -- bad records -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "good", "missing"),
    [
        ("job", {"job": "j", "request": 1}, "request"),
        ("job", {"job": "j", "request": 1}, "job"),
        ("status_record", _submitted().to_wire(), "version"),
        ("status_record", _submitted().to_wire(), "cancel_requested"),
        ("status_update", {"status": "complete"}, "status"),
        ("stream_entry", _request_event().stream_entry(), "seq"),
        ("notification", _request_event().notification(), "data"),
        ("error", {"error": "x", "code": "conflict"}, "code"),
        ("datasource", Datasource("d").to_wire(), "datasource_id"),
        ("job_list", {"jobs": [], "next": None}, "next"),
        ("catalogue", {"datasources": []}, "datasources"),
        ("health", {"status": "ok"}, "status"),
    ],
)
def test_missing_field_is_rejected(name: str, good: dict[str, Any], missing: str) -> None:
    validate(name, good)
    bad = {k: v for k, v in good.items() if k != missing}
    assert missing in _rejected(name, bad)


@pytest.mark.parametrize(
    ("name", "good"),
    [
        ("job", {"job": "j", "request": 1}),
        ("status_record", _completed().to_wire()),
        ("status_update", {"status": "complete"}),
        ("stream_entry", _request_event().stream_entry()),
        ("notification", _cancel_event().notification()),
        ("error", {"error": "x", "code": "conflict"}),
        ("datasource", Datasource("d").to_wire()),
        ("datasource_declaration", {"description": "d"}),
        ("job_list", {"jobs": [], "next": None}),
        ("catalogue", {"datasources": []}),
        ("health", {"status": "ok"}),
    ],
)
def test_extra_field_is_rejected(name: str, good: dict[str, Any]) -> None:
    assert "surprise" in _rejected(name, {**good, "surprise": 1})


def test_extra_field_in_nested_records_is_rejected() -> None:
    note = _request_event().notification()
    note["data"]["extra"] = True
    _rejected("notification", note)
    entry = _request_event().stream_entry()
    entry["data"]["extra"] = True
    _rejected("stream_entry", entry)
    cancel = _cancel_event().stream_entry()
    cancel["data"]["request"] = 1
    _rejected("stream_entry", cancel)
    listing = {"jobs": [{**_submitted().to_wire(), "extra": 1}], "next": None}
    _rejected("job_list", listing)
    cat = {"datasources": [{**Datasource("d").to_wire(), "extra": 1}]}
    _rejected("catalogue", cat)


def test_bad_status_is_rejected() -> None:
    assert "'done'" in _rejected("status_record", {**_submitted().to_wire(), "status": "done"})
    _rejected("status_update", {"status": "done"})
    # A driver may set any status but 'submitted'.
    _rejected("status_update", {"status": "submitted"})
    note = _request_event().notification()
    note["data"]["status"] = "SUBMITTED"
    _rejected("notification", note)


@pytest.mark.parametrize("job_id", ["", "a b", "a/b", "é", "x" * 129, "job?", "a\n", 7, None])
def test_bad_job_id_is_rejected(job_id: Any) -> None:
    _rejected("job", {"job": job_id, "request": {}})
    _rejected("status_record", {**_submitted().to_wire(), "job": job_id})
    _rejected("stream_entry", {**_request_event().stream_entry(), "job": job_id})
    entry = _cancel_event().stream_entry()
    entry["data"] = {**entry["data"], "job": job_id}
    _rejected("stream_entry", entry)


ID_SAMPLES = ["a", "A.b_c~d:e-9", "x" * 128, "x" * 129, "", "a b", "a/b", "é", "a\n", "\na", "u@h"]


@pytest.mark.parametrize(
    ("field", "regex"),
    [("job", JOB_ID_RE), ("datasource_id", DSID_RE), ("client", CLIENT_ID_RE)],
)
def test_id_patterns_agree_with_models(field: str, regex: re.Pattern[str]) -> None:
    for sample in ID_SAMPLES:
        record = {**_submitted().to_wire(), field: sample}
        if regex.fullmatch(sample):
            validate("status_record", record)
        else:
            _rejected("status_record", record)


def test_job_id_bounds() -> None:
    validate("job", {"job": "x" * 128, "request": 0})
    _rejected("job", {"job": "x" * 129, "request": 0})


@pytest.mark.parametrize("progress", [1.5, -0.1, "0.5", True])
def test_bad_progress_is_rejected(progress: Any) -> None:
    assert "progress" in _rejected(
        "status_record", {**_completed().to_wire(), "progress": progress}
    )
    _rejected("status_update", {"status": "accepted", "progress": progress})


def test_bad_error_code_is_rejected() -> None:
    assert "'teapot'" in _rejected("error", {"error": "x", "code": "teapot"})
    _rejected("error", {"error": "", "code": "conflict"})
    _rejected("error", {"error": "x", "code": "CONFLICT"})


def test_bad_numbers_are_rejected() -> None:
    rec = _submitted().to_wire()
    _rejected("status_record", {**rec, "version": 0})
    _rejected("status_record", {**rec, "version": 1.5})
    _rejected("status_record", {**rec, "submitted_at": -1})
    _rejected("status_record", {**rec, "updated_at": "now"})
    _rejected("status_record", {**rec, "cancel_requested": 0})
    _rejected("stream_entry", {**_request_event().stream_entry(), "seq": 0})
    _rejected("notification", {**_request_event().notification(), "seq": -3})


def test_bad_stream_entries_are_rejected() -> None:
    entry = _request_event().stream_entry()
    _rejected("stream_entry", {**entry, "type": "status"})
    # A request entry's data is the job record with its client.
    data = {k: v for k, v in entry["data"].items() if k != "client"}
    assert "client" in _rejected("stream_entry", {**entry, "data": data})
    # A cancel entry's data is exactly {"job", "client"}.
    cancel = _cancel_event().stream_entry()
    _rejected("stream_entry", {**cancel, "data": {"job": cancel["job"]}})
    # A request entry may not carry cancel data, nor the reverse.
    _rejected("stream_entry", {**entry, "data": cancel["data"]})
    _rejected("stream_entry", {**cancel, "data": entry["data"]})


def test_bad_notification_is_rejected() -> None:
    note = _request_event().notification()
    _rejected("notification", {**note, "type": "request"})
    _rejected("notification", {**note, "data": {}})


def test_bad_datasources_are_rejected() -> None:
    _rejected("datasource", {"datasource_id": "bad id", "description": ""})
    _rejected("datasource_declaration", {"description": 3})
    _rejected("datasource_declaration", {"request_schema": {"type": "nonsense"}})
    _rejected("datasource_declaration", {"request_schema": 5})
    _rejected("job_list", {"jobs": [], "next": ""})
    _rejected("job_list", {"jobs": [{}], "next": None})
    _rejected("health", {"status": "degraded"})


def test_failure_message_names_the_path() -> None:
    note = _request_event().notification()
    bad = copy.deepcopy(note)
    bad["data"]["progress"] = 1.5
    message = _rejected("notification", bad)
    assert "$.data.progress" in message and "1.5" in message


def test_validate_json_decodes_and_returns() -> None:
    body = orjson.dumps({"status": "ok"})
    assert validate_json("health", body) == {"status": "ok"}
    assert validate_json("health", body.decode()) == {"status": "ok"}
    with pytest.raises(AssertionError):
        validate_json("health", b'{"status": "down"}')
