"""Errors, authentication and operations (docs/protocol.md) through the real server: every
error row, every caveat, operations."""

from __future__ import annotations

import datetime as dt

from pymacaroons import Macaroon

from tests.web.conftest import Api


def attenuate(token: str, *caveats: str) -> str:
    """What a holder can do with their token: add first-party caveats, without the root key."""
    m = Macaroon.deserialize(token)
    for caveat in caveats:
        m.add_first_party_caveat(caveat)
    return str(m.serialize())


def rfc3339(delta_s: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta_s)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_healthz_is_open_and_metrics_admin_only(api: Api) -> None:
    assert await api.call("GET", "/healthz", None, expect=200, schema="health") == {"status": "ok"}
    await api.call("GET", "/healthz/", None, expect=200)
    await api.call("GET", "/metrics", None, expect=401)
    await api.call("GET", "/metrics", api.token(), expect=403)
    await api.call("GET", "/metrics", api.token("driver"), expect=403)
    text = await api.call("GET", "/metrics", api.token("admin"), expect=200)
    assert "# TYPE jobqueue_http_requests_total counter" in text
    assert 'route="put_datasource"' in text


async def test_401_rows(api: Api) -> None:
    good = api.token()
    body = {"job": "j", "request": 1}
    await api.call("POST", "/ds1/job/", None, body, expect=401)
    await api.call("POST", "/ds1/job/", "!!!", body, expect=401)
    await api.call("POST", "/ds1/job/", "bm90IGEgbWFjYXJvb24", body, expect=401)
    await api.call("POST", "/ds1/job/", good[:-10], body, expect=401)
    forged = Macaroon.deserialize(good)
    evil = Macaroon(location="", identifier=forged.identifier, key="not-the-root-key")
    evil.add_first_party_caveat("target = test-store")
    evil.add_first_party_caveat("role = admin")
    await api.call("POST", "/ds1/job/", evil.serialize(), body, expect=401)
    await api.call("POST", "/ds1/job/", attenuate(good, "colour = blue"), body, expect=401)
    await api.call("POST", "/ds1/job/", attenuate(good, f"time < {rfc3339(-5)}"), body, expect=401)
    await api.call("POST", "/ds1/job/", attenuate(good, "time < tomorrow"), body, expect=401)
    await api.call("GET", "/ds1/job/", good, expect=200)  # the original still works
    await api.call("GET", "/ds1/job/", None, expect=401, headers={"Authorization": "Basic x"})
    await api.call("GET", "/ds1/job/?token=" + good, None, expect=401)  # query only for websockets


async def test_x_api_key_header(api: Api) -> None:
    await api.call("GET", "/ds1/job/", None, expect=200, headers={"X-Api-Key": api.token()})


async def test_wrong_target_is_401(api: Api) -> None:
    from jobqueue_store.auth import TokenAuthority
    from jobqueue_store.models import Role

    other = TokenAuthority(api.authority.keyring, "another-store")
    tok = other.mint(Role.CLIENT, client="app1")
    await api.call("GET", "/ds1/job/", tok, expect=401)


async def test_attenuated_caveats_narrow_to_403(api: Api) -> None:
    await api.declare("ds2")
    tok = api.token()
    body = {"job": "j", "request": 1}
    only_ds2 = attenuate(tok, "dsid = ds2")
    await api.call("POST", "/ds1/job/", only_ds2, body, expect=403)
    await api.call("POST", "/ds2/job/", only_ds2, body, expect=201)
    both = attenuate(api.token(dsids=["ds1", "ds2"]), "dsid = ds2,ds3")
    await api.call("GET", "/ds1/job/", both, expect=403)
    await api.call("GET", "/ds2/job/", both, expect=200)
    get_only = attenuate(tok, "method = GET")
    await api.call("POST", "/ds1/job/", get_only, {"job": "k", "request": 1}, expect=403)
    await api.call("GET", "/ds1/job/", get_only, expect=200)
    path_only = attenuate(tok, "path = /ds2/*")
    await api.call("GET", "/ds1/job/", path_only, expect=403)
    await api.call("GET", "/ds2/job/", path_only, expect=200)
    short = attenuate(tok, f"time < {rfc3339(3600)}")
    await api.call("GET", "/ds1/job/", short, expect=200)
    widen = attenuate(api.token(dsids=["ds2"]), "dsid = ds1,ds2")
    await api.call("GET", "/ds1/job/", widen, expect=403)


async def test_client_id_comes_only_from_the_token(api: Api) -> None:
    tok = api.token(client="app1")
    rec = await api.call("POST", "/ds1/job/", tok, {"job": "j", "request": 1}, expect=201)
    assert rec["client"] == "app1"
    two = attenuate(tok, "client = app2")
    await api.call("GET", "/ds1/job/j", two, expect=401)


async def test_roles_are_kept_apart(api: Api) -> None:
    tok, drv, adm = api.token(), api.token("driver"), api.token("admin")
    await api.call("POST", "/ds1/job/", drv, {"job": "j", "request": 1}, expect=403)
    await api.call("GET", "/ds1/job/", drv, expect=403)
    await api.call("GET", "/jobs/ds1/since/0", tok, expect=403)
    await api.call("POST", "/jobs/ds1/job/j", tok, {"status": "complete"}, expect=403)
    await api.call("GET", "/cat", adm, expect=200, schema="catalogue")
    await api.call("POST", "/ds1/job/", adm, {"job": "j", "request": 1}, expect=400)
    rec = await api.call(
        "POST", "/ds1/job/", adm, {"job": "j", "request": 1, "client": "appX"}, expect=201
    )
    assert rec["client"] == "appX"
    await api.call("GET", "/jobs/ds1/since/0", adm, expect=200)
    await api.call("POST", "/ds1/job/j/cancel", adm, expect=200)


async def test_unknown_route_and_method_give_json_errors(api: Api) -> None:
    tok = api.token()
    err = await api.call("GET", "/no/such/path/here", tok, expect=404)
    assert err["code"] == "not_found"
    err = await api.call("PATCH", "/ds1/job/", tok, expect=405)
    assert err["code"] == "bad_request"


async def test_readyz_is_open_and_openapi_needs_a_token(api: Api) -> None:
    assert await api.call("GET", "/readyz", None, expect=200, schema="health") == {"status": "ok"}
    await api.call("GET", "/openapi.json", None, expect=401)
    doc = await api.call("GET", "/openapi.json", api.token(), expect=200)
    assert doc["openapi"] == "3.1.0"
    assert {"/{dsid}/job/", "/jobs/{dsid}/since/{time}", "/readyz"} <= set(doc["paths"])
    from jsonschema import Draft202012Validator

    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
