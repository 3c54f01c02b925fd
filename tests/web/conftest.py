"""A real store app on a real HTTP server, per backend, with tokens for each role."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jobqueue_store.auth import TokenAuthority
from jobqueue_store.config import Settings
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import Role
from jobqueue_store.web.app import create_app
from jobqueue_store.web.keys import SETTINGS
from jobqueue_store.web.server import StoreRunner
from tests.conftest import _drop_schema, make_store
from tests.wire import validate

STORE_NAME = "test-store"


@dataclass
class Api:
    """A test client of the store with helpers that check every reply against the schemas."""

    client: TestClient[Any, Any]
    authority: TokenAuthority

    def token(self, role: str = "client", client: str | None = "app1", **kw: Any) -> str:
        """Mint a token; ``client`` is only used for role client."""
        return self.authority.mint(Role(role), client=client if role == "client" else None, **kw)

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        """The Authorization header for ``token``."""
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        json: Any = None,
        *,
        expect: int,
        schema: str | None = None,
        **kw: Any,
    ) -> Any:
        """Make a request, assert the status, validate the body and return it (decoded)."""
        headers = kw.pop("headers", {})
        if token is not None:
            headers.update(self.auth(token))
        if json is not None:
            kw["json"] = json
        resp = await self.client.request(method, path, headers=headers, **kw)
        text = await resp.text()
        assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
        if resp.content_type == "application/json":
            body = await resp.json()
            if resp.status >= 400:
                validate("error", body)
            elif schema is not None:
                validate(schema, body)
            return body
        return text

    async def declare(self, dsid: str = "ds1", driver: str | None = None, **body: Any) -> None:
        """Declare datasource ``dsid`` as its driver."""
        await self.call(
            "PUT",
            f"/jobs/{dsid}",
            driver or self.token("driver"),
            {"description": "test", **body},
            expect=200,
            schema="datasource",
        )


AppFactory = Callable[..., Awaitable[Api]]


class StoreTestServer(TestServer):
    """aiohttp's test server serving through the store's own runner, as ``serve`` does: its
    dispatcher, connection limits, timeouts and drain."""

    async def _make_runner(self, **kwargs: Any) -> StoreRunner:
        limits = self.app[SETTINGS].limits
        return StoreRunner(
            self.app, limits=limits, max_connections=limits.max_open_connections, **kwargs
        )


@pytest.fixture
async def make_api(
    backend: str, tmp_path: Path, pg_schema: str, aiohttp_client: Any
) -> AsyncIterator[AppFactory]:
    """Start a store app (of the parametrized backend) and return an :class:`Api` for it."""

    async def factory(**settings: Any) -> Api:
        ring = KeyRing.load_or_create(tmp_path / "data")
        authority = TokenAuthority(ring, STORE_NAME)
        config = Settings(data_dir=tmp_path / "data", name=STORE_NAME, **settings)
        app: web.Application = create_app(
            config, store=make_store(backend, tmp_path, pg_schema), authority=authority
        )
        return Api(await aiohttp_client(StoreTestServer(app)), authority)

    yield factory
    if backend == "postgres":
        await _drop_schema(pg_schema)


@pytest.fixture
async def api(make_api: AppFactory) -> Api:
    """A store with default settings and datasource ``ds1`` declared."""
    a = await make_api()
    await a.declare("ds1")
    return a
