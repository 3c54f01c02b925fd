"""The Python client of the store: :class:`JobClient` for apps, :class:`DriverClient` for drivers.

Every call retries transient failures (network errors, ``503``, ``429`` after ``Retry-After``)
with exponential backoff and jitter. That is safe because every operation of the store is
idempotent: a submit with the same job id and request, a cancel, a repeated status update.
Errors the store reports become the exception classes of :mod:`jobqueue_store.errors`, carrying
the store's ``code`` and sentence; a store that cannot be reached raises :class:`ConnectionFailed`.

Subscriptions (:meth:`JobClient.subscribe`, :meth:`DriverClient.stream`) are async iterators that
reconnect by themselves with ``?after=<last seq seen>`` and drop anything already yielded, so a
consumer sees each notification once, in ``seq`` order, across store restarts.

:class:`SyncJobClient` wraps :class:`JobClient` for scripts that do not run an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from jobqueue_store import codec
from jobqueue_store.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LeaseLost,
    NotFound,
    SlotTaken,
    StoreError,
    TooLarge,
    TooMany,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from jobqueue_store.models import JobPage, JobRecord, Lease
from jobqueue_store.schedules import SchedulePage, ScheduleRecord

__all__ = [
    "Claim",
    "ConnectionFailed",
    "DriverClient",
    "JobClient",
    "LeaseLost",
    "Notification",
    "Slot",
    "SlotTaken",
    "StreamEntry",
    "Subscription",
    "SyncJobClient",
    "error_from_reply",
    "new_job_id",
    "normalize_url",
    "read_token_file",
]

log = logging.getLogger("jobqueue_store.client")

MAX_WAIT = 60.0
"""The longest ``?wait=`` the store accepts by default (protocol.md §5); :meth:`JobClient.wait`
loops."""

_STATUS_ERRORS: tuple[type[StoreError], ...] = (
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    TooMany,
    Unavailable,
)
_SUB_ERRORS: tuple[type[StoreError], ...] = (LeaseLost, SlotTaken)
ERRORS_BY_CODE: dict[str, type[StoreError]] = {
    cls.code: cls for cls in _STATUS_ERRORS + _SUB_ERRORS
}
ERRORS_BY_STATUS: dict[int, type[StoreError]] = {cls.status: cls for cls in _STATUS_ERRORS}

# Websocket close codes of the store (protocol.md §7).
CLOSE_TOKEN_EXPIRED = 4001
CLOSE_SLOW_CONSUMER = 4008


class ConnectionFailed(Unavailable):
    """The store could not be reached: check the URL and that the store is running.

    A kind of :class:`~jobqueue_store.errors.Unavailable` (retry later) raised by this client, not
    by the store: ``status`` is 0 as no HTTP reply came, ``code`` is ``connection_failed``.
    """

    status = 0
    code = "connection_failed"


def new_job_id() -> str:
    """A fresh job id (a GUID), valid for protocol.md §5."""
    return str(uuid.uuid4())


_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def normalize_url(url: str) -> str:
    """The store's base URL: ``http://`` added when no scheme is given (``localhost:8080``), no
    trailing slash. Raises ``ValueError`` with a sentence saying what to write instead."""
    text = url.strip()
    example = "e.g. http://127.0.0.1:8080"
    if not text:
        raise ValueError(f"the store URL is empty: give one, {example}")
    if not _SCHEME_RE.match(text):
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"the store URL {url!r} is not an http:// or https:// URL: write it as {example}"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.query or parts.fragment or " " in text:
        raise ValueError(f"{url!r} is not a store URL: write it as {example}")
    return text.rstrip("/")


def read_token_file(path: str | Path) -> str:
    """The token held in the file ``path`` (surrounding whitespace removed). Raises
    ``ValueError`` with a sentence if it cannot be read or is empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the token file {path} is not text: it should hold one token") from None
    if not token:
        raise ValueError(f"the token file {path} is empty: it should hold one token")
    return token


def error_from_reply(status: int, body: bytes, retry_after: str | None = None) -> StoreError:
    """The exception for an error reply: the class of its ``code``, with the store's sentence."""
    message = f"The store answered HTTP {status}."
    code: str | None = None
    try:
        decoded = codec.loads(body) if body else None
    except codec.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict):
        if isinstance(decoded.get("error"), str):
            message = decoded["error"]
        if isinstance(decoded.get("code"), str):
            code = decoded["code"]
    cls = ERRORS_BY_CODE.get(code or "") or ERRORS_BY_STATUS.get(status, StoreError)
    exc: StoreError
    if cls is TooMany:
        try:
            delay = float(retry_after) if retry_after else 1.0
        except ValueError:
            delay = 1.0
        exc = TooMany(message, retry_after=delay)
    else:
        exc = cls(message)
    # Keep what the store said even for codes this client does not know.
    if code is not None and code != exc.code:
        exc.code = code
    exc.status = status
    return exc


def _retryable(exc: StoreError) -> bool:
    return isinstance(exc, Unavailable | TooMany)  # ConnectionFailed included


def _unreachable(url: str, exc: BaseException) -> ConnectionFailed:
    """A :class:`ConnectionFailed` for ``exc`` with a short reason a person can act on."""
    reason: str
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        reason = f"the host name {urlsplit(url).hostname!r} could not be resolved"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        errno = getattr(exc.os_error, "errno", None)
        # "Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 1)".
        reason = (os.strerror(errno) if errno else str(exc.os_error) or "no connection").lower()
    elif isinstance(exc, TimeoutError):
        reason = "no answer in time"
    else:
        reason = str(exc) or type(exc).__name__
    return ConnectionFailed(f"Could not reach the store at {url}: {reason}.")


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: a random delay in [d/2, d], d = min(cap, base * 2^n)."""
    delay = min(cap, base * (2 ** min(attempt, 30)))
    return random.uniform(delay / 2, delay)


@dataclass(frozen=True, slots=True)
class Notification:
    """A client notification (protocol.md §5): the status record of one of the caller's jobs."""

    seq: int
    datasource_id: str
    job: str
    client: str
    record: JobRecord

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Notification:
        """Parse a notification frame."""
        return cls(
            seq=int(data["seq"]),
            datasource_id=data["datasource_id"],
            job=data["job"],
            client=data["client"],
            record=JobRecord.from_wire(data["data"]),
        )

    def to_wire(self) -> dict[str, Any]:
        """The notification as the store sent it."""
        return {
            "datasource_id": self.datasource_id,
            "type": "status",
            "job": self.job,
            "client": self.client,
            "seq": self.seq,
            "data": self.record.to_wire(),
        }


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """A request-stream entry (protocol.md §6): a new job (``request``) or a cancel request; for
    long-running jobs also a new revision (``update``), a ``stop`` or a ``start``."""

    seq: int
    datasource_id: str
    type: Literal["request", "cancel", "update", "stop", "start"]
    job: str
    client: str
    timestamp: int
    data: dict[str, Any]

    @property
    def request(self) -> Any:
        """The job's ``request`` (``None`` for a cancel entry)."""
        return self.data.get("request")

    @property
    def revision(self) -> int | None:
        """The revision an ``update``, ``stop`` or ``start`` entry is about (0 for a
        ``request``; ``None`` for a ``cancel``)."""
        if self.type == "request":
            return 0
        revision = self.data.get("revision")
        return revision if isinstance(revision, int) else None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> StreamEntry:
        """Parse an entry from the stream or from ``since``/``latest``."""
        kind = data["type"]
        if kind not in ("request", "cancel", "update", "stop", "start"):
            raise ValueError(f"unknown request-stream entry type {kind!r}")
        return cls(
            seq=int(data["seq"]),
            datasource_id=data["datasource_id"],
            type=kind,
            job=data["job"],
            client=data["client"],
            timestamp=int(data["timestamp"]),
            data=data.get("data") or {},
        )

    def to_wire(self) -> dict[str, Any]:
        """The entry as the store sent it."""
        return {
            "datasource_id": self.datasource_id,
            "type": self.type,
            "job": self.job,
            "client": self.client,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker holds on a lease datasource: its status record and its lease.

    Every status update of the job must carry ``lease.id``; the store answers
    :class:`~jobqueue_store.errors.LeaseLost` once the lease is gone (expired, or the job was
    taken back), and the worker must then stop working on the job.
    """

    record: JobRecord
    lease: Lease

    @property
    def job(self) -> str:
        """The job's id."""
        return self.record.job

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Claim:
        """Parse a status record that carries a ``lease``."""
        lease = data.get("lease")
        if not isinstance(lease, dict):
            raise ValueError(f"the store sent job {data.get('job')!r} without its lease")
        return cls(JobRecord.from_wire(data), Lease.from_wire(lease))


@dataclass(frozen=True, slots=True)
class Slot:
    """The worker slot of a stream datasource, as its holder sees it.

    ``lease`` is renewed with :meth:`DriverClient.slot_heartbeat`; ``resume`` is the last ``seq``
    the holders of the slot reported finished (None before any), kept by the store so that the
    next holder continues from there.
    """

    lease: str
    worker: str
    expires_at: int
    resume: int | None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Slot:
        """Parse the reply of taking or renewing the slot."""
        lease = data["lease"]
        resume = data.get("resume")
        return cls(
            lease=lease["id"],
            worker=lease["worker"],
            expires_at=int(lease["expires_at"]),
            resume=None if resume is None else int(resume),
        )


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


class _Http:
    """An aiohttp session to one store with one token, retries and typed errors."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_file: str | Path | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self.url = normalize_url(url)
        self.token_file = Path(token_file) if token_file is not None else None
        """A file holding the token, re-read when the store refuses the token (401): an operator
        rotates tokens by rewriting it, without restarting the process."""
        if not token:
            if self.token_file is None:
                raise ValueError("a token is needed: pass token or token_file")
            token = read_token_file(self.token_file)
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._session = session
        self._own_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (created on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    @property
    def headers(self) -> dict[str, str]:
        """The authentication header."""
        return {"Authorization": f"Bearer {self.token}"}

    def reload_token(self) -> bool:
        """Re-read :attr:`token_file`; True if it now holds another token (then in use)."""
        if self.token_file is None:
            return False
        try:
            token = read_token_file(self.token_file)
        except ValueError as exc:
            log.warning("token not reloaded: %s", exc)
            return False
        if token == self.token:
            return False
        log.info("token reloaded from %s", self.token_file)
        self.token = token
        return True

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        wait: float = 0.0,
        expect_json: bool = True,
        retry: bool = True,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """One call, retried on transient failures: ``(status, decoded body, headers)``.

        ``retry=False`` for a call that is not idempotent: it is retried only when the store
        surely did not do it (``429``, ``503``), never after a network failure.
        """
        attempt = 0
        reloaded = False
        while True:
            try:
                return await self._once(method, path, body, params, wait, expect_json)
            except Unauthorized:
                # An expired (or revoked) token: the token file may hold its successor by now.
                if reloaded or not self.reload_token():
                    raise
                reloaded = True
                continue
            except StoreError as exc:
                if not _retryable(exc) or attempt >= self.retries:
                    if attempt and isinstance(exc, ConnectionFailed):
                        exc.message = _gave_up(exc.message, attempt)
                        exc.args = (exc.message,)
                    raise
                if not retry and isinstance(exc, ConnectionFailed):
                    raise
                delay = backoff_delay(attempt, self.backoff, self.max_backoff)
                if isinstance(exc, TooMany):
                    delay = max(delay, exc.retry_after)
                log.debug("%s %s: %s; retrying in %.2fs", method, path, exc.code, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _once(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, str] | None,
        wait: float,
        expect_json: bool,
    ) -> tuple[int, Any, Mapping[str, str]]:
        headers = self.headers
        data: bytes | None = None
        if body is not None:
            data = codec.dumps(body)
            headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=self.timeout + wait)
        try:
            async with self.session.request(
                method, self.url + path, data=data, headers=headers, params=params, timeout=timeout
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_from_reply(resp.status, raw, resp.headers.get("Retry-After"))
                try:
                    decoded = codec.loads(raw) if expect_json and raw else raw
                except codec.JSONDecodeError:
                    raise ConnectionFailed(
                        f"The reply from {self.url} is not JSON: is this the URL of a "
                        "jobqueue-store?"
                    ) from None
                return resp.status, decoded, resp.headers
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise _unreachable(self.url, exc) from exc
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"Bad reply from the store at {self.url}: {exc}.") from exc

    def subscription(
        self,
        path: str,
        parse: Callable[[dict[str, Any]], T | None],
        seq_of: Callable[[T], int],
        after: int | None,
        *,
        retries: int | None = None,
        on_retry: RetryCallback | None = None,
    ) -> Subscription[T]:
        """A reconnecting websocket subscription to ``path`` (see :class:`Subscription`)."""
        return Subscription(self, path, parse, seq_of, after, retries=retries, on_retry=on_retry)


def _gave_up(message: str, retries: int) -> str:
    return (
        f"{message.rstrip('.')}; gave up after {retries} {'retry' if retries == 1 else 'retries'}."
    )


_Self = TypeVar("_Self", bound=_Http)
T = TypeVar("T")
RetryCallback = Callable[[int, StoreError, float], None]
"""Called after each failed connection attempt: ``(attempt number from 1, why, delay)``."""


class Subscription(Generic[T]):
    """An async iterator over a websocket stream that resumes with ``?after=`` by itself.

    It connects on first use (or :meth:`open`), reconnects after any drop with backoff and
    jitter, and never yields an item whose ``seq`` is not larger than the last one yielded.
    ``last_seq`` is the ``seq`` of the last item yielded (or the ``after`` given). With
    ``after=None`` the stream starts live; once one item is seen, every reconnect replays.
    An expired or refused token (close 4001, handshake 400/401/403/404) ends it with the store's
    error, unless the client's token file holds a new token: then it reconnects with that one.

    ``retries``: how many times in a row a connection attempt may fail (store unreachable, 503,
    429) before iteration raises :class:`ConnectionFailed`; ``None`` (the default) retries forever.
    ``on_retry`` is told of every failed attempt.
    """

    def __init__(
        self,
        http: _Http,
        path: str,
        parse: Callable[[dict[str, Any]], T | None],
        seq_of: Callable[[T], int],
        after: int | None,
        *,
        heartbeat: float = 20.0,
        retries: int | None = None,
        on_retry: RetryCallback | None = None,
    ) -> None:
        self._http = http
        self._retries = retries
        self._on_retry = on_retry
        self._path = path
        self._parse = parse
        self._seq_of = seq_of
        self.last_seq = after
        self.reconnects = 0
        """How many times the connection dropped and the subscription resumed."""
        self._heartbeat = heartbeat
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closed = False

    async def __aenter__(self) -> Subscription[T]:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def open(self) -> None:
        """Connect now (iteration connects by itself); returns once the handshake is done."""
        if self._ws is None and not self._closed:
            await self._connect()

    async def close(self) -> None:
        """Stop: close the websocket; iteration ends."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __anext__(self) -> T:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._ws is None:
                await self._connect()
                continue
            ws = self._ws
            try:
                msg = await ws.receive()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("subscription %s dropped: %s", self._path, exc)
                await self._drop()
                continue
            if msg.type is aiohttp.WSMsgType.TEXT:
                item = self._parse(codec.loads(msg.data))
                if item is None:
                    continue  # a frame this subscription does not yield (a schedule's change)
                seq = self._seq_of(item)
                if self.last_seq is not None and seq <= self.last_seq:
                    continue
                self.last_seq = seq
                return item
            if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            if msg.type is aiohttp.WSMsgType.BINARY:
                continue
            code = ws.close_code
            if msg.type is aiohttp.WSMsgType.CLOSE:
                code = int(msg.data)
            await self._drop()
            if code == CLOSE_TOKEN_EXPIRED:
                if self._http.reload_token():
                    log.info(
                        "subscription %s: token expired; resuming with the new one", self._path
                    )
                    continue
                self._closed = True
                raise Unauthorized(
                    f"The store closed the subscription: the token expired ({msg.extra or code})."
                )
            log.info("subscription %s closed (code %s); resuming", self._path, code)

    async def _drop(self) -> None:
        self.reconnects += 1
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _connect(self) -> None:
        attempt = 0
        reloaded = False
        url = self._http.url + self._path
        while not self._closed:
            params = {} if self.last_seq is None else {"after": str(self.last_seq)}
            try:
                self._ws = await self._http.session.ws_connect(
                    url,
                    headers=self._http.headers,
                    params=params,
                    heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                )
                if self.reconnects:
                    log.info("subscription %s resumed after seq %s", self._path, self.last_seq)
                return
            except aiohttp.WSServerHandshakeError as exc:
                error = await self._refusal(exc.status, params)
                if exc.status == Unauthorized.status and not reloaded and self._http.reload_token():
                    reloaded = True
                    continue
                if exc.status in (400, 401, 403, 404):
                    self._closed = True
                    raise error from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = _unreachable(self._http.url, exc)
            if self._retries is not None and attempt >= self._retries:
                self._closed = True
                if attempt and isinstance(error, ConnectionFailed):
                    error.message = _gave_up(error.message, attempt)
                    error.args = (error.message,)
                raise error
            delay = backoff_delay(attempt, self._http.backoff, self._http.max_backoff)
            if isinstance(error, TooMany):
                delay = max(delay, error.retry_after)
            attempt += 1
            log.info("subscription %s: %s; reconnecting in %.2fs", self._path, error, delay)
            if self._on_retry is not None:
                self._on_retry(attempt, error, delay)
            await asyncio.sleep(delay)

    async def _refusal(self, status: int, params: dict[str, str]) -> StoreError:
        """The store's own error for a refused handshake. The handshake's reply body is not
        kept by aiohttp, so the same request is made once more as a plain GET: every check
        that refuses a subscription (token, caveats, datasource, ``after``, limits) runs before
        the upgrade, and gives the same answer with its JSON body."""
        try:
            async with self._http.session.get(
                self._http.url + self._path,
                headers=self._http.headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=self._http.timeout),
            ) as resp:
                raw = await resp.read()
                if resp.status == status:
                    return error_from_reply(status, raw, resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        cls = ERRORS_BY_STATUS.get(status, StoreError)
        error = cls(f"The store refused the subscription to {self._path}: HTTP {status}.")
        error.status = status
        return error


class JobClient(_Http):
    """An app's asynchronous client of the store (protocol.md §5).

    ``url`` is the store's base URL (``http://127.0.0.1:8080``), ``token`` a client (or admin)
    token. Use it as an async context manager, or call :meth:`close` when done.
    """

    async def submit(
        self,
        dsid: str,
        request: Any,
        job: str | None = None,
        *,
        wait: float | None = None,
        timeout: int | None = None,
    ) -> JobRecord:
        """Submit a job (a GUID is generated when ``job`` is None) and return its record.

        Retried safely on transient failures: the store answers a repeat with the same record.
        With ``wait`` (0 < s <= 60), the store replies once the job is terminal or the wait ends.
        With ``timeout`` (1-86400 whole seconds), the store asks for the job's cancellation if
        it has not ended that long after the submit, and ends it ``cancelled`` after the
        datasource's ``cancel_grace``.
        """
        job_id = job or new_job_id()
        params = {"wait": f"{wait:g}"} if wait else None
        body: dict[str, Any] = {"job": job_id, "request": request}
        if timeout is not None:
            body["timeout"] = timeout
        _, reply, _ = await self.request(
            "POST",
            _path(dsid, "job", ""),
            body,
            params=params,
            wait=wait or 0.0,
        )
        return JobRecord.from_wire(reply)

    async def status(self, dsid: str, job: str, *, wait: float | None = None) -> JobRecord:
        """The job's status record; with ``wait`` (<= 60 s), long-polls until it is terminal."""
        params = {"wait": f"{wait:g}"} if wait else None
        _, body, _ = await self.request(
            "GET", _path(dsid, "job", job, ""), params=params, wait=wait or 0.0
        )
        return JobRecord.from_wire(body)

    async def wait(
        self, dsid: str, job: str, timeout: float | None = None, *, max_wait: float = MAX_WAIT
    ) -> JobRecord:
        """Wait until the job is terminal (or ``timeout`` seconds pass) and return its record.

        Uses ``?wait=`` long polls of at most ``max_wait`` seconds each, looping past them.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            chunk = max_wait
            if deadline is not None:
                chunk = min(chunk, deadline - loop.time())
                if chunk <= 0:
                    return await self.status(dsid, job)
            record = await self.status(dsid, job, wait=max(chunk, 0.001))
            if record.terminal:
                return record
            if deadline is not None and loop.time() >= deadline:
                return record

    async def cancel(self, dsid: str, job: str) -> JobRecord:
        """Ask for the job to be cancelled; returns the last known record at once."""
        _, body, _ = await self.request("POST", _path(dsid, "job", job, "cancel"))
        return JobRecord.from_wire(body)

    async def jobs_page(
        self,
        dsid: str,
        *,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the caller's jobs, newest first."""
        params = {"limit": str(limit)}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        _, body, _ = await self.request("GET", _path(dsid, "job", ""), params=params)
        return JobPage([JobRecord.from_wire(j) for j in body["jobs"]], body.get("next"))

    async def jobs(
        self, dsid: str, *, status: str | None = None, page_size: int = 100
    ) -> AsyncIterator[JobRecord]:
        """Every job of the caller on ``dsid``, newest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = await self.jobs_page(dsid, status=status, limit=page_size, cursor=cursor)
            for record in page.jobs:
                yield record
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def subscribe(
        self,
        dsid: str,
        *,
        after: int | None = None,
        retries: int | None = None,
        on_retry: RetryCallback | None = None,
    ) -> Subscription[Notification]:
        """Notifications of the caller's jobs on ``dsid`` (``GET /sub/<DSID>/job``).

        An async iterator (and async context manager) that reconnects with ``after=`` by itself
        and never yields a duplicate. ``after`` replays notifications with a larger ``seq`` first.
        ``retries`` and ``on_retry``: see :class:`Subscription` (default: retry forever).
        """
        return self.subscription(
            _path("sub", dsid, "job"),
            _job_notification,
            lambda n: n.seq,
            after,
            retries=retries,
            on_retry=on_retry,
        )

    # long-running jobs ----------------------------------------------------------------------
    async def update(
        self, dsid: str, job: str, request: Any, *, rollback: bool = False
    ) -> JobRecord:
        """A new request for the job: a new revision (202), or the record unchanged when the
        request is the current one. ``rollback``: if the driver reports this revision
        ``failed``, the store goes back to the request of the last revision that ran."""
        body: dict[str, Any] = {"request": request}
        if rollback:
            body["rollback"] = True
        _, reply, _ = await self.request("PUT", _path(dsid, "job", job, ""), body)
        return JobRecord.from_wire(reply)

    async def stop(self, dsid: str, job: str) -> JobRecord:
        """Ask the job's driver to stop it (``desired_state`` ``stopped``)."""
        _, reply, _ = await self.request("POST", _path(dsid, "job", job, "stop"))
        return JobRecord.from_wire(reply)

    async def start(self, dsid: str, job: str) -> JobRecord:
        """Ask the job's driver to run it again (``desired_state`` ``running``)."""
        _, reply, _ = await self.request("POST", _path(dsid, "job", job, "start"))
        return JobRecord.from_wire(reply)

    async def revisions(self, dsid: str, job: str) -> list[dict[str, Any]]:
        """Every revision of the job, oldest first (``{"revision", "request", "status",
        "error"?, "rollback", "rollback_of", "submitted_at", "updated_at", "running_at"}``)."""
        _, reply, _ = await self.request("GET", _path(dsid, "job", job, "revisions"))
        result: list[dict[str, Any]] = reply["revisions"]
        return result

    # schedules ----------------------------------------------------------------------------------
    async def schedule(
        self,
        dsid: str,
        schedule: str,
        request: Any,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        at: int | str | datetime | None = None,
        catch_up: Literal["none", "one", "all"] | None = None,
        timeout: int | None = None,
    ) -> ScheduleRecord:
        """Create schedule ``schedule`` on ``dsid``: one run ``at`` a time (ms, RFC 3339 text or
        an aware ``datetime``), or runs by ``cron`` (5 fields) in ``timezone`` (default UTC).

        Idempotent: retrying the same schedule returns the stored record; another definition
        under the same id (or a deleted one's) raises ``Conflict``.
        """
        body: dict[str, Any] = {"schedule": schedule, "request": request}
        if cron is not None:
            body["cron"] = cron
        if timezone is not None:
            body["timezone"] = timezone
        if isinstance(at, datetime):
            body["at"] = int(at.timestamp() * 1000)
        elif at is not None:
            body["at"] = at
        if catch_up is not None:
            body["catch_up"] = catch_up
        if timeout is not None:
            body["timeout"] = timeout
        _, reply, _ = await self.request("POST", _path(dsid, "schedule", ""), body)
        return ScheduleRecord.from_wire(reply)

    async def get_schedule(self, dsid: str, schedule: str) -> ScheduleRecord:
        """The schedule's record (deleted ones too)."""
        _, reply, _ = await self.request("GET", _path(dsid, "schedule", schedule, ""))
        return ScheduleRecord.from_wire(reply)

    async def schedules_page(
        self, dsid: str, *, limit: int = 100, cursor: str | None = None
    ) -> SchedulePage:
        """One page of the caller's schedules, newest first."""
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        _, body, _ = await self.request("GET", _path(dsid, "schedule", ""), params=params)
        return SchedulePage(
            [ScheduleRecord.from_wire(s) for s in body["schedules"]], body.get("next")
        )

    async def schedules(self, dsid: str, *, page_size: int = 100) -> AsyncIterator[ScheduleRecord]:
        """Every schedule of the caller on ``dsid``, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.schedules_page(dsid, limit=page_size, cursor=cursor)
            for record in page.schedules:
                yield record
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def runs_page(
        self, dsid: str, schedule: str, *, limit: int = 100, cursor: str | None = None
    ) -> JobPage:
        """One page of the schedule's runs (ordinary job records), newest first."""
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        _, body, _ = await self.request(
            "GET", _path(dsid, "schedule", schedule, "runs"), params=params
        )
        return JobPage([JobRecord.from_wire(j) for j in body["jobs"]], body.get("next"))

    async def runs(
        self, dsid: str, schedule: str, *, page_size: int = 100
    ) -> AsyncIterator[JobRecord]:
        """Every run of the schedule, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.runs_page(dsid, schedule, limit=page_size, cursor=cursor)
            for record in page.jobs:
                yield record
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def pause(self, dsid: str, schedule: str) -> ScheduleRecord:
        """Pause the schedule: no runs until resumed (409 if it is deleted)."""
        _, reply, _ = await self.request("POST", _path(dsid, "schedule", schedule, "pause"))
        return ScheduleRecord.from_wire(reply)

    async def resume(self, dsid: str, schedule: str) -> ScheduleRecord:
        """Resume the schedule: runs from its next fire time on (409 if it is deleted)."""
        _, reply, _ = await self.request("POST", _path(dsid, "schedule", schedule, "resume"))
        return ScheduleRecord.from_wire(reply)

    async def delete_schedule(self, dsid: str, schedule: str) -> ScheduleRecord:
        """Soft-delete the schedule: no further runs; its record and runs stay readable."""
        _, reply, _ = await self.request("DELETE", _path(dsid, "schedule", schedule, ""))
        return ScheduleRecord.from_wire(reply)

    async def cancel_run(self, dsid: str, schedule: str, job: str) -> JobRecord:
        """Cancel one run of the schedule; returns the run's last known record."""
        _, reply, _ = await self.request(
            "DELETE", _path(dsid, "schedule", schedule, "run", job, "")
        )
        return JobRecord.from_wire(reply)


def _job_notification(data: dict[str, Any]) -> Notification | None:
    """A job notification frame, or ``None`` for a schedule's (``subscribe`` yields jobs only)."""
    if data.get("type") == "schedule":
        return None
    return Notification.from_wire(data)


class DriverClient(_Http):
    """A driver's asynchronous client of the store (protocol.md §6); see
    :mod:`jobqueue_store.driver`."""

    async def put_datasource(
        self,
        dsid: str,
        description: str = "",
        request_schema: dict[str, Any] | None = None,
        *,
        dispatch: str | None = None,
        lease_seconds: int | None = None,
        max_attempts: int | None = None,
        job_timeout: int | None = None,
        cancel_grace: int | None = None,
    ) -> dict[str, Any]:
        """Declare or update the datasource; returns it as the store stored it.

        ``dispatch`` is ``"stream"`` (one driver follows the request stream; the default) or
        ``"lease"`` (any number of drivers claim jobs). ``lease_seconds`` (1-3600) is a job's
        lease (lease dispatch) or the worker slot's (stream dispatch); ``max_attempts`` (1-100)
        how many claims a job gets before it fails; ``job_timeout`` the default deadline of its
        jobs in seconds; ``cancel_grace`` the seconds between a deadline's cancel request and the
        job ending ``cancelled``. Settings left None are not sent.
        """
        body: dict[str, Any] = {"description": description}
        if request_schema is not None:
            body["request_schema"] = request_schema
        settings = {
            "dispatch": dispatch,
            "lease_seconds": lease_seconds,
            "max_attempts": max_attempts,
            "job_timeout": job_timeout,
            "cancel_grace": cancel_grace,
        }
        body.update({k: v for k, v in settings.items() if v is not None})
        _, reply, _ = await self.request("PUT", _path("jobs", dsid), body)
        result: dict[str, Any] = reply
        return result

    async def catalogue(self) -> list[dict[str, Any]]:
        """The datasources this token may use."""
        _, reply, _ = await self.request("GET", "/cat")
        result: list[dict[str, Any]] = reply["datasources"]
        return result

    async def update(
        self,
        dsid: str,
        job: str,
        status: str,
        *,
        response: Any = None,
        has_response: bool = False,
        error: str | None = None,
        progress: float | None = None,
        lease: str | None = None,
        retry_in: float | None = None,
        revision: int | None = None,
    ) -> JobRecord:
        """Report a job's status (``response`` is sent when not None or ``has_response``).

        On a lease datasource ``lease`` is the id of the job's lease (from :meth:`claim`); a lost
        lease raises :class:`~jobqueue_store.errors.LeaseLost`. ``retrying`` with ``retry_in``
        seconds gives the job back: it can be claimed again after that delay. The reply's
        ``cancel_requested`` tells the worker that the job's client wants it cancelled.
        ``revision``: the revision the report is about (long-running jobs); an older one
        changes only that revision's history.
        """
        body: dict[str, Any] = {"status": status}
        if has_response or response is not None:
            body["response"] = response
        if error is not None:
            body["error"] = error
        if progress is not None:
            body["progress"] = progress
        if lease is not None:
            body["lease"] = lease
        if retry_in is not None:
            body["retry_in"] = retry_in
        if revision is not None:
            body["revision"] = revision
        _, reply, _ = await self.request("POST", _path("jobs", dsid, "job", job, ""), body)
        return JobRecord.from_wire(reply)

    async def claim(self, dsid: str, worker: str, max: int = 1, wait: float = 0.0) -> list[Claim]:
        """Claim up to ``max`` (1-100) jobs of a lease datasource, oldest first.

        Each is ``accepted`` now and held by ``worker`` under its own lease. With nothing to
        claim the store waits up to ``wait`` seconds (0-60) for a submit, then answers with no
        jobs. A claim is not repeated on a network failure: the jobs of a claim whose reply was
        lost come back to the queue when their leases run out.
        """
        body: dict[str, Any] = {"worker": worker, "max": max}
        if wait:
            body["wait"] = wait
        _, reply, _ = await self.request(
            "POST", _path("jobs", dsid, "claim"), body, wait=wait, retry=False
        )
        return [Claim.from_wire(j) for j in reply["jobs"]]

    async def heartbeat(self, dsid: str, job: str, lease: str) -> JobRecord:
        """Renew a job's lease without changing its status; returns its record.

        :class:`~jobqueue_store.errors.LeaseLost` if the lease is gone; a record with
        ``cancel_requested`` means the job's client asked for it to be cancelled.
        """
        _, reply, _ = await self.request(
            "POST", _path("jobs", dsid, "job", job, "heartbeat"), {"lease": lease}
        )
        return JobRecord.from_wire(reply)

    async def take_slot(self, dsid: str, worker: str) -> Slot:
        """Take the worker slot of a stream datasource for ``worker``.

        :class:`~jobqueue_store.errors.SlotTaken` (its sentence names the holder) while another
        worker holds it. The slot lapses unless renewed with :meth:`slot_heartbeat` within the
        datasource's ``lease_seconds``.
        """
        _, reply, _ = await self.request("POST", _path("jobs", dsid, "worker"), {"worker": worker})
        return Slot.from_wire(reply)

    async def slot_heartbeat(self, dsid: str, lease: str, resume: int | None) -> Slot:
        """Renew the worker slot, reporting ``resume``: the last ``seq`` this worker finished.

        :class:`~jobqueue_store.errors.LeaseLost` if the slot lapsed or another worker took it.
        """
        body: dict[str, Any] = {"lease": lease}
        if resume is not None:
            body["resume"] = resume
        _, reply, _ = await self.request("POST", _path("jobs", dsid, "worker", "heartbeat"), body)
        return Slot.from_wire(reply)

    async def release_slot(self, dsid: str, lease: str) -> None:
        """Free the worker slot now, so that a standby takes over without waiting."""
        await self.request(
            "DELETE", _path("jobs", dsid, "worker"), {"lease": lease}, expect_json=False
        )

    async def job(self, dsid: str, job: str) -> JobRecord:
        """Any job's status record on the datasource."""
        _, reply, _ = await self.request("GET", _path("jobs", dsid, "job", job, ""))
        return JobRecord.from_wire(reply)

    async def latest(self, dsid: str) -> StreamEntry | None:
        """The newest request-stream entry, or None if the stream is empty."""
        try:
            _, reply, _ = await self.request("GET", _path("jobs", dsid, "latest"))
        except NotFound:
            return None
        return StreamEntry.from_wire(reply)

    async def since(
        self, dsid: str, timestamp: int = 0, *, after: int = 0, limit: int = 1000
    ) -> list[StreamEntry]:
        """One page of request-stream entries with ``timestamp >= TIME`` and ``seq > after``."""
        params = {"limit": str(limit)}
        if after:
            params["after"] = str(after)
        _, reply, _ = await self.request(
            "GET", _path("jobs", dsid, "since", str(timestamp)), params=params
        )
        return [StreamEntry.from_wire(e) for e in reply]

    def stream(self, dsid: str, *, after: int | None = None) -> Subscription[StreamEntry]:
        """The datasource's request stream (``GET /sub/<DSID>/jobs``), resuming by itself."""
        return self.subscription(
            _path("sub", dsid, "jobs"), StreamEntry.from_wire, lambda e: e.seq, after
        )


class SyncJobClient:
    """A blocking wrapper of :class:`JobClient` for scripts: same methods, no ``await``.

    It runs its own event loop; use it as a context manager or call :meth:`close`.
    """

    def __init__(self, url: str, token: str, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = JobClient(url, token, **options)

    def __enter__(self) -> SyncJobClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and the event loop."""
        self._runner.run(self._client.close())
        self._runner.close()

    def submit(
        self,
        dsid: str,
        request: Any,
        job: str | None = None,
        *,
        wait: float | None = None,
        timeout: int | None = None,
    ) -> JobRecord:
        """See :meth:`JobClient.submit`."""
        return self._runner.run(self._client.submit(dsid, request, job, wait=wait, timeout=timeout))

    def status(self, dsid: str, job: str) -> JobRecord:
        """See :meth:`JobClient.status`."""
        return self._runner.run(self._client.status(dsid, job))

    def wait(self, dsid: str, job: str, timeout: float | None = None) -> JobRecord:
        """See :meth:`JobClient.wait`."""
        return self._runner.run(self._client.wait(dsid, job, timeout))

    def cancel(self, dsid: str, job: str) -> JobRecord:
        """See :meth:`JobClient.cancel`."""
        return self._runner.run(self._client.cancel(dsid, job))

    def update(self, dsid: str, job: str, request: Any, *, rollback: bool = False) -> JobRecord:
        """See :meth:`JobClient.update`."""
        return self._runner.run(self._client.update(dsid, job, request, rollback=rollback))

    def stop(self, dsid: str, job: str) -> JobRecord:
        """See :meth:`JobClient.stop`."""
        return self._runner.run(self._client.stop(dsid, job))

    def start(self, dsid: str, job: str) -> JobRecord:
        """See :meth:`JobClient.start`."""
        return self._runner.run(self._client.start(dsid, job))

    def revisions(self, dsid: str, job: str) -> list[dict[str, Any]]:
        """See :meth:`JobClient.revisions`."""
        return self._runner.run(self._client.revisions(dsid, job))

    def jobs(self, dsid: str, *, status: str | None = None) -> Iterator[JobRecord]:
        """See :meth:`JobClient.jobs`: pages are fetched as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self._runner.run(self._client.jobs_page(dsid, status=status, cursor=cursor))
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def schedule(self, dsid: str, schedule: str, request: Any, **options: Any) -> ScheduleRecord:
        """See :meth:`JobClient.schedule`."""
        return self._runner.run(self._client.schedule(dsid, schedule, request, **options))

    def get_schedule(self, dsid: str, schedule: str) -> ScheduleRecord:
        """See :meth:`JobClient.get_schedule`."""
        return self._runner.run(self._client.get_schedule(dsid, schedule))

    def schedules(self, dsid: str) -> Iterator[ScheduleRecord]:
        """See :meth:`JobClient.schedules`: pages are fetched as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self._runner.run(self._client.schedules_page(dsid, cursor=cursor))
            yield from page.schedules
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def runs(self, dsid: str, schedule: str) -> Iterator[JobRecord]:
        """See :meth:`JobClient.runs`: pages are fetched as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self._runner.run(self._client.runs_page(dsid, schedule, cursor=cursor))
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def pause(self, dsid: str, schedule: str) -> ScheduleRecord:
        """See :meth:`JobClient.pause`."""
        return self._runner.run(self._client.pause(dsid, schedule))

    def resume(self, dsid: str, schedule: str) -> ScheduleRecord:
        """See :meth:`JobClient.resume`."""
        return self._runner.run(self._client.resume(dsid, schedule))

    def delete_schedule(self, dsid: str, schedule: str) -> ScheduleRecord:
        """See :meth:`JobClient.delete_schedule`."""
        return self._runner.run(self._client.delete_schedule(dsid, schedule))

    def cancel_run(self, dsid: str, schedule: str, job: str) -> JobRecord:
        """See :meth:`JobClient.cancel_run`."""
        return self._runner.run(self._client.cancel_run(dsid, schedule, job))

    def subscribe(self, dsid: str, *, after: int | None = None) -> Iterator[Notification]:
        """See :meth:`JobClient.subscribe`: a blocking iterator of notifications."""
        sub = self._client.subscribe(dsid, after=after)
        try:
            while True:
                try:
                    yield self._runner.run(sub.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(sub.close())
