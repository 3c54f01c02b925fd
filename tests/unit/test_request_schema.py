"""Request schemas: what a declaration refuses, the bound on checks per value, and the 400
sentences for requests that do not match."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_store import request_schema
from jobqueue_store.errors import BadRequest
from jobqueue_store.models import Datasource
from jobqueue_store.request_schema import MAX_CHECKS_PER_VALUE, Validators, check


def _checks(schema: dict[str, Any]) -> int:
    return request_schema._Graph(schema).checks_per_value(MAX_CHECKS_PER_VALUE)


def _refused(schema: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as info:
        check(schema)
    return str(info.value)


def _sentence(schema: dict[str, Any], request: Any) -> str:
    with pytest.raises(BadRequest) as info:
        Validators().validate(Datasource("d", "", schema), request)
    return str(info.value)


def test_checks_per_value_counts_keywords_and_takes_one_property_per_value() -> None:
    assert _checks({"type": "string"}) == 2
    # properties: a value inside the object meets one of them, the costliest counts.
    wide = {"properties": {f"p{i}": {"type": "string", "maxLength": 3} for i in range(100)}}
    assert _checks(wide) == 3
    # allOf adds up: every member applies to the same value.
    assert _checks({"allOf": [{"minimum": 0}] * 10}) == 2 + 10 * 2


def test_recursion_without_branching_has_a_constant_bound() -> None:
    tree = {"properties": {"kids": {"items": {"$ref": "#"}}}}
    assert _checks(tree) < 10


def test_recursion_that_branches_is_refused() -> None:
    branch = {"items": {"$ref": "#/$defs/a"}}
    schema = {"$defs": {"a": {"anyOf": [branch, branch]}}, "$ref": "#/$defs/a"}
    assert _checks(schema) > MAX_CHECKS_PER_VALUE
    assert "more than 10,000" in _refused(schema)


def test_linear_growth_over_the_whole_depth_is_bounded_not_refused() -> None:
    schema = {
        "$defs": {
            "a": {"items": {"anyOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]}},
            "b": {"items": {"$ref": "#/$defs/b"}},
        },
        "$ref": "#/$defs/a",
    }
    assert 1000 < _checks(schema) <= MAX_CHECKS_PER_VALUE
    check(schema)


@pytest.mark.parametrize(
    ("schema", "cycle"),
    [
        ({"$ref": "#"}, "# -> #"),
        (
            {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"not": {"$ref": "#/$defs/a"}}}},
            "#/$defs/b -> #/$defs/b/not -> #/$defs/a -> #/$defs/b",
        ),
    ],
)
def test_in_place_reference_cycles_are_refused_with_their_path(
    schema: dict[str, Any], cycle: str
) -> None:
    message = _refused(schema)
    assert "cycle" in message and cycle in message, message


def test_a_cycle_through_items_or_properties_is_not_a_cycle() -> None:
    check({"$defs": {"a": {"properties": {"x": {"$ref": "#"}}}}, "$ref": "#/$defs/a"})


def test_earlier_drafts_and_their_keywords() -> None:
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"n": {"type": "integer"}},
        "dependencies": {"x": {"required": ["y"]}, "z": ["w"]},
        "properties": {"n": {"$ref": "#/definitions/n"}},
        "items": [{"type": "string"}],
        "additionalItems": False,
    }
    check(draft7)
    assert "at n: 'a' is not of type 'integer'" in _sentence(draft7, {"n": "a"})
    draft2019 = {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$recursiveAnchor": True,
        "additionalProperties": {"$recursiveRef": "#"},
        "maxProperties": 2,
    }
    check(draft2019)
    assert "at a: " in _sentence(draft2019, {"a": {"b": {}, "c": {}, "d": {}}})
    # At the top, a recursive reference applies the schema to itself: a cycle.
    assert "cycle" in _refused({**draft2019, "$recursiveRef": "#"})


def test_an_unknown_dialect_is_refused_and_never_fetched() -> None:
    # Port 9 (discard) on this machine: a fetch would fail or hang; nothing is fetched.
    message = _refused({"$schema": "http://127.0.0.1:9/my-dialect"})
    assert "$schema" in message and "2020-12" in message


def test_invalid_schema_names_where() -> None:
    message = _refused({"properties": {"n": {"minimum": "x"}}})
    assert "not a valid JSON Schema" in message and "properties/n/minimum" in message


def test_sentences_use_the_linear_engine_for_patterns() -> None:
    schema = {
        "patternProperties": {"^(x+x+)+y$": {"type": "integer"}},
        "additionalProperties": False,
    }
    message = _sentence(schema, {"x" * 5000: 1})
    assert "Additional properties are not allowed" in message
    message = _sentence({"pattern": "^(a+)+$"}, "a" * 5000 + "!")
    assert "does not match '^(a+)+$'" in message


def test_unique_items_is_checked_in_linear_time_and_explained() -> None:
    schema = {"uniqueItems": True}
    items: list[Any] = [{"i": i} for i in range(20_000)]
    Validators().validate(Datasource("d", "", schema), items)
    assert "non-unique" in _sentence(schema, [*items[:2000], {"i": 7}])
    assert "non-unique" in _sentence(schema, [1, 1.0])
    Validators().validate(Datasource("d", "", schema), [1, True])


def test_a_sentence_past_its_budget_says_only_that_the_request_does_not_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(request_schema, "MESSAGE_BUDGET", -1.0)
    message = _sentence({"properties": {"n": {"type": "integer"}}}, {"n": "x"})
    assert message == (
        "The request does not match the request_schema of datasource 'd' "
        "(finding where took too long)."
    )


def test_a_request_over_the_budget_is_refused_before_checking() -> None:
    schema = {"items": {"allOf": [{"minimum": 0}] * 500}}
    Validators().validate(Datasource("d", "", schema), [1] * 100)
    message = _sentence(schema, [1] * 5000)
    assert "too costly" in message and "2,000,000" in message
