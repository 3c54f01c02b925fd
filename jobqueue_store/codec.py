"""JSON encoding and decoding, with orjson, in one place."""

from __future__ import annotations

from typing import Any

import orjson

from jobqueue_store.errors import BadRequest

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON."""
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    """Encode ``value`` as a JSON ``str`` (for websocket text frames and logs)."""
    return orjson.dumps(value).decode()


def canonical(value: Any) -> bytes:
    """Encode ``value`` with sorted keys, so equal JSON values give equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON produced by this store (trusted input)."""
    return orjson.loads(data)


def parse_body(data: bytes) -> Any:
    """Decode a request body, turning any decoding failure into a 400 with a useful sentence."""
    if not data:
        raise BadRequest("The request body is empty: send a JSON object.")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
