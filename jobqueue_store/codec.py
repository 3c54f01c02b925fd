"""JSON encoding and decoding, with orjson, in one place."""

from __future__ import annotations

import json
from typing import Any

import orjson

from jobqueue_store.errors import BadRequest

JSONDecodeError = orjson.JSONDecodeError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
"""Maps every digit to ``0`` and every other byte to a space: runs of digits are found in C."""
_LONG_RUN = b"0" * 19
"""19 digits in a row: the shortest run that can spell an integer outside signed 64 bits
(2^63 has 19 digits). orjson turns such integers into floats or keeps them up to 2^64 - 1."""


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
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    # find(), not "in": bytes.__contains__ first tries its argument as an integer, raising and
    # clearing a TypeError (about 1,800 instructions) for every body.
    if data.translate(_DIGITS_AS_ZERO).find(_LONG_RUN) >= 0:
        _check_integers(data)
    return value


def _int64(text: str) -> int:
    # A length check first: int() refuses more than 4,300 digits with a ValueError.
    if len(text) > 20 or not INT64_MIN <= (number := int(text)) <= INT64_MAX:
        raise BadRequest(
            f"The request body has the integer {text[:40]}{'...' if len(text) > 40 else ''}, "
            "outside -2^63..2^63-1: integers must fit in 64 bits (send a larger number as a "
            "string, or as a float such as 1e30)."
        )
    return number


def _check_integers(data: bytes) -> None:
    """Raise :class:`BadRequest` if ``data`` (valid JSON) has an integer outside signed 64 bits.

    orjson would turn it into a float (or keep it up to 2^64 - 1), altering the request
    silently; only bodies with a run of 19+ digits (maybe in a string) are parsed again, with
    the standard library, which keeps integers exact.
    """
    json.loads(data, parse_int=_int64)
