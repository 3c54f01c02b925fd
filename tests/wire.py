"""Validate wire records against the project's JSON Schemas (``schemas/*.json``).

Every test that looks at a body, a stream entry or a notification checks its shape here::

    from tests.wire import validate
    validate("status_record", reply_json)

The schemas are loaded once, registered by their ``$id`` in a ``referencing`` registry so that the
relative ``$ref`` between files resolve, and checked with ``Draft202012Validator`` with format
checking. ``common.json`` holds only shared ``$defs``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

BASE_URI = "https://jobqueue-store.dev/schemas/"


def schemas_dir() -> Path:
    """The repository's ``schemas/`` folder."""
    return Path(__file__).resolve().parent.parent / "schemas"


def _load_all() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(schemas_dir().glob("*.json")):
        schema = orjson.loads(path.read_bytes())
        if not isinstance(schema, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        out[path.stem] = schema
    return out


SCHEMAS: Mapping[str, dict[str, Any]] = _load_all()
"""Every schema, by file name without ``.json``."""

SCHEMA_NAMES: tuple[str, ...] = tuple(SCHEMAS)
"""The names ``validate`` accepts, sorted (``common`` included: it holds only ``$defs``)."""


@functools.cache
def registry() -> Registry[Any]:
    """A registry holding every schema under its ``$id`` (``BASE_URI`` + file name)."""
    resources = []
    for name, schema in SCHEMAS.items():
        expected = f"{BASE_URI}{name}.json"
        if schema.get("$id") != expected:
            raise ValueError(f"schemas/{name}.json: $id must be {expected!r}")
        resources.append((expected, Resource.from_contents(schema)))
    return Registry().with_resources(resources)


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The cached validator of schema ``name`` (``KeyError`` if there is no such schema)."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return Draft202012Validator(
        SCHEMAS[name],
        registry=registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def validate(name: str, instance: Any) -> None:
    """Assert that ``instance`` (decoded JSON) is valid against ``schemas/<name>.json``.

    Raises ``AssertionError`` carrying the most relevant jsonschema message and the path of the
    offending value.
    """
    error = best_match(validator(name).iter_errors(instance))
    if error is not None:
        where = error.json_path
        raise AssertionError(f"not a valid {name} record at {where}: {error.message}")


def validate_json(name: str, body: bytes | str) -> Any:
    """Decode ``body`` with orjson, validate it as ``validate`` does, and return the value."""
    value = orjson.loads(body)
    validate(name, value)
    return value
