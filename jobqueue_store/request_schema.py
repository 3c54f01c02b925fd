"""Datasource request schemas: checked when a driver declares them, compiled once per
datasource, and applied to every submit.

A schema never makes the store fetch anything: a ``$ref`` to another document is refused when the
datasource is declared (the default resolver would fetch any URL, blocking the event loop, on a
driver's say-so).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema

from jobqueue_store import codec
from jobqueue_store.errors import BadRequest
from jobqueue_store.models import Datasource

_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()
"""An empty registry: a request_schema's ``$ref`` to another document is never fetched (the
default would fetch any URL, blocking the loop, on a driver's say-so)."""

_NOT_SCHEMAS = frozenset({"enum", "const", "examples", "default"})
"""Keywords whose values are data, not subschemas: a ``$ref`` key inside them is not a reference."""


def _references(node: Any) -> list[str]:
    """Every ``$ref`` / ``$dynamicRef`` string in a schema, data keywords excluded."""
    if isinstance(node, list):
        return [ref for item in node for ref in _references(item)]
    if not isinstance(node, dict):
        return []
    out: list[str] = []
    for key, value in node.items():
        if key in ("$ref", "$dynamicRef") and isinstance(value, str):
            out.append(value)
        elif key not in _NOT_SCHEMAS:
            out.extend(_references(value))
    return out


def _has_nested_id(node: Any, root: bool = True) -> bool:
    if isinstance(node, list):
        return any(_has_nested_id(item, False) for item in node)
    if not isinstance(node, dict):
        return False
    if not root and isinstance(node.get("$id"), str):
        return True
    return any(_has_nested_id(v, False) for k, v in node.items() if k not in _NOT_SCHEMAS)


def _unresolvable_reference(schema: dict[str, Any]) -> str | None:
    """The first reference of ``schema`` that does not resolve within it, or ``None``.

    Schemas with nested ``$id`` (where references resolve against several bases) are not checked
    here; their unresolvable references are caught when a request is validated.
    """
    if _has_nested_id(schema):
        return None
    resource = referencing.jsonschema.DRAFT202012.create_resource(schema)
    base = resource.id() or ""
    resolver = _NO_RETRIEVAL.with_resource(base, resource).resolver(base_uri=base)
    for ref in _references(schema):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            return ref
    return None


def check(schema: dict[str, Any]) -> None:
    """Raise :class:`BadRequest` unless ``schema`` is a valid JSON Schema whose references all
    resolve inside it."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequest(f'"request_schema" is not a valid JSON Schema: {exc.message}.') from None
    unresolvable = _unresolvable_reference(schema)
    if unresolvable is not None:
        raise BadRequest(
            f'"request_schema" refers to {unresolvable!r}, which it does not contain: '
            "the store never fetches other documents, so a $ref must point inside it."
        )


class Validators:
    """Compiled request schemas by datasource, rebuilt when a datasource's schema changes."""

    def __init__(self) -> None:
        self._compiled: dict[str, tuple[dict[str, Any], bytes, Any]] = {}

    def _validator(self, datasource: Datasource, schema: dict[str, Any]) -> Any:
        cached = self._compiled.get(datasource.id)
        if cached is not None and cached[0] is schema:  # the same declaration: no re-encoding
            return cached[2]
        key = codec.canonical(schema)
        if cached is None or cached[1] != key:
            validator = jsonschema.validators.validator_for(schema)(schema, registry=_NO_RETRIEVAL)
        else:
            validator = cached[2]
        self._compiled[datasource.id] = (schema, key, validator)
        return validator

    def validate(self, datasource: Datasource, request: Any) -> None:
        """Raise :class:`BadRequest`, naming where and why, if ``request`` does not match the
        datasource's ``request_schema`` (none: anything goes)."""
        schema = datasource.request_schema
        if schema is None:
            return
        validator = self._validator(datasource, schema)
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(request))
        except referencing.exceptions.Unresolvable as exc:
            raise BadRequest(
                f"The request_schema of datasource '{datasource.id}' has a $ref that does not "
                f"resolve ({exc}): its driver must declare it again with a schema that is complete."
            ) from None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(the whole request)"
            raise BadRequest(
                f"The request does not match the request_schema of datasource '{datasource.id}' at "
                f"{where}: {error.message}."
            )
