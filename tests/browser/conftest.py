"""A real store process and a real headless Chromium driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``.ci/run``); Playwright
only drives it (``playwright install`` is never run). Each test gets its own store (SQLite in its
own data directory, on a free port), a browser page that records everything it receives (every
HTTP response body and every websocket frame) and every console message, and helpers to act as
another client or as the driver over plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobqueue_store.auth import TokenAuthority
from jobqueue_store.config import DEFAULT_NAME
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import Role
from tests.procs import StoreProcess

CHROMIUM = os.environ.get("JOBQUEUE_STORE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# `make screenshots` sets JOBQUEUE_STORE_SCREENSHOTS=docs/screenshots to refresh the README's
# pictures; an ordinary run writes them to a temporary directory and leaves the work tree clean.
SCREENSHOTS = Path(
    os.environ.get("JOBQUEUE_STORE_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / f"jobqueue-store-screenshots-{os.getpid()}"
)
SCREENSHOTS.mkdir(parents=True, exist_ok=True)
VIEWPORT = {"width": 1100, "height": 720}

playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@dataclass
class Store:
    """A store process, with tokens and plain-HTTP helpers for the test's other actors."""

    proc: StoreProcess
    data_dir: Path
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        """The store's base URL."""
        return self.proc.url

    def token(
        self, role: str, client: str | None = None, dsid: str | None = None, ttl: float = 86400
    ) -> str:
        """A token from the store's root key (what ``jobqueue-store token`` mints)."""
        authority = TokenAuthority(KeyRing.load_or_create(self.data_dir), DEFAULT_NAME)
        return authority.mint(Role(role), client=client, dsids=[dsid] if dsid else None, ttl=ttl)

    async def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        """One API call; asserts a 2xx and returns the decoded body."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
            text = await r.text()
            assert 200 <= r.status < 300, f"{method} {path}: {r.status} {text}"
            return await r.json() if text else None

    async def restart(self) -> None:
        """Stop the store gracefully and start it again on the same port and data."""
        await self.proc.stop()
        self.proc = StoreProcess(self.data_dir, port=self.proc.port)
        await self.proc.start()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Store]:
    """A running store with datasource ``ds1`` declared."""
    data_dir = tmp_path / "data"
    proc = StoreProcess(data_dir)
    await proc.start()
    async with aiohttp.ClientSession() as http:
        store = Store(proc, data_dir, http)
        await store.call("PUT", "/jobs/ds1", store.token("driver"), {"description": "thumbnails"})
        try:
            yield store
        finally:
            if store.proc.proc is not None and store.proc.proc.returncode is None:
                await store.proc.stop()


@dataclass
class Recorder:
    """Everything a page received and logged."""

    bodies: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def console_errors(self) -> list[str]:
        """Console errors and uncaught exceptions of the page."""
        return [m for m in self.console if m.startswith("error:")] + self.errors

    async def settle(self) -> None:
        """Wait until every response body has been read."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def received(self) -> str:
        """Every response body and websocket frame, joined."""
        return "\n".join(self.bodies + self.frames)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium (Debian's), driven by Playwright."""
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[tuple[Any, Recorder]]:
    """A fresh page (its own context: its own session storage) and its recorder."""
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    pg = await context.new_page()
    rec = Recorder()

    async def read_body(response: Any) -> None:
        # A body that is gone (navigation, redirect) has nothing to record.
        with contextlib.suppress(Exception):
            rec.bodies.append((await response.body()).decode("utf-8", "replace"))

    def on_response(response: Any) -> None:
        rec.tasks.append(asyncio.ensure_future(read_body(response)))

    def on_websocket(ws: Any) -> None:
        ws.on("framereceived", lambda payload: rec.frames.append(str(payload)))

    pg.on("response", on_response)
    pg.on("websocket", on_websocket)
    pg.on("console", lambda m: rec.console.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: rec.errors.append(f"pageerror: {e}"))
    try:
        yield pg, rec
    finally:
        await context.close()


async def sign_in(pg: Any, store: Store, token: str) -> None:
    """Open the dashboard and sign in with ``token``."""
    await pg.goto(store.url + "/ui/")
    await pg.fill("#token", token)
    await pg.click("#signin")
    await pg.wait_for_selector("#who:not([hidden])")


async def screenshot(pg: Any, name: str) -> None:
    """Write <name>.png into SCREENSHOTS (docs/screenshots with `make screenshots`)."""
    await pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def until(pg: Any, expression: str, timeout: float = 10.0) -> None:
    """Poll a JavaScript expression until it is true.

    Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the page,
    which the dashboard's Content-Security-Policy forbids (as it should); ``evaluate`` does not.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pg.evaluate(expression):
        if loop.time() > deadline:
            raise AssertionError(f"still false after {timeout}s: {expression}")
        await asyncio.sleep(0.05)
