"""Datasource request schemas: checked when a driver declares them, compiled once per
datasource, and applied to every submit without ever stalling the store.

- A schema never makes the store fetch anything: a ``$ref`` to another document is refused when
  the datasource is declared (the default resolver would fetch any URL, blocking the event loop,
  on a driver's say-so).
- Requests are checked by jsonschema-rs with the linear-time ``regex`` engine: ``pattern`` and
  ``patternProperties`` cannot backtrack, whatever the pattern and the string. Patterns that need
  a backtracking engine (look-around, back-references) or compile too large are refused when
  declared. ``format`` is an annotation, never checked (as before), so ``"format": "regex"`` never
  compiles a request's string.
- Declaring refuses a schema over :data:`MAX_SCHEMA_BYTES`, a ``$ref`` cycle that never descends
  into the request (``{"$ref": "#"}``, ``a -> b -> a``), and a schema that may check one request
  value against more than :data:`MAX_CHECKS_PER_VALUE` subschemas (alternatives that recurse:
  the cost of such schemas grows exponentially with the request's depth).
- Each submit has a budget: its request's values times the schema's checks per value must stay
  within :data:`MAX_CHECKS_PER_REQUEST` (about 40 ms of checking at worst), or it is refused with
  a 400 before any checking starts. Working out the sentence for a request that does not match
  has a wall-clock budget, :data:`MESSAGE_BUDGET`; past it the 400 says only that the request does
  not match.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import jsonschema
import jsonschema_rs
import referencing
import referencing.exceptions
import referencing.jsonschema

from jobqueue_store import codec
from jobqueue_store.errors import BadRequest
from jobqueue_store.models import Datasource

MAX_SCHEMA_BYTES = 64 * 1024
"""Largest request_schema accepted, encoded as compact JSON."""
MAX_CHECKS_PER_VALUE = 10_000
"""Most subschema keywords a schema may apply to one value of a request, ``$ref`` followed."""
MAX_CHECKS_PER_REQUEST = 2_000_000
"""Budget of one submit: the request's values times the schema's checks per value."""
MESSAGE_BUDGET = 0.05
"""Seconds spent at most working out where and why a request does not match its schema."""
MAX_REQUEST_DEPTH = 1024
"""Deepest request nesting considered when bounding a schema's checks per value (as deep as a
body can nest at all: JSON deeper than 1,024 levels is not decoded)."""
REGEX_SIZE_LIMIT = 1 << 20
"""Largest compiled program of one ``pattern`` (bytes, the regex engine's own measure)."""

_Resolver = referencing._core.Resolver[Any]

_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()
"""An empty registry: a request_schema's ``$ref`` to another document is never fetched (the
default would fetch any URL, blocking the loop, on a driver's say-so)."""

_NOT_SCHEMAS = frozenset({"enum", "const", "examples", "default"})
"""Keywords whose values are data, not subschemas: a ``$ref`` key inside them is not a reference."""

_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
# Applicators by how they apply their subschemas: to the same value (in place) or to the values
# inside it (descending); "exclusive" groups apply at most one of their subschemas to one value.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas", "dependencies")
_DESCEND_OBJECT_ALWAYS = ("propertyNames", "unevaluatedProperties")
_DESCEND_ARRAY_ALWAYS = ("contains", "unevaluatedItems", "additionalItems")
_DEFINITIONS = ("$defs", "definitions")
_DIALECTS = frozenset(
    {
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-04/schema",
    }
)


def _pattern_options() -> jsonschema_rs.RegexOptions:
    return jsonschema_rs.RegexOptions(size_limit=REGEX_SIZE_LIMIT)


# -- declaration checks -------------------------------------------------------------------------


def _references(node: Any) -> list[str]:
    """Every ``$ref`` / ``$dynamicRef`` string in a schema, data keywords excluded."""
    if isinstance(node, list):
        return [ref for item in node for ref in _references(item)]
    if not isinstance(node, dict):
        return []
    out: list[str] = []
    for key, value in node.items():
        if key in _REFS and isinstance(value, str):
            out.append("#" if key == "$recursiveRef" else value)
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


def _specification(schema: dict[str, Any]) -> referencing.Specification[Any]:
    """The reference rules of ``schema``'s dialect (2020-12 when it names none)."""
    dialect = schema.get("$schema")
    return referencing.jsonschema.specification_with(
        dialect if isinstance(dialect, str) else "", default=referencing.jsonschema.DRAFT202012
    )


def _resolver(schema: dict[str, Any]) -> _Resolver:
    resource = _specification(schema).create_resource(schema)
    base = resource.id() or ""
    registry: referencing.Registry[Any] = _NO_RETRIEVAL.with_resource(base, resource)
    return registry.resolver(base_uri=base)


def _unresolvable_reference(schema: dict[str, Any]) -> str | None:
    """The first reference of ``schema`` that does not resolve within it, or ``None``.

    Schemas with nested ``$id`` (where references resolve against several bases) are not checked
    here; their unresolvable references are caught when a request is validated.
    """
    if _has_nested_id(schema):
        return None
    resolver = _resolver(schema)
    for ref in _references(schema):
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            return ref
    return None


class _Node:
    """One subschema (an object) and how its applicators reach others."""

    __slots__ = ("arrays", "in_place", "objects", "weight", "where")

    def __init__(self, where: str, weight: int) -> None:
        self.where = where
        self.weight = weight
        self.in_place: list[int] = []
        # Descending applicators, per kind of container: groups of subschemas of which all
        # ("always") or at most one ("exclusive", e.g. properties) apply to one value inside.
        self.objects: list[tuple[bool, list[int]]] = []
        self.arrays: list[tuple[bool, list[int]]] = []


class _Graph:
    """The subschemas of a schema that can apply to a request, with ``$ref`` followed."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.nodes: dict[int, _Node] = {}
        self.root = id(schema)
        nested_id = _has_nested_id(schema)
        # Building a resolver crawls the whole schema: only when there is a reference to follow.
        first = _resolver(schema) if _references(schema) else None
        specification = _specification(schema)
        stack: list[tuple[Any, str, _Resolver | None]] = [(schema, "#", first)]
        while stack:
            node, where, resolver = stack.pop()
            if not isinstance(node, dict) or id(node) in self.nodes:
                continue
            if resolver is not None and where != "#" and isinstance(node.get("$id"), str):
                resource = specification.create_resource(node)
                resolver = resolver.in_subresource(resource)
            enum = node.get("enum")
            entry = _Node(where, 1 + len(node) + (len(enum) if isinstance(enum, list) else 0))
            self.nodes[id(node)] = entry

            def visit(
                child: Any, at: str, resolver: _Resolver | None = resolver, entry: _Node = entry
            ) -> int:
                if isinstance(child, dict):
                    stack.append((child, at, resolver))
                    return id(child)
                entry.weight += 1  # a boolean subschema: one check, nothing below it
                return 0

            for key, value in node.items():
                at = f"{where}/{key}"
                if key in _REFS and isinstance(value, str) and resolver is not None:
                    ref = "#" if key == "$recursiveRef" else value
                    try:
                        resolved = resolver.lookup(ref)
                    except referencing.exceptions.Unresolvable:
                        if nested_id:
                            continue  # refused when a request is checked, as before
                        raise
                    if isinstance(resolved.contents, dict):
                        stack.append((resolved.contents, ref, resolved.resolver))
                        entry.in_place.append(id(resolved.contents))
                elif key in _IN_PLACE_ONE:
                    entry.in_place.append(visit(value, at))
                elif key in _IN_PLACE_MANY and isinstance(value, list):
                    entry.in_place.extend(visit(v, f"{at}/{i}") for i, v in enumerate(value))
                elif key in _IN_PLACE_MAP and isinstance(value, dict):
                    entry.in_place.extend(visit(v, f"{at}/{k}") for k, v in value.items())
                elif key in _DEFINITIONS and isinstance(value, dict):
                    for name, sub in value.items():
                        visit(sub, f"{at}/{name}")
                elif key == "properties" and isinstance(value, dict):
                    # One property's subschema per value (or additionalProperties'): exclusive.
                    group = [visit(v, f"{at}/{k}") for k, v in value.items()]
                    entry.objects.append((True, group))
                elif key == "patternProperties" and isinstance(value, dict):
                    entry.objects.append((False, [visit(v, f"{at}/{k}") for k, v in value.items()]))
                elif key == "additionalProperties":
                    entry.objects.append((True, [visit(value, at)]))
                elif key in _DESCEND_OBJECT_ALWAYS:
                    entry.objects.append((False, [visit(value, at)]))
                elif key in _DESCEND_ARRAY_ALWAYS:
                    entry.arrays.append((False, [visit(value, at)]))
                elif key in ("items", "prefixItems"):
                    if isinstance(value, list):
                        group = [visit(v, f"{at}/{i}") for i, v in enumerate(value)]
                        entry.arrays.append((True, group))
                    else:
                        entry.arrays.append((True, [visit(value, at)]))
        for entry in self.nodes.values():
            entry.in_place = [n for n in entry.in_place if n]

    def in_place_cycle(self) -> list[str] | None:
        """Subschemas that apply one another to the same value in a loop, or ``None``."""
        state: dict[int, int] = {}  # 1: on the current path, 2: done
        for start in self.nodes:
            if start in state:
                continue
            path: list[int] = [start]
            iters: list[Iterator[int]] = [iter(self.nodes[start].in_place)]
            state[start] = 1
            while iters:
                nxt = next(iters[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    iters.pop()
                elif state.get(nxt) == 1:
                    loop = [*path[path.index(nxt) :], nxt]
                    return [self.nodes[n].where for n in loop]
                elif nxt not in state and nxt in self.nodes:
                    state[nxt] = 1
                    path.append(nxt)
                    iters.append(iter(self.nodes[nxt].in_place))
        return None

    def checks_per_value(self, limit: int) -> int:
        """An upper bound on the keywords checked against one value of a request at any depth up
        to :data:`MAX_REQUEST_DEPTH`, or the first bound found over ``limit``.

        ``cost[d][n]`` bounds the keywords that subschema ``n``, applied to a value, checks
        against one value ``d`` levels inside it. Applicators add up, except exclusive groups
        (``properties`` with ``additionalProperties``, ``items`` with ``prefixItems``), which
        apply one member to a value and count their costliest, and a value is either in an
        object or in an array.
        """
        order = self._in_place_order()
        order.reverse()  # subschemas applied in place come before those that apply them
        position = {n: i for i, n in enumerate(order)}
        applied_by: dict[int, list[int]] = {}  # subschema -> subschemas that apply it
        descended_by: dict[int, list[int]] = {}  # subschema -> subschemas that descend into it
        for n, node in self.nodes.items():
            for c in node.in_place:
                applied_by.setdefault(c, []).append(n)
            for _, members in node.objects + node.arrays:
                for m in members:
                    descended_by.setdefault(m, []).append(n)
        previous: dict[int, int] = {}
        recent: list[dict[int, int]] = []
        worst = 0
        active = order
        for depth in range(MAX_REQUEST_DEPTH + 1):
            current: dict[int, int] = {}
            for n in active:
                node = self.nodes[n]
                if depth == 0:
                    cost = node.weight
                else:
                    cost = max(_below(node.objects, previous), _below(node.arrays, previous))
                cost += sum(current.get(c, 0) for c in node.in_place)
                if cost:
                    current[n] = min(cost, limit + 1)
            top = current.get(self.root, 0)
            worst = max(worst, top)
            if worst > limit or not top or current in recent:
                break  # over the limit, nothing deeper, or repeating: deeper levels cost no more
            recent = [*recent[-3:], current]
            previous = current
            # Next level: only subschemas that descend into one that costs something here, and
            # those that apply them in place.
            reached = {p for c in current for p in descended_by.get(c, ())}
            stack = list(reached)
            while stack:
                for p in applied_by.get(stack.pop(), ()):
                    if p not in reached:
                        reached.add(p)
                        stack.append(p)
            active = sorted(reached, key=position.__getitem__)
        return worst

    def _in_place_order(self) -> list[int]:
        """Subschemas ordered so that each comes before those it applies in place (acyclic)."""
        seen: set[int] = set()
        post: list[int] = []
        for start in self.nodes:
            if start in seen:
                continue
            seen.add(start)
            stack = [(start, iter(self.nodes[start].in_place))]
            while stack:
                n, it = stack[-1]
                child = next(it, None)
                if child is None:
                    post.append(n)
                    stack.pop()
                elif child not in seen and child in self.nodes:
                    seen.add(child)
                    stack.append((child, iter(self.nodes[child].in_place)))
        post.reverse()
        return post


def _below(groups: list[tuple[bool, list[int]]], cost: dict[int, int]) -> int:
    total = 0
    for exclusive, members in groups:
        costs = [cost.get(m, 0) for m in members]
        total += (max(costs) if exclusive else sum(costs)) if costs else 0
    return total


def _compile(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(
        schema,
        validate_formats=False,
        pattern_options=_pattern_options(),
        offline=True,
    )


def _analyse(schema: dict[str, Any]) -> int:
    """``schema``'s checks per request value; :class:`BadRequest` for a reference cycle or a
    schema over :data:`MAX_CHECKS_PER_VALUE`."""
    graph = _Graph(schema)
    cycle = graph.in_place_cycle()
    if cycle is not None:
        raise BadRequest(
            '"request_schema" has a $ref cycle that never descends into the request '
            f"({' -> '.join(cycle)}): it would apply itself to the same value forever. "
            "Break the cycle, or make the reference go through properties or items."
        )
    checks = graph.checks_per_value(MAX_CHECKS_PER_VALUE)
    if checks > MAX_CHECKS_PER_VALUE:
        raise BadRequest(
            f'"request_schema" may check one request value against more than '
            f"{MAX_CHECKS_PER_VALUE:,} subschemas and keywords (references followed, up to "
            f"{MAX_REQUEST_DEPTH} levels deep): use fewer alternatives (anyOf, oneOf, allOf) "
            "that recurse through $ref."
        )
    return checks


def check(schema: dict[str, Any]) -> None:
    """Raise :class:`BadRequest` unless ``schema`` is a valid JSON Schema whose references all
    resolve inside it and that the store can check requests against in bounded time."""
    size = len(codec.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise BadRequest(
            f'"request_schema" is {size:,} bytes as JSON; the limit is {MAX_SCHEMA_BYTES:,} bytes.'
        )
    dialect = schema.get("$schema")
    if dialect is not None and dialect.rstrip("#") not in _DIALECTS:
        raise BadRequest(
            f'"request_schema"\'s "$schema" is {dialect!r}, a dialect the store does not know: '
            "use https://json-schema.org/draft/2020-12/schema (or 2019-09, draft-07, -06, -04), "
            'or leave "$schema" out.'
        )
    try:
        jsonschema_rs.meta.validate(schema)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        where = "/".join(str(p) for p in getattr(exc, "instance_path", ())) or "(the top)"
        first = str(exc).split("\n", 1)[0].rstrip(".")
        raise BadRequest(
            f'"request_schema" is not a valid JSON Schema: at {where}, {first}.'
        ) from None
    unresolvable = _unresolvable_reference(schema)
    if unresolvable is not None:
        raise BadRequest(
            f'"request_schema" refers to {unresolvable!r}, which it does not contain: '
            "the store never fetches other documents, so a $ref must point inside it."
        )
    try:
        _analyse(schema)
    except referencing.exceptions.Unresolvable as exc:
        raise BadRequest(
            f'"request_schema" has a reference that does not resolve inside it ({exc}).'
        ) from None
    _compiled(schema)


def _compiled(schema: dict[str, Any]) -> jsonschema_rs.Validator | None:
    """``schema`` compiled, or ``None`` when a reference under a nested ``$id`` does not resolve
    (reported on each submit, as before); :class:`BadRequest` for anything else."""
    try:
        return _compile(schema)
    except jsonschema_rs.ReferencingError as exc:
        if _has_nested_id(schema):
            return None
        raise BadRequest(
            f'"request_schema" has a reference that does not resolve: {exc}.'
        ) from None
    except jsonschema_rs.ValidationError as exc:
        kind = exc.kind
        if isinstance(kind, jsonschema_rs.ValidationErrorKind.Format) and kind.format == "regex":
            raise BadRequest(
                f'"request_schema" has the pattern {exc.instance!r} at '
                f"{'/'.join(str(p) for p in exc.instance_path) or '(the top)'}, which the store "
                "cannot run: its patterns run in linear time, without look-around or "
                "back-references, and must compile to at most "
                f"{REGEX_SIZE_LIMIT // 1024} KiB."
            ) from None
        if _has_nested_id(schema) and "retriev" in exc.message.lower():
            return None
        first = exc.message.split("\n", 1)[0].rstrip(".")
        raise BadRequest(f'"request_schema" cannot be used: {first}.') from None


# -- checking requests --------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> jsonschema_rs.Validator:
    """A linear-time matcher for ``pattern`` (searching, as JSON Schema's ``pattern`` does)."""
    return jsonschema_rs.validator_for(
        {"pattern": pattern}, pattern_options=_pattern_options(), offline=True
    )


def _search(pattern: str, text: str) -> bool:
    return _regex(pattern).is_valid(text)


class _OutOfTime(Exception):
    """The message budget ran out."""


def _message_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator class for ``schema`` (for its error sentences) whose keywords give
    up past a deadline and whose patterns run on the linear engine."""
    base = jsonschema.validators.validator_for(schema)
    deadline = [0.0]

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            if time.monotonic() > deadline[0]:
                raise _OutOfTime
            return fn(*args)

        return run

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if validator.is_type(instance, "string") and not _search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Any:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for k, v in instance.items():
                if _search(patrn, k):
                    yield from validator.descend(v, subschema, path=k, schema_path=patrn)

    def additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Any:
        if not validator.is_type(instance, "object"):
            return
        props = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [
            p for p in instance if p not in props and not any(_search(r, p) for r in patterns)
        ]
        if validator.is_type(ap, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], ap, path=extra)
        elif not ap and extras:
            names = ", ".join(repr(e) for e in sorted(extras))
            yield jsonschema.ValidationError(f"Additional properties are not allowed ({names})")

    def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Any:
        if unique and validator.is_type(instance, "array"):
            seen = {codec.canonical(_unbool(i)) for i in instance}
            if len(seen) < len(instance):
                yield jsonschema.ValidationError(f"{instance!r} has non-unique elements")

    def nothing(*_: Any) -> Any:
        return iter(())  # rare and costly to explain: the generic sentence covers it

    replaced = {
        "pattern": pattern,
        "patternProperties": pattern_properties,
        "additionalProperties": additional_properties,
        "uniqueItems": unique_items,
        "unevaluatedProperties": nothing,
        "unevaluatedItems": nothing,
    }
    keywords = {name: timed(replaced.get(name, fn)) for name, fn in base.VALIDATORS.items()}
    cls = jsonschema.validators.extend(base, validators=keywords)
    validator = cls(schema, registry=_NO_RETRIEVAL)
    return validator, deadline


def _unbool(value: Any) -> Any:
    # JSON Schema equality: 1 == 1.0, but true is not 1.
    if isinstance(value, bool):
        return {"\x00bool": value}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _values(data: bytes) -> int:
    """An upper bound on the values (keys included) in the JSON ``data``: each one but the
    first follows a ``[``, ``{``, ``,`` or ``:`` (counted in strings too: counting is in C)."""
    return 1 + data.count(b",") + data.count(b":") + data.count(b"[") + data.count(b"{")


class _Compiled:
    """A datasource's schema, compiled for checking requests."""

    __slots__ = ("checks", "explainer", "key", "schema", "validator")

    def __init__(self, schema: dict[str, Any], key: bytes) -> None:
        self.schema = schema
        self.key = key
        self.validator = _compiled(schema)
        self.checks = _analyse(schema)
        self.explainer: Any = None


class Validators:
    """Compiled request schemas by datasource, rebuilt when a datasource's schema changes."""

    def __init__(self) -> None:
        self._compiled: dict[str, _Compiled] = {}

    def _get(self, datasource: Datasource, schema: dict[str, Any]) -> _Compiled:
        cached = self._compiled.get(datasource.id)
        if cached is not None and cached.schema is schema:  # same declaration: no re-encoding
            return cached
        key = codec.canonical(schema)
        if cached is None or cached.key != key:
            cached = _Compiled(schema, key)
        else:
            cached.schema = schema
        self._compiled[datasource.id] = cached
        return cached

    def validate(self, datasource: Datasource, request: Any) -> None:
        """Raise :class:`BadRequest`, naming where and why, if ``request`` does not match the
        datasource's ``request_schema`` (none: anything goes), or would cost more than the
        per-submit budget to check."""
        schema = datasource.request_schema
        if schema is None:
            return
        compiled = self._get(datasource, schema)
        if compiled.validator is None:
            raise BadRequest(
                f"The request_schema of datasource '{datasource.id}' has a $ref that does not "
                "resolve: its driver must declare it again with a schema that is complete."
            )
        if compiled.checks > 1:
            values = _values(codec.dumps(request))
            if values * compiled.checks > MAX_CHECKS_PER_REQUEST:
                raise BadRequest(
                    f"The request is too costly to check against the request_schema of datasource "
                    f"'{datasource.id}': up to {values:,} values, each checked against up to "
                    f"{compiled.checks:,} keywords, is over the store's budget of "
                    f"{MAX_CHECKS_PER_REQUEST:,} checks per request. Send a smaller request."
                )
        if compiled.validator.is_valid(request):
            return
        raise BadRequest(self._explain(datasource.id, compiled, request))

    @staticmethod
    def _explain(dsid: str, compiled: _Compiled, request: Any) -> str:
        """The sentence for a request that does not match, found within :data:`MESSAGE_BUDGET`."""
        generic = f"The request does not match the request_schema of datasource '{dsid}'."
        if compiled.explainer is None:
            compiled.explainer = _message_validator(compiled.schema)
        validator, deadline = compiled.explainer
        deadline[0] = time.monotonic() + MESSAGE_BUDGET
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(request))
        except _OutOfTime:
            return generic[:-1] + " (finding where took too long)."
        except Exception:  # the verdict stands; only its sentence is lost
            return generic
        if error is None:
            return generic
        where = "/".join(str(p) for p in error.absolute_path) or "(the whole request)"
        return (
            f"The request does not match the request_schema of datasource '{dsid}' at {where}: "
            f"{error.message}."
        )
