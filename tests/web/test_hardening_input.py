"""Inputs that used to stall the store, break a datasource or be altered silently, through the
real server on every backend: pathological request schemas, self-referencing schemas, integers
beyond 64 bits and NUL characters."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.web.conftest import Api

JSON = {"Content-Type": "application/json"}
CATASTROPHIC = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}


# -- 1. a request_schema cannot stall the store ----------------------------------------------------


@pytest.mark.timeout(30)
async def test_catastrophic_pattern_does_not_stall_the_store(api: Api) -> None:
    await api.declare("redos", request_schema=CATASTROPHIC)
    tok = api.token()
    body = {"job": "j1", "request": {"s": "a" * 40 + "!"}}
    submit = asyncio.create_task(api.client.post("/redos/job/", json=body, headers=api.auth(tok)))
    await asyncio.sleep(0)  # the submit is on its way
    started = time.monotonic()
    health = await api.client.get("/healthz")
    assert health.status == 200
    assert time.monotonic() - started < 0.1, "the store answered /healthz late"
    resp = await submit
    reply = await resp.json()
    assert resp.status == 400, reply
    assert "request_schema" in reply["error"] and "s" in reply["error"], reply
    # The same pattern still accepts what it should.
    ok = {"job": "j2", "request": {"s": "a" * 40}}
    await api.call("POST", "/redos/job/", tok, ok, expect=201)


@pytest.mark.timeout(30)
async def test_catastrophic_pattern_properties_and_long_strings(api: Api) -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^(x+x+)+y$": {"type": "integer"}},
        "properties": {"t": {"pattern": "(a|aa)+$"}},
    }
    await api.declare("redos2", request_schema=schema)
    tok = api.token()
    started = time.monotonic()
    key = "x" * 5000
    await api.call("POST", "/redos2/job/", tok, {"job": "j1", "request": {key: "1"}}, expect=201)
    bad = {"job": "j2", "request": {"t": "a" * 100_000 + "!"}}
    err = await api.call("POST", "/redos2/job/", tok, bad, expect=400)
    assert "request_schema" in err["error"]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        # Look-around and back-references need a backtracking engine: refused when declared.
        ({"properties": {"s": {"pattern": "^(?=a)a$"}}}, ("pattern", "look-around")),
        ({"patternProperties": {"(a)\\1": {}}}, ("pattern", "look-around")),
        # A pattern whose compiled program would be huge.
        ({"pattern": "(((a{100}){100}){100})"}, ("pattern",)),
    ],
)
async def test_patterns_the_linear_engine_cannot_run_are_refused(
    api: Api, schema: dict[str, Any], words: tuple[str, ...]
) -> None:
    body = {"description": "x", "request_schema": schema}
    err = await api.call("PUT", "/jobs/bad", api.token("driver"), body, expect=400)
    for word in words:
        assert word in err["error"], err


async def test_format_is_an_annotation_even_for_regex(api: Api) -> None:
    # Formats are not checked, so "format": "regex" never compiles a request's string.
    schema = {"properties": {"r": {"type": "string", "format": "regex"}}}
    await api.declare("fmt", request_schema=schema)
    body = {"job": "j1", "request": {"r": "(" * 10_000 + "a+)+" * 10_000 + "$"}}
    await api.call("POST", "/fmt/job/", api.token(), body, expect=201)


async def test_oversized_schema_is_refused_when_declared(api: Api) -> None:
    schema = {"properties": {f"p{i}": {"type": "integer", "minimum": i} for i in range(3000)}}
    body = {"description": "x", "request_schema": schema}
    err = await api.call("PUT", "/jobs/big", api.token("driver"), body, expect=400)
    assert "request_schema" in err["error"] and "bytes" in err["error"], err


async def test_exponential_schema_is_refused_when_declared(api: Api) -> None:
    # Three alternatives that each recurse into the items: checking [[[...]]] 40 levels deep
    # would evaluate 3^40 subschemas.
    branch = {"items": {"$ref": "#/$defs/a"}}
    schema = {
        "$defs": {"a": {"type": "array", "anyOf": [branch, {**branch, "maxItems": 5}, branch]}},
        "$ref": "#/$defs/a",
    }
    body = {"description": "x", "request_schema": schema}
    err = await api.call("PUT", "/jobs/exp", api.token("driver"), body, expect=400)
    assert "subschemas" in err["error"], err


async def test_recursive_schema_without_branching_is_accepted(api: Api) -> None:
    tree = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
        },
        "required": ["name"],
    }
    await api.declare("tree", request_schema=tree)
    tok = api.token()
    node: dict[str, Any] = {"name": "leaf"}
    for i in range(20):
        node = {"name": f"n{i}", "children": [node, {"name": "x"}]}
    await api.call("POST", "/tree/job/", tok, {"job": "j1", "request": node}, expect=201)
    node["children"][1] = {"children": []}
    err = await api.call("POST", "/tree/job/", tok, {"job": "j2", "request": node}, expect=400)
    # Where it fails is named unless working it out runs past its time budget (a loaded machine).
    assert "request_schema" in err["error"], err


async def test_request_too_costly_for_its_schema_is_400(api: Api) -> None:
    # Each value is checked against 1,000 subschemas: a large request would cost too much.
    schema = {"items": {"allOf": [{"minimum": i - 1000} for i in range(1000)]}}
    await api.declare("costly", request_schema=schema)
    tok = api.token()
    await api.call("POST", "/costly/job/", tok, {"job": "j1", "request": [5] * 10}, expect=201)
    body = {"job": "j2", "request": [5] * 100_000}
    err = await api.call("POST", "/costly/job/", tok, body, expect=400)
    assert "costly" in err["error"] and "request_schema" in err["error"], err
    await api.call("GET", "/costly/job/j2/", tok, expect=404)


# -- 2. self-referencing schemas -------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"$ref": "#", "type": "object"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {
            "$defs": {
                "a": {"allOf": [{"$ref": "#/$defs/b"}]},
                "b": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]},
            },
            "properties": {"x": {"$ref": "#/$defs/a"}},
        },
    ],
)
async def test_reference_cycle_is_refused_when_declared(api: Api, schema: dict[str, Any]) -> None:
    driver = api.token("driver")
    body = {"description": "x", "request_schema": schema}
    err = await api.call("PUT", "/jobs/cycle", driver, body, expect=400)
    assert "cycle" in err["error"] and "request_schema" in err["error"], err
    # Nothing was declared: a submit is 404, never a 500.
    await api.call("POST", "/cycle/job/", api.token(), {"job": "j1", "request": {}}, expect=404)


# -- 3. integers outside signed 64 bits ------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [b"18446744073709551617", b"9223372036854775808", b"-9223372036854775809", b"1" * 300],
)
async def test_integers_beyond_64_bits_are_400(api: Api, number: bytes) -> None:
    tok, driver = api.token(), api.token("driver")
    data = b'{"job": "j1", "request": {"n": ' + number + b"}}"
    err = await api.call("POST", "/ds1/job/", tok, expect=400, data=data, headers=JSON)
    assert "64 bits" in err["error"], err
    await api.call("GET", "/ds1/job/j1/", tok, expect=404)
    # Every JSON body: a driver's response and a datasource's schema too.
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    data = b'{"status": "complete", "response": [' + number + b"]}"
    await api.call("POST", "/jobs/ds1/job/j1/", driver, expect=400, data=data, headers=JSON)
    data = b'{"request_schema": {"maximum": ' + number + b"}}"
    await api.call("PUT", "/jobs/ds2", driver, expect=400, data=data, headers=JSON)


async def test_integers_at_the_64_bit_bounds_and_floats_are_kept(api: Api) -> None:
    tok = api.token()
    data = (
        b'{"job": "j1", "request": [9223372036854775807, -9223372036854775808, 1e30, '
        b'12345678901234567890.5, "123456789012345678901234567890"]}'
    )
    await api.call("POST", "/ds1/job/", tok, expect=201, data=data, headers=JSON)
    rec = await api.call("GET", "/jobs/ds1/job/j1/", api.token("driver"), expect=200)
    assert rec["request"] == [
        9223372036854775807,
        -9223372036854775808,
        1e30,
        12345678901234567890.5,
        "123456789012345678901234567890",
    ]


# -- 4. NUL characters -----------------------------------------------------------------------------


async def test_nul_in_description_or_error_is_400_on_every_store(api: Api) -> None:
    driver, tok = api.token("driver"), api.token()
    err = await api.call("PUT", "/jobs/ds2", driver, {"description": "a\x00b"}, expect=400)
    assert "NUL" in err["error"] and "description" in err["error"], err
    await api.call("GET", "/jobs/ds2/latest", driver, expect=404)
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    body = {"status": "failed", "error": "bad\x00"}
    err = await api.call("POST", "/jobs/ds1/job/j1/", driver, body, expect=400)
    assert "NUL" in err["error"] and "error" in err["error"], err
    rec = await api.call("GET", "/ds1/job/j1/", tok, expect=200)
    assert rec["status"] == "submitted"


async def test_nul_inside_json_values_is_kept_exactly_on_every_store(api: Api) -> None:
    driver, tok = api.token("driver"), api.token()
    schema = {"properties": {"k\x00": {"const": "v\x00"}}}
    await api.declare("nul", request_schema=schema)
    request = {"k\x00": "v\x00", "list": ["\x00"]}
    await api.call("POST", "/nul/job/", tok, {"job": "j1", "request": request}, expect=201)
    body = {"status": "complete", "response": {"r\x00": "\x00"}}
    await api.call("POST", "/jobs/nul/job/j1/", driver, body, expect=200)
    rec = await api.call("GET", "/nul/job/j1/", tok, expect=200)
    assert rec["response"] == {"r\x00": "\x00"}
    rec = await api.call("GET", "/jobs/nul/job/j1/", driver, expect=200)
    assert rec["request"] == request
    cat = await api.call("GET", "/cat", driver, expect=200)
    declared = next(d for d in cat["datasources"] if d["datasource_id"] == "nul")
    assert declared["request_schema"] == schema
