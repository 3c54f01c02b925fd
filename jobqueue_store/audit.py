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

:class:`AuditLog` sends the lines to a file or standard error from a background thread, so the
event loop never waits for the disk. While no ``AuditLog`` is open the lines go to the logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sys
import threading
import time
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
    return {
        "ts": _timestamp(),
        "event": "audit",
        "role": None if principal is None else principal.role._value_,
        "client": None if principal is None else principal.client,
        "key_id": None if principal is None else principal.key_id,
        "action": match.route.name or "unmatched",
        "datasource": match.get("dsid"),
        "job": match.get("job") or request.get(SUBMITTED_JOB),
        "status": status,
        "code": code,
        "remote": request.remote,
    }


_stamp: list[Any] = [-1, "", -1, ""]
"""The second of the last timestamp and its text up to the milliseconds; the millisecond of the
last timestamp and its whole text (a busy store writes several lines a millisecond)."""


def _timestamp() -> str:
    """Now in UTC, ISO 8601 with milliseconds (the text of the second is made once a second)."""
    ms = time.time_ns() // 1_000_000
    if ms == _stamp[2]:
        return _stamp[3]  # type: ignore[no-any-return]
    second, milli = divmod(ms, 1000)
    if second != _stamp[0]:
        _stamp[0] = second
        _stamp[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
    text = f"{_stamp[1]}{milli:03d}Z"
    _stamp[2], _stamp[3] = ms, text
    return text


def emit(
    request: web.Request, status: int, code: str | None, principal: Principal | None = None
) -> None:
    """Log the audit line of ``request`` if it is a write (and the audit log is on)."""
    if request.method not in WRITE_METHODS:
        return
    if _open_lines is not None:  # an AuditLog is open: its writer thread writes the line
        _pending.append(codec.dumps_str(audit_record(request, status, code, principal)))
        if len(_pending) == 1:
            # The lines of HAND_OVER_SECONDS go over together: one hand-over (and one wake-up
            # of the writer thread, a thread switch) for all of them rather than per request.
            try:
                asyncio.get_running_loop().call_later(HAND_OVER_SECONDS, _hand_over)
            except RuntimeError:
                _hand_over()
    elif log.isEnabledFor(logging.INFO):
        line = codec.dumps_str(audit_record(request, status, code, principal))
        # makeRecord + handle: log.info() would also walk the stack to find the caller, which
        # costs more than the rest of the line together.
        log.handle(log.makeRecord(LOGGER_NAME, logging.INFO, __file__, 0, line, (), None))


# The queue of the open AuditLog's writer thread; None: lines go through the logger (so that an
# application embedding the store, or a test, can capture them).
_open_lines: queue.SimpleQueue[list[str] | None] | None = None
_pending: list[str] = []
"""Lines not yet handed to the writer thread."""
HAND_OVER_SECONDS = 0.02
"""How long a line may wait for the next ones before the writer thread takes them: a process
killed without a shutdown loses at most this much of the audit log (a shutdown writes it all)."""


def _hand_over() -> None:
    if _pending:
        batch = _pending.copy()
        _pending.clear()
        if _open_lines is not None:
            _open_lines.put(batch)


class _LineWriter:
    """Writes lines to a file or standard error, buffered. A file is reopened at flush time if
    it was moved or deleted (log rotation)."""

    def __init__(self, target: str) -> None:
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

    def write(self, lines: list[str]) -> None:
        """Write ``lines``, each followed by a newline, and flush."""
        if not lines:
            return
        try:
            self._stream.write("\n".join(lines) + "\n")
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
        except OSError as exc:
            print(f"jobqueue-store: the audit log cannot be written: {exc}", file=sys.stderr)

    def close(self) -> None:
        """Close the file (standard error stays open)."""
        if self._path is not None:
            self._stream.close()


def _write_lines(lines: queue.SimpleQueue[list[str] | None], sink: _LineWriter) -> None:
    """The writer thread: take every queued batch of lines at once, write them, flush; ``None``
    stops."""
    while True:
        batches = [lines.get()]
        with contextlib.suppress(queue.Empty):
            while len(batches) < 1_000:
                batches.append(lines.get_nowait())
        sink.write([line for batch in batches if batch is not None for line in batch])
        if None in batches:
            return


class AuditLog:
    """Where the audit lines go while it is open: ``target`` is a file path (appended to, and
    reopened if moved away by log rotation), ``-`` for standard error, or ``off``.

    Lines are handed to a writer thread, which writes whatever has queued up in one go, so the
    event loop never waits for the disk and pays little per line. Use as a context manager
    around the server's life; closing writes the queued lines.
    """

    def __init__(self, target: str) -> None:
        self.target = target.strip() or STDERR
        self._lines: queue.SimpleQueue[list[str] | None] | None = None
        self._thread: threading.Thread | None = None
        self._sink: _LineWriter | None = None
        self._saved: tuple[int, bool, bool] | None = None

    def open(self) -> None:
        """Start sending audit lines to the target."""
        global _open_lines
        if self._saved is not None:
            raise RuntimeError("The audit log is already open.")
        self._saved = (log.level, log.propagate, log.disabled)
        # Not propagated: the lines are pure JSON, not wrapped in the root logger's format.
        log.propagate = False
        if self.target.lower() == OFF:
            log.disabled = True
            return
        self._sink = _LineWriter(self.target)
        self._lines = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=_write_lines, args=(self._lines, self._sink), name="audit-log", daemon=True
        )
        self._thread.start()
        _open_lines = self._lines

    def close(self) -> None:
        """Write the queued lines, close the target and restore the logger."""
        global _open_lines
        if self._saved is None:
            return
        if self._lines is not None:
            if _open_lines is self._lines:
                _hand_over()
                _open_lines = None
            self._lines.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._sink is not None:
            self._sink.close()
        level, log.propagate, log.disabled = self._saved
        log.setLevel(level)
        self._saved = None
        self._lines = self._thread = self._sink = None

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
