"""A real store on a real port, served from a background thread's event loop, for sync tests.

Hypothesis (and schemathesis, which drives it) runs examples synchronously; the store is an
asyncio application. :class:`LiveStore` runs the app with the store's ``StoreRunner`` and a
``TCPSite`` on ``127.0.0.1:<free port>`` in its own thread and loop, and offers blocking
helpers: HTTP calls over one keep-alive ``http.client`` connection (:meth:`LiveStore.call`) and
running a coroutine in the store's loop (:meth:`LiveStore.run`, used for websocket clients).
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from jobqueue_store.auth import TokenAuthority
from jobqueue_store.config import Limits, Settings
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import Role
from jobqueue_store.storage.base import Store
from jobqueue_store.web.app import create_app
from jobqueue_store.web.server import StoreRunner
from tests.conftest import make_store
from tests.wire import validate

STORE_NAME = "fuzz-store"
T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, headers (lower-case names) and the decoded JSON body (or text)."""

    status: int
    headers: dict[str, str]
    body: Any


class LiveStore:
    """A store app listening on a real port, run by a background thread's loop."""

    def __init__(
        self,
        tmp_path: Path,
        backend: str = "sqlite",
        pg_schema: str = "",
        limits: Limits | None = None,
    ) -> None:
        ring = KeyRing.load_or_create(tmp_path / "data")
        self.authority = TokenAuthority(ring, STORE_NAME)
        self.settings = Settings(
            data_dir=tmp_path / "data", name=STORE_NAME, limits=limits or Limits()
        )
        self._store = make_store(backend, tmp_path, pg_schema)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: StoreRunner | None = None
        self.port = 0
        self._conn: http.client.HTTPConnection | None = None

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread and the app; return once it listens."""
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        app = create_app(self.settings, store=self._store, authority=self.authority)
        self._runner = StoreRunner(
            app,
            access_log=None,
            limits=self.settings.limits,
            max_connections=self.settings.limits.max_open_connections,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Shut the app down and stop the thread."""
        if self._conn is not None:
            self._conn.close()
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` in the store's loop and return its result (blocking)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    # access -------------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The app's store (its reads run in the store's loop: :meth:`run`)."""
        return self._store

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.port}"

    def token(self, role: str = "client", client: str | None = "app1", **kw: Any) -> str:
        """Mint a token; ``client`` is only used for role client."""
        return self.authority.mint(Role(role), client=client if role == "client" else None, **kw)

    def request(self, method: str, path: str, token: str | None = None, json: Any = None) -> Reply:
        """One HTTP request over the kept-alive connection; the body is decoded if JSON."""
        headers = {"Connection": "keep-alive"}
        body = None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # The server may close an idle keep-alive connection: reconnect once.
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        reply_headers = {k.lower(): v for k, v in resp.getheaders()}
        if reply_headers.get("content-type", "").startswith("application/json"):
            return Reply(resp.status, reply_headers, orjson.loads(raw))
        return Reply(resp.status, reply_headers, raw.decode())

    def call(
        self,
        method: str,
        path: str,
        token: str | None,
        json: Any = None,
        *,
        expect: int,
        schema: str | None = None,
    ) -> Any:
        """A request whose status must be ``expect``; the body is checked against the schemas
        (``error`` for 4xx/5xx, ``schema`` otherwise) and returned."""
        reply = self.request(method, path, token, json)
        assert reply.status == expect, f"{method} {path}: {reply.status} {reply.body!r}"
        if reply.status >= 400:
            validate("error", reply.body)
        elif schema is not None:
            validate(schema, reply.body)
        return reply.body

    def declare(self, dsid: str, **body: Any) -> None:
        """Declare datasource ``dsid`` as an admin."""
        self.call(
            "PUT",
            f"/jobs/{dsid}",
            self.token("admin"),
            {"description": f"fuzz {dsid}", **body},
            expect=200,
            schema="datasource",
        )


@contextmanager
def live_store(
    tmp_path: Path, backend: str = "sqlite", pg_schema: str = "", limits: Limits | None = None
) -> Iterator[LiveStore]:
    """A started :class:`LiveStore`, stopped on exit."""
    live = LiveStore(tmp_path, backend, pg_schema, limits)
    live.start()
    try:
        yield live
    finally:
        live.stop()
