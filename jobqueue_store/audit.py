"""The audit log: one JSON line per write request, on the logger ``jobqueue_store.audit``.

Every ``POST``, ``PUT``, ``PATCH`` and ``DELETE`` is logged once its reply is known, refused ones
(4xx, 5xx) included::

    {"ts": "2025-01-02T03:04:05.678Z", "event": "audit", "role": "client", "client": "app1",
     "key_id": "k1", "action": "submit", "datasource": "ds1", "job": "j1", "status": 201,
     "code": null, "remote": "10.0.0.7"}

``role``, ``client`` and ``key_id`` come from the verified token (``null`` when the request was
refused before its token was verified); ``action`` is the route name (``unmatched`` for unknown
paths); ``code`` is the error code of a refused request. The token and the request body are
never logged.

:class:`AuditLog` sends the lines to a file or standard error from a background thread (a
``QueueHandler`` in front of a ``QueueListener``), so the event loop never waits for the disk.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from aiohttp import web

from jobqueue_store import codec
from jobqueue_store.auth import Principal
from jobqueue_store.models import JOB_ID_RE

LOGGER_NAME = "jobqueue_store.audit"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OFF = "off"
STDERR = "-"

log = logging.getLogger(LOGGER_NAME)

SUBMITTED_JOB: web.RequestKey[str] = web.RequestKey("audit_submitted_job")
"""Request key of the job id a submit's body names (set by the body parser, when valid)."""


def note_body(request: web.Request, body: Any) -> None:
    """Remember the job id ``body`` names, for the audit line (only a well-formed id)."""
    if isinstance(body, dict):
        job = body.get("job")
        if isinstance(job, str) and JOB_ID_RE.fullmatch(job):
            request[SUBMITTED_JOB] = job


def audit_record(
    request: web.Request, status: int, code: str | None, principal: Principal | None = None
) -> dict[str, Any]:
    """The audit record of ``request``, answered with ``status`` (and error ``code``).

    ``principal`` is the verified :class:`~jobqueue_store.auth.Principal`, or ``None``.
    """
    match = request.match_info
    now = datetime.now(UTC)
    return {
        "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "event": "audit",
        "role": None if principal is None else principal.role.value,
        "client": None if principal is None else principal.client,
        "key_id": None if principal is None else principal.key_id,
        "action": match.route.name or "unmatched",
        "datasource": match.get("dsid"),
        "job": match.get("job") or request.get(SUBMITTED_JOB),
        "status": status,
        "code": code,
        "remote": request.remote,
    }


def emit(
    request: web.Request, status: int, code: str | None, principal: Principal | None = None
) -> None:
    """Log the audit line of ``request`` if it is a write (and the audit log is on)."""
    if request.method in WRITE_METHODS and log.isEnabledFor(logging.INFO):
        line = codec.dumps_str(audit_record(request, status, code, principal))
        # makeRecord + handle: log.info() would also walk the stack to find the caller, which
        # costs more than the rest of the line together.
        log.handle(log.makeRecord(LOGGER_NAME, logging.INFO, __file__, 0, line, (), None))


class _QueueHandler(logging.handlers.QueueHandler):
    """Enqueues the record itself: its message is already the final line and no other handler
    sees it (the audit logger does not propagate while open), so there is nothing to copy."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _LineWriter(logging.Handler):
    """Writes each record's message as one line, buffered; flushed when the queue runs dry. A
    file is reopened at flush time if it was moved or deleted (log rotation)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self._path = None if target == STDERR else target
        self._stream: TextIO = sys.stderr
        self._file_id: tuple[int, int] | None = None
        if self._path is not None:
            self._open()

    def _open(self) -> None:
        assert self._path is not None
        self._stream = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        stat = os.fstat(self._stream.fileno())
        self._file_id = (stat.st_dev, stat.st_ino)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._stream.write(record.getMessage() + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        try:
            self._stream.flush()
            if self._path is None:
                return
            try:
                stat = os.stat(self._path)
                moved = (stat.st_dev, stat.st_ino) != self._file_id
            except FileNotFoundError:
                moved = True
            if moved:
                self._stream.close()
                self._open()
        except OSError:
            self.handleError(logging.makeLogRecord({"msg": "audit log flush failed"}))

    def close(self) -> None:
        self.flush()
        if self._path is not None:
            self._stream.close()
        super().close()


class _Listener(logging.handlers.QueueListener):
    """A queue listener that flushes its handlers whenever it has caught up with the queue."""

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord], handler: logging.Handler
    ) -> None:
        super().__init__(records, handler)
        self._records = records

    def dequeue(self, block: bool) -> logging.LogRecord:
        if block and self._records.empty():
            for handler in self.handlers:
                handler.flush()
        return self._records.get(block)


class AuditLog:
    """Where the audit lines go while it is open: ``target`` is a file path (appended to, and
    reopened if moved away by log rotation), ``-`` for standard error, or ``off``.

    Use as a context manager around the server's life; closing flushes the queued lines.
    """

    def __init__(self, target: str) -> None:
        self.target = target.strip() or STDERR
        self._listener: logging.handlers.QueueListener | None = None
        self._queue_handler: logging.Handler | None = None
        self._sink: logging.Handler | None = None
        self._saved: tuple[int, bool, bool] | None = None

    def open(self) -> None:
        """Start sending audit lines to the target."""
        if self._saved is not None:
            raise RuntimeError("The audit log is already open.")
        self._saved = (log.level, log.propagate, log.disabled)
        # Not propagated: the lines are pure JSON, not wrapped in the root logger's format.
        log.propagate = False
        if self.target.lower() == OFF:
            log.disabled = True
            return
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._sink = _LineWriter(self.target)
        self._queue_handler = _QueueHandler(records)
        self._listener = _Listener(records, self._sink)
        self._listener.start()
        log.setLevel(logging.INFO)
        log.disabled = False
        log.addHandler(self._queue_handler)

    def close(self) -> None:
        """Write the queued lines, close the target and restore the logger."""
        if self._saved is None:
            return
        if self._queue_handler is not None:
            log.removeHandler(self._queue_handler)
        if self._listener is not None:
            self._listener.stop()
        if self._sink is not None:
            self._sink.close()
        level, log.propagate, log.disabled = self._saved
        log.setLevel(level)
        self._saved = None
        self._listener = self._queue_handler = self._sink = None

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
