"""A job record in two stored parts: its JSON without the request, and the request's JSON.
The parts join by concatenation into exactly the record's encoding (request last)."""

from __future__ import annotations

from dataclasses import replace

import orjson

from jobqueue_store.models import (
    JobRecord,
    Lease,
    Status,
    evolve,
    record_from_parts,
    with_request,
)

REQUEST = {"text": 'caf\u00e9 "q" \\ \u0000', "big": 2**63 - 1, "nested": [{"a": None}], "": 1}


def _record(**changes: object) -> JobRecord:
    record = JobRecord("ds", "j1", "app", Status.ACCEPTED, REQUEST, False, 2, 1, 2)
    return replace(record, **changes) if changes else record


def test_the_parts_join_into_the_record_with_the_request_last() -> None:
    for record in (
        _record(),
        _record(response={"request": 1}, has_response=True, error="e", progress=0.5),
        _record(lease=Lease("l1", "w1", 1, 9), attempts=1, deadline=5, schedule="s", revision=2),
        _record(request=None),
        _record(request=[1, "two"]),
    ):
        wire = record.wire_bytes()
        assert wire == orjson.dumps(record.to_wire())
        assert list(orjson.loads(wire))[-1] == "request"
        assert wire == with_request(record.rest_bytes(), record.request_bytes())
        assert "request" not in orjson.loads(record.rest_bytes())
        assert orjson.loads(record.request_bytes()) == record.request


def test_a_record_read_from_its_parts_is_the_record_written() -> None:
    record = _record(response=[1], has_response=True)
    rest, request = record.rest_bytes(), record.request_bytes()
    for parts in ((rest, request), (rest.decode(), request.decode())):
        read = record_from_parts(*parts)
        assert read == record
        assert read.wire_bytes() == record.wire_bytes()
        assert read.request_bytes() == request  # the stored text, as bytes
    # A row written before requests were stored apart holds the whole record.
    assert record_from_parts(record.wire_bytes(), None) == record


def test_a_changed_record_reuses_the_request_text_only_while_the_request_stays() -> None:
    record = record_from_parts(_record().rest_bytes(), _record().request_bytes())
    text = record.request_bytes()
    accepted = evolve(record, status=Status.RUNNING, version=3)
    assert accepted.request_bytes() is text
    assert orjson.loads(accepted.wire_bytes()) == accepted.to_wire()
    revised = evolve(record, request={"n": 2})
    assert revised.request_bytes() == b'{"n":2}'
    assert orjson.loads(revised.wire_bytes())["request"] == {"n": 2}
    replaced = replace(record, request={"n": 3})
    assert orjson.loads(replaced.wire_bytes())["request"] == {"n": 3}


def test_an_entry_s_data_gives_back_the_request_text_it_holds() -> None:
    """The request is the last member of a request or update entry's data; the members before
    it are ids and numbers, so the first ``,"request":`` is its own, whatever the request holds
    (a nested "request" key, the same text inside a string)."""
    from jobqueue_store.lifecycle import request_entry_data
    from jobqueue_store.models import entry_request
    from jobqueue_store.revisions import update_entry_data

    tricky = {"request": {"request": ',"request":'}, "s": '"}', "": [',"request":']}
    for request in (REQUEST, tricky, None, 0, "x", [[]]):
        record = _record(request=request, revision=3, rollback_of=2)
        for data in (
            request_entry_data(record),
            request_entry_data(record, timeout=30),
            update_entry_data(record, 2),
        ):
            text = orjson.dumps(data)
            assert entry_request(text) == record.request_bytes()
            assert entry_request(text.decode()) == record.request_bytes()


def test_a_record_read_with_its_entry_is_the_record_written() -> None:
    """How both stores read a job row or an event: its stored record and the data of the entry
    holding its request (``None``: a row written before, whose record is whole)."""
    from jobqueue_store.lifecycle import request_entry_data
    from jobqueue_store.models import record_from_entry

    record = _record(response=[1], has_response=True)
    entry = orjson.dumps(request_entry_data(record, timeout=30))
    rest = record.rest_bytes()
    for parts in ((rest, entry), (rest.decode(), entry.decode())):
        read = record_from_entry(*parts)
        assert read == record
        assert read.wire_bytes() == record.wire_bytes()
        assert read.request_bytes() == record.request_bytes()
    assert record_from_entry(record.wire_bytes(), None) == record
