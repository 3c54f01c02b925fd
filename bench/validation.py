"""Request-schema validation cost per submit: the previous path (Python ``jsonschema``, its
backtracking ``re``) against the store's (``jobqueue_store.request_schema``: jsonschema-rs with
the linear regex engine, behind the per-submit cost check).

Run from the repository root::

    .venv/bin/python -m bench.validation [--rounds 7] [--calls 2000]

Each case is timed for ``--calls`` validations per round; the table shows the median of the
rounds, in microseconds per validation. The pathological case (``^(a+)+$`` against 22 ``a`` and
``!``, a string short enough for the old path to finish) is run a few times only.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import referencing

from jobqueue_store import codec
from jobqueue_store.errors import BadRequest
from jobqueue_store.models import Datasource
from jobqueue_store.request_schema import Validators

_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry()

ORDER = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
        "price": {"type": "number", "exclusiveMinimum": 0},
        "customer": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "email": {"type": "string", "format": "email"},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            },
            "required": ["id"],
        },
        "express": {"type": "boolean"},
        "notes": {"type": "string", "maxLength": 500},
    },
    "required": ["sku", "quantity"],
    "additionalProperties": False,
}
GOOD = {
    "sku": "ABC-1234",
    "quantity": 3,
    "price": 9.99,
    "customer": {"id": "c42", "email": "a@example.com", "tags": ["x", "y", "z"]},
    "express": True,
    "notes": "leave at the door",
}
BAD = {**GOOD, "quantity": 0}
BATCH = {"type": "array", "items": ORDER}
CATASTROPHIC = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}

CASES: list[tuple[str, dict[str, Any], Any, int]] = [
    # name, schema, request, calls per round divisor
    ("small object, valid", ORDER, GOOD, 1),
    ("small object, invalid (400 sentence)", ORDER, BAD, 1),
    ("500 objects, valid (~75 KB)", BATCH, [GOOD] * 500, 100),
    ("^(a+)+$ vs 22 a + '!' (invalid)", CATASTROPHIC, {"s": "a" * 22 + "!"}, 2000),
]


def old_path(schema: dict[str, Any]) -> Callable[[Any], None]:
    """The store's validation before the linear engine (compiled once, as it was)."""
    validator = jsonschema.validators.validator_for(schema)(schema, registry=_NO_RETRIEVAL)

    def validate(request: Any) -> None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(request))
        if error is not None:
            raise BadRequest(error.message)

    return validate


def new_path(schema: dict[str, Any]) -> Callable[[Any], None]:
    """The store's validation now."""
    validators = Validators()
    datasource = Datasource("bench", "", schema)
    return lambda request: validators.validate(datasource, request)


def per_call(validate: Callable[[Any], None], request: Any, calls: int) -> float:
    """Microseconds per validation over ``calls`` validations."""
    start = time.perf_counter()
    for _ in range(calls):
        with contextlib.suppress(BadRequest):
            validate(request)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(f"median of {args.rounds} rounds, microseconds per validation")
    print("| case | jsonschema (before) | jsonschema-rs (now) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for name, schema, request, divisor in CASES:
        calls = max(1, args.calls // divisor)
        rows = []
        for make in (old_path, new_path):
            validate = make(schema)
            per_call(validate, request, max(1, calls // 10))  # warm-up (and caches)
            rows.append(
                statistics.median(per_call(validate, request, calls) for _ in range(args.rounds))
            )
        before, now = rows
        print(f"| {name} | {before:,.1f} | {now:,.1f} | {before / now:,.0f}x |")
    print()
    print("decoding a submit body: orjson alone vs the store's (with the 64-bit integer check)")
    print("| body | orjson.loads | codec.parse_body | overhead |")
    print("| --- | ---: | ---: | ---: |")
    bodies = [
        ("small submit", codec.dumps({"job": "j-1", "request": GOOD})),
        ("500 objects", codec.dumps({"job": "j-1", "request": [GOOD] * 500})),
        ("with a 19-digit integer", codec.dumps({"job": "j-1", "request": [GOOD, 10**18]})),
    ]
    for name, data in bodies:
        calls = max(1, args.calls * 10 // max(1, len(data) // 300))
        plain, store = (
            statistics.median(_decode(fn, data, calls) for _ in range(args.rounds))
            for fn in (codec.loads, codec.parse_body)
        )
        print(f"| {name} ({len(data):,} B) | {plain:,.2f} | {store:,.2f} | {store - plain:+,.2f} |")


def _decode(fn: Callable[[bytes], Any], data: bytes, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(data)
    return (time.perf_counter() - start) / calls * 1e6


if __name__ == "__main__":
    main()
