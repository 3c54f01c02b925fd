"""The command line through the installed command: serve, token, key, env variables, graceful
stop."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import aiohttp

from tests.procs import COMMAND, StoreProcess, cli, free_port


async def _status(url: str, token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/cat", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status


async def test_first_start_creates_data_dir_key_and_database(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    store = StoreProcess(data)
    await store.start()
    try:
        assert stat.S_IMODE((data / "root_keys.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert (data / "jobqueue.sqlite3").exists()
        token = cli("token", "--role", "admin", data_dir=data)
        assert "\n" not in token and token
        assert await _status(store.url, token) == 200
        other_name = cli("token", "--role", "admin", "--name", "elsewhere", data_dir=data)
        assert await _status(store.url, other_name) == 401
        env_name = cli(
            "token", "--role", "admin", data_dir=data, env={"JOBQUEUE_STORE_NAME": "elsewhere"}
        )
        assert await _status(store.url, env_name) == 401
    finally:
        assert await store.stop() == 0, "SIGTERM must shut down cleanly"


async def test_env_variables_configure_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = subprocess.Popen(
        [*COMMAND, "serve"],
        env={
            **os.environ,
            "JOBQUEUE_STORE_PORT": str(port),
            "JOBQUEUE_STORE_DATA_DIR": str(data),
            "JOBQUEUE_STORE_NAME": "envstore",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert (
            proc.stdout.readline().strip() == f"jobqueue-store listening on http://127.0.0.1:{port}"
        )
        token = cli("token", "--role", "admin", "--name", "envstore", data_dir=data)
        assert await _status(f"http://127.0.0.1:{port}", token) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
        assert code == 0


async def test_token_requires_client_for_client_role(tmp_path: Path) -> None:
    out = subprocess.run(
        [*COMMAND, "token", "--role", "client", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and out.stdout == "" and "client" in out.stderr


async def test_key_rotation_and_revocation_with_sighup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = StoreProcess(data)
    await store.start()
    try:
        old = cli("token", "--role", "admin", data_dir=data)
        old_id = cli("key", "list", data_dir=data).split()[0]
        new_id = cli("key", "rotate", data_dir=data)
        assert new_id != old_id
        new = cli("token", "--role", "admin", data_dir=data)
        assert await _status(store.url, new) == 401, "not reloaded yet"
        assert store.proc is not None
        store.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await _status(store.url, new) == 200:
                break
        assert await _status(store.url, new) == 200
        assert await _status(store.url, old) == 200, "old tokens work while their key is listed"
        cli("key", "remove", old_id, data_dir=data)
        store.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await _status(store.url, old) == 401:
                break
        assert await _status(store.url, old) == 401, "removing a key revokes its tokens"
        assert await _status(store.url, new) == 200
    finally:
        await store.stop()


async def test_migrate_only(tmp_path: Path) -> None:
    out = subprocess.run(
        [*COMMAND, "serve", "--migrate-only", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("schema version ")
    assert (tmp_path / "d" / "jobqueue.sqlite3").exists()
