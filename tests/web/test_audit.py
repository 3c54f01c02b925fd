"""The audit log (one JSON line per write, never a token) and the redacting access log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobqueue_store.audit import LOGGER_NAME, AuditLog
from jobqueue_store.auth import TokenAuthority
from jobqueue_store.config import Settings
from jobqueue_store.keys import KeyRing
from jobqueue_store.web.access_log import RedactingAccessLogger
from jobqueue_store.web.app import create_app
from tests.conftest import make_store
from tests.web.conftest import STORE_NAME, Api, StoreTestServer

FIELDS = {
    "ts",
    "event",
    "role",
    "client",
    "key_id",
    "action",
    "datasource",
    "job",
    "status",
    "code",
    "remote",
}


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit records captured so far, decoded; each has exactly the documented fields."""
    lines = []
    for record in caplog.records:
        if record.name == LOGGER_NAME:
            line = orjson.loads(record.getMessage())
            assert set(line) == FIELDS and line["event"] == "audit"
            lines.append(line)
    return lines


async def test_every_write_is_audited(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    tok, driver = api.token(), api.token("driver")
    key_id = api.authority.keyring.current
    caplog.clear()
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": {"secret": 1}}, expect=201)
    await api.call("POST", "/ds1/job", tok, {"job": "j1", "request": {"secret": 1}}, expect=200)
    await api.call("GET", "/ds1/job/j1/", tok, expect=200)  # a read: not audited
    await api.call("POST", "/ds1/job/j1/cancel", tok, expect=200)
    await api.call("POST", "/jobs/ds1/job/j1/", driver, {"status": "cancelled"}, expect=200)
    await api.call("POST", "/ds1/job/", tok, {"job": "j2", "request": 1}, expect=201)
    await api.call("DELETE", "/ds1/job/j2/", tok, expect=200)
    await api.call("PUT", "/jobs/ds2", driver, {"description": "two"}, expect=200)
    lines = audit_lines(caplog)
    got = [(x["action"], x["datasource"], x["job"], x["status"], x["code"]) for x in lines]
    assert got == [
        ("submit", "ds1", "j1", 201, None),
        ("submit", "ds1", "j1", 200, None),
        ("cancel", "ds1", "j1", 200, None),
        ("update_status", "ds1", "j1", 200, None),
        ("submit", "ds1", "j2", 201, None),
        ("delete_job", "ds1", "j2", 200, None),
        ("put_datasource", "ds2", None, 200, None),
    ]
    for line in lines:
        assert line["key_id"] == key_id
        assert line["remote"] == "127.0.0.1"
        assert line["ts"].endswith("Z") and line["ts"][10] == "T"
        if line["action"] in ("update_status", "put_datasource"):
            assert (line["role"], line["client"]) == ("driver", None)
        else:
            assert (line["role"], line["client"]) == ("client", "app1")
    assert "secret" not in caplog.text


async def test_refused_writes_are_audited(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    tok = api.token()
    caplog.clear()
    await api.call("POST", "/ds1/job/", None, {"job": "j1", "request": 1}, expect=401)
    await api.call("POST", "/ds1/job/", "garbage", {"job": "j1", "request": 1}, expect=401)
    await api.call(
        "POST", "/ds1/job/", api.token("driver"), {"job": "j1", "request": 1}, expect=403
    )
    await api.call("POST", "/nope/job/", tok, {"job": "j1", "request": 1}, expect=404)
    await api.call("POST", "/ds1/job/", tok, {"job": "bad id!", "request": 1}, expect=400)
    await api.call("PATCH", "/ds1/job/j1/", tok, {}, expect=405)
    await api.call("POST", "/no/such/endpoint", tok, {}, expect=404)
    got = [(x["role"], x["action"], x["job"], x["status"], x["code"]) for x in audit_lines(caplog)]
    assert got == [
        (None, "submit", None, 401, "unauthorized"),
        (None, "submit", None, 401, "unauthorized"),
        ("driver", "submit", "j1", 403, "forbidden"),
        ("client", "submit", "j1", 404, "not_found"),
        ("client", "submit", None, 400, "bad_request"),
        (None, "unmatched", None, 405, "bad_request"),
        (None, "unmatched", None, 404, "not_found"),
    ]


async def test_no_token_in_any_log_record(
    tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG, the access log on (as ``serve --access-log on``): tokens sent in
    headers and in ``?token=`` never appear, nor does any part of their signature."""
    caplog.set_level(logging.DEBUG)
    ring = KeyRing.load_or_create(tmp_path / "data")
    authority = TokenAuthority(ring, STORE_NAME)
    settings = Settings(data_dir=tmp_path / "data", name=STORE_NAME)
    app = create_app(settings, store=make_store("sqlite", tmp_path, "unused"), authority=authority)
    server = StoreTestServer(app)
    await server.start_server(
        access_log_class=RedactingAccessLogger,
        access_log=logging.getLogger("jobqueue_store.access"),
    )
    client = await aiohttp_client(server)
    api = Api(client, authority)
    tok, driver = api.token(), api.token("driver")
    await api.declare("ds1", driver=driver)
    await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
    await api.call("POST", f"/ds1/job/?token={tok}", None, {"job": "j1", "request": 1}, expect=401)
    await api.call("GET", f"/ds1/job/j1/?x=1&token={tok}", tok, expect=200)
    ws = await client.ws_connect(f"/sub/ds1/job?token={tok}")
    await ws.close()
    expired = api.token(extra_caveats=["time < 2001-01-01T00:00:00Z"])
    await api.call("POST", "/ds1/job/", expired, {"job": "j2", "request": 1}, expect=401)
    access = [r for r in caplog.records if r.name == "jobqueue_store.access"]
    assert any("token=REDACTED" in r.getMessage() for r in access), caplog.text
    assert any(r.name == LOGGER_NAME for r in caplog.records)
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    for secret in (tok, driver, expired):
        assert secret not in text
        assert secret[-40:] not in text  # no fragment either (the signature is at the end)


async def test_audit_log_file_and_off(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    tok = api.token()
    with AuditLog(str(path)):
        await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
        await api.call("POST", "/ds1/job/", None, {"job": "j2", "request": 1}, expect=401)
        assert not logging.getLogger(LOGGER_NAME).propagate
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [(x["job"], x["status"]) for x in lines] == [("j1", 201), (None, 401)]
    assert set(lines[0]) == FIELDS
    # Closing restores the logger, and "off" silences it.
    assert logging.getLogger(LOGGER_NAME).propagate
    with AuditLog("off"):
        assert not logging.getLogger(LOGGER_NAME).isEnabledFor(logging.CRITICAL)
        await api.call("POST", "/ds1/job/", tok, {"job": "j3", "request": 1}, expect=201)
    assert len(path.read_text().splitlines()) == 2


async def test_audit_log_to_stderr(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditLog("-"):
        await api.call("POST", "/ds1/job/", api.token(), {"job": "j1", "request": 1}, expect=201)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert orjson.loads(err[0])["action"] == "submit"


async def test_audit_log_file_survives_rotation(api: Api, tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    tok = api.token()
    with AuditLog(str(path)):
        await api.call("POST", "/ds1/job/", tok, {"job": "j1", "request": 1}, expect=201)
        path.rename(rotated)
        for job in ("j2", "j3"):
            await api.call("POST", "/ds1/job/", tok, {"job": job, "request": 1}, expect=201)
    # Lines written before the writer noticed the move are in the rotated file; none is lost,
    # and the file is created again.
    assert path.exists()
    text = rotated.read_text() + path.read_text()
    assert sorted(orjson.loads(line)["job"] for line in text.splitlines()) == ["j1", "j2", "j3"]


def test_timestamps_are_utc_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line's time: ISO 8601 UTC with milliseconds, made again when the millisecond or the
    second changes (it is kept for the rest of a millisecond)."""
    from jobqueue_store import audit

    now = [1_767_323_045_678_123_456]  # 2026-01-02T03:04:05.678123456Z
    monkeypatch.setattr(audit.time, "time_ns", lambda: now[0])
    assert audit._timestamp() == "2026-01-02T03:04:05.678Z"
    now[0] += 300_000  # the same millisecond
    assert audit._timestamp() == "2026-01-02T03:04:05.678Z"
    now[0] += 1_000_000
    assert audit._timestamp() == "2026-01-02T03:04:05.679Z"
    now[0] += 321_000_000  # the next second
    assert audit._timestamp() == "2026-01-02T03:04:06.000Z"
    now[0] += 3_600_000_000_000 + 5_000_000
    assert audit._timestamp() == "2026-01-02T04:04:06.005Z"
