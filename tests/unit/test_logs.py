"""The process log formats of ``serve`` (``--log-format text|json``): bounded messages, JSON
lines with the record's fields."""

from __future__ import annotations

import logging
import sys

import orjson

from jobqueue_store.logs import MAX_MESSAGE, JsonFormatter, TextFormatter, bounded


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("jobqueue_store.test").makeRecord(
        "jobqueue_store.test", logging.INFO, __file__, 1, message, args, None, extra=extra
    )
    return record


def test_a_long_message_is_cut_with_a_count() -> None:
    assert bounded("short") == "short"
    cut = bounded("x" * (MAX_MESSAGE + 500))
    assert cut.startswith("x" * MAX_MESSAGE) and cut.endswith("(500 more characters)")


def test_text_lines_are_bounded() -> None:
    line = TextFormatter().format(_record("request %s", "p" * 50_000))
    assert " INFO jobqueue_store.test request ppp" in line
    assert len(line) < MAX_MESSAGE + 200


def test_json_lines_carry_level_logger_message_extra_and_exception() -> None:
    line = JsonFormatter().format(_record("served %s", "/healthz", status=200, path="/healthz"))
    record = orjson.loads(line)
    assert record["level"] == "INFO" and record["logger"] == "jobqueue_store.test"
    assert record["message"] == "served /healthz"
    assert record["status"] == 200 and record["path"] == "/healthz"
    assert record["time"].endswith("Z") and "\n" not in line

    try:
        raise ValueError("boom")
    except ValueError:
        failing = _record("failed")
        failing.exc_info = sys.exc_info()
    record = orjson.loads(JsonFormatter().format(failing))
    assert "ValueError: boom" in record["exception"]
    assert record["exception"].startswith("Traceback")
