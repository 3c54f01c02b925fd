"""The client library's token file: re-read when the store refuses the token, retried once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobqueue_store.auth import TokenAuthority
from jobqueue_store.client import JobClient, normalize_url
from jobqueue_store.errors import NotFound, Unauthorized
from jobqueue_store.models import Role
from tests.web.conftest import STORE_NAME, Api


def expired(api: Api) -> str:
    """A client token of the store's key that expired an hour ago."""
    past = TokenAuthority(api.authority.keyring, STORE_NAME, clock=lambda: time.time() - 7200)
    return past.mint(Role.CLIENT, client="app1", ttl=3600)


async def test_requests_and_subscriptions_pick_up_a_renewed_token_file(
    api: Api, tmp_path: Path
) -> None:
    url = str(api.client.make_url("")).rstrip("/")
    token_file = tmp_path / "token"
    token_file.write_text(expired(api) + "\n")
    async with JobClient(url, token_file=token_file, retries=0) as client:
        with pytest.raises(Unauthorized, match="the token has expired: get a new one"):
            await client.submit("ds1", {"n": 1}, "j1")
        fresh = api.token()
        token_file.write_text(fresh)
        record = await client.submit("ds1", {"n": 1}, "j1")  # 401, re-read, retried once
        assert record.job == "j1" and client.token == fresh

        token_file.write_text(expired(api))
        client.token = expired(api)
        with pytest.raises(Unauthorized, match="the token has expired"):
            async with client.subscribe("ds1", retries=0):
                pass
        token_file.write_text(fresh)
        client.token = expired(api)
        async with client.subscribe("ds1", after=0, retries=0) as sub:  # handshake 401, re-read
            note = await anext(sub)
        assert (note.job, note.record.status.value) == ("j1", "submitted")
        assert client.token == fresh


async def test_a_refused_subscription_carries_the_stores_sentence(api: Api) -> None:
    url = str(api.client.make_url("")).rstrip("/")
    async with JobClient(url, "garbage", retries=0) as client:
        with pytest.raises(Unauthorized) as refused:
            async with client.subscribe("ds1"):
                pass
    assert refused.value.message == "The token could not be decoded: it is not a macaroon."
    async with JobClient(url, api.token(), retries=0) as client:
        with pytest.raises(NotFound) as missing:
            async with client.subscribe("nowhere"):
                pass
    assert "'nowhere' is not declared" in missing.value.message


def test_normalize_url() -> None:
    assert normalize_url("localhost:8080") == "http://localhost:8080"
    assert normalize_url(" https://store.example/prefix/ ") == "https://store.example/prefix"
    assert normalize_url("127.0.0.1") == "http://127.0.0.1"
    for bad in ("", "ftp://x", "http://", "localhost:port", "http://a b", "http://h/?q=1"):
        with pytest.raises(ValueError):
            normalize_url(bad)
