"""Every verb of the installed command against what goes wrong in daily use: a URL without a
scheme, a closed port, a garbage token, an expired token (then a renewed token file). Each case
checks the exact output and exit status, and that no traceback is printed."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

from jobqueue_store.auth import TokenAuthority, format_time
from jobqueue_store.config import DEFAULT_NAME
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import Role
from tests.e2e.conftest import COMMAND, ROOT, DriverProcess, StoreProcess, _Output, free_port, jq

DS = "rb"
DRIVER = "tests.e2e.drivers:counting"


def verbs(state: Path) -> list[tuple[str, list[str]]]:
    """Every client and driver verb with arguments that make it call the store: (name as the
    error line says it, arguments)."""
    return [
        ("datasource", ["datasource", "put", DS, "--description", "d"]),
        ("datasource", ["datasource", "list"]),
        ("submit", ["submit", DS, '{"x": 1}', "--job", "j9"]),
        ("status", ["status", DS, "j9"]),
        ("cancel", ["cancel", DS, "j9"]),
        ("jobs", ["jobs", DS]),
        ("watch", ["watch", DS]),
        ("watch", ["watch", DS, "j9"]),
        ("run-driver", ["run-driver", DRIVER, "--dsid", DS, "--state-file", str(state)]),
    ]


def check(
    done: subprocess.CompletedProcess[str], status: int, stdout: str = "", stderr: str = ""
) -> None:
    """The exact exit status and output, and no traceback anywhere."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert (done.returncode, done.stdout, done.stderr) == (status, stdout, stderr)


def expired_token(data_dir: Path, role: Role, client: str | None = None) -> tuple[str, str]:
    """A token of the store's key that expired an hour ago, and the sentence refusing it."""
    minted_at = float(int(time.time()) - 7200)
    authority = TokenAuthority(KeyRing.load(data_dir), DEFAULT_NAME, clock=lambda: minted_at)
    token = authority.mint(role, client=client, ttl=3600)
    caveat = f"time < {format_time(minted_at + 3600)}"
    return token, f"Caveat {caveat!r} refused: the token has expired: get a new one."


def test_a_url_without_a_scheme_gets_http(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    bare = f"127.0.0.1:{store_proc.port}"
    driver_env = {"JOBQUEUE_STORE_TOKEN": store_proc.token("driver")}
    client = ["--url", bare, "--token", store_proc.token("client", "app")]

    check(jq("datasource", "put", DS, "--description", "d", "--url", bare, env=driver_env),
          0, f"datasource {DS} declared\n")  # fmt: skip
    check(jq("datasource", "list", "--url", bare, env=driver_env), 0, f"{DS}  d\n")
    runs = {"COUNT_LOG": str(tmp_path / "runs")}
    driver = DriverProcess(DRIVER, bare, driver_env["JOBQUEUE_STORE_TOKEN"], DS,
                           tmp_path / "state.json", env=runs)  # fmt: skip
    drivers.append(driver)
    driver.start()  # run-driver with the bare URL: it declares and follows the stream
    check(jq("submit", DS, '{"x": 1}', "--job", "j1", "--wait", "30", *client), 0,
          'j1  complete\n  response: {"echo":{"x":1}}\n')  # fmt: skip
    check(jq("status", DS, "j1", *client), 0, 'j1  complete\n  response: {"echo":{"x":1}}\n')
    check(jq("watch", DS, "j1", *client), 0, 'j1  complete\n  response: {"echo":{"x":1}}\n')
    cancelled = jq("cancel", DS, "j1", "--json", *client)
    check(cancelled, 0, cancelled.stdout)
    assert json.loads(cancelled.stdout)["status"] == "complete"
    check(jq("jobs", DS, *client), 0, "j1  complete\n")
    follow = subprocess.Popen([COMMAND, "watch", DS, "--after", "0", "--json", *client],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert follow.stdout is not None
    first = json.loads(follow.stdout.readline())
    follow.kill()
    follow.wait()
    follow.stdout.close()
    assert (first["job"], first["data"]["status"]) == ("j1", "submitted")
    assert (tmp_path / "runs").read_text() == "j1\n"


def test_a_url_that_is_no_store_url_is_one_line_saying_what_to_write() -> None:
    for url, sentence in [
        ("ftp://x", "the store URL 'ftp://x' is not an http:// or https:// URL"),
        ("localhost:99999", "'localhost:99999' is not a store URL"),
    ]:
        for name, args in verbs(Path("unused.json")):
            done = jq(*args, "--url", url, "--token", "t")
            expected = f"jobqueue-store {name}: --url: {sentence}: write it as e.g. http://127.0.0.1:8080\n"
            check(done, 2, "", expected)


def test_a_closed_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for name, args in verbs(tmp_path / "state.json"):
        done = jq(*args, "--url", url, "--token", "t", "--retries", "0")
        check(done, 1, "", f"jobqueue-store {name}: Could not reach the store at {url}: "
              "connection refused. (connection_failed)\n")  # fmt: skip
    # watch gives up after its retries, like every verb, and says so.
    done = jq("watch", DS, "--url", url, "--token", "t", "--retries", "2")
    check(done, 1, "", f"jobqueue-store watch: Could not reach the store at {url}: connection "
          "refused; gave up after 2 retries. (connection_failed)\n")  # fmt: skip
    # The default: 5 retries (about 3 to 6 s).
    done = jq("run-driver", DRIVER, "--dsid", DS, "--state-file", str(tmp_path / "s.json"),
              "--url", url.removeprefix("http://"), "--token", "t")  # fmt: skip
    check(done, 1, "", f"jobqueue-store run-driver: Could not reach the store at {url}: "
          "connection refused; gave up after 5 retries. (connection_failed)\n")  # fmt: skip


def test_watch_forever_prints_one_line_per_failed_attempt() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    watch = subprocess.Popen([COMMAND, "watch", DS, "--url", url, "--token", "t", "--forever"],
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert watch.stderr is not None
    lines = [watch.stderr.readline() for _ in range(4)]
    assert watch.poll() is None, "still retrying"
    watch.kill()
    watch.wait()
    watch.stderr.close()
    for attempt, line in enumerate(lines, 1):
        assert re.fullmatch(
            rf"jobqueue-store watch: Could not reach the store at {re.escape(url)}: connection "
            rf"refused \(connection_failed\); attempt {attempt} failed, retrying in \d+\.\d s\n",
            line,
        ), line


def test_a_garbage_token_gets_the_stores_sentence(store_proc: StoreProcess, tmp_path: Path) -> None:
    sentence = "The token could not be decoded: it is not a macaroon. (unauthorized)"
    for name, args in verbs(tmp_path / "state.json"):
        done = jq(*args, "--url", store_proc.url, "--token", "garbage")
        check(done, 1, "", f"jobqueue-store {name}: {sentence}\n")


def test_an_expired_token_then_a_renewed_token_file(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    old_client, sentence = expired_token(store_proc.data_dir, Role.CLIENT, "app")
    old_driver, _ = expired_token(store_proc.data_dir, Role.DRIVER)
    fresh = {"client": store_proc.token("client", "app"), "driver": store_proc.token("driver")}
    files = {"client": tmp_path / "client.token", "driver": tmp_path / "driver.token"}
    files["client"].write_text(old_client + "\n")
    files["driver"].write_text(old_driver + "\n")
    state = tmp_path / "state.json"
    role_of = {"datasource": "driver", "run-driver": "driver"}

    for name, args in verbs(state):
        role = role_of.get(name, "client")
        token = old_driver if role == "driver" else old_client
        for how in (["--token", token], ["--token-file", str(files[role])]):
            done = jq(*args, "--url", store_proc.url, *how)
            check(done, 1, "", f"jobqueue-store {name}: {sentence} (unauthorized)\n")
        env = {"JOBQUEUE_STORE_TOKEN_FILE": str(files[role])}
        done = jq(*args, "--url", store_proc.url, env=env)
        check(done, 1, "", f"jobqueue-store {name}: {sentence} (unauthorized)\n")

    # The operator renews the files: the same commands now work.
    files["client"].write_text(fresh["client"])
    files["driver"].write_text(fresh["driver"] + "\n\n")
    conn = ["--url", store_proc.url]
    driver_file = ["--token-file", str(files["driver"])]
    client_file = ["--token-file", str(files["client"])]
    check(jq("datasource", "put", DS, "--description", "d", *conn, *driver_file), 0,
          f"datasource {DS} declared\n")  # fmt: skip
    check(jq("datasource", "list", *conn, *driver_file), 0, f"{DS}  d\n")
    check(jq("submit", DS, '{"x": 1}', "--job", "j9", *conn, *client_file), 0, "j9  submitted\n")
    check(jq("status", DS, "j9", *conn, env={"JOBQUEUE_STORE_TOKEN_FILE": str(files["client"])}),
          0, "j9  submitted\n")  # fmt: skip
    check(jq("jobs", DS, *conn, *client_file), 0, "j9  submitted\n")
    runs = tmp_path / "runs"
    driver = DriverProcess(DRIVER, store_proc.url, "", DS, state, env={"COUNT_LOG": str(runs)})
    driver.args += driver_file
    drivers.append(driver)
    driver.start()
    check(jq("watch", DS, "j9", *conn, *client_file), 0,
          'j9  complete\n  response: {"echo":{"x":1}}\n')  # fmt: skip
    cancelled = jq("cancel", DS, "j9", "--json", *conn, *client_file)
    check(cancelled, 0, cancelled.stdout)
    assert json.loads(cancelled.stdout)["status"] == "complete"


def test_a_long_lived_driver_and_watch_pick_up_a_renewed_token_file(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    """Tokens that expire within seconds: the store closes the websockets when they do, and
    both processes carry on with the token the operator wrote into their files meanwhile."""
    TTL = 6
    ring = KeyRing.load(store_proc.data_dir)
    short = TokenAuthority(ring, DEFAULT_NAME)
    driver_file, client_file = tmp_path / "driver.token", tmp_path / "client.token"
    driver_file.write_text(short.mint(Role.DRIVER, ttl=TTL))
    client_file.write_text(short.mint(Role.CLIENT, client="app", ttl=TTL))
    renewed = {"driver": short.mint(Role.DRIVER), "client": short.mint(Role.CLIENT, client="app")}
    runs = tmp_path / "runs"
    driver = DriverProcess(DRIVER, store_proc.url, "", DS, tmp_path / "state.json",
                           env={"COUNT_LOG": str(runs)})  # fmt: skip
    driver.args += ["--token-file", str(driver_file)]
    drivers.append(driver)
    driver.start()
    watch = subprocess.Popen([COMMAND, "watch", DS, "--after", "0", "--url", store_proc.url,
                              "--token-file", str(client_file)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
    assert watch.stdout is not None
    output = _Output(watch.stdout)
    try:
        # Renew both files now; the old tokens expire within TTL s and the sockets are closed.
        driver_file.write_text(renewed["driver"])
        client_file.write_text(renewed["client"])
        assert driver.output is not None
        mark = len(driver.output.lines)
        driver.output.wait_for("token reloaded from", mark)
        done = jq("submit", DS, '{"n": 2}', "--job", "after-expiry", "--wait", "30",
                  "--url", store_proc.url, "--token-file", str(client_file))  # fmt: skip
        check(done, 0, 'after-expiry  complete\n  response: {"echo":{"n":2}}\n')
        output.wait_for("after-expiry  complete")
        assert watch.poll() is None, output.text()
        assert "Traceback" not in output.text() + driver.output.text()
        assert runs.read_text() == "after-expiry\n"
    finally:
        watch.kill()
        watch.wait()


def test_token_never_creates_a_root_key(tmp_path: Path) -> None:
    data = tmp_path / "nowhere"
    done = jq("token", "--role", "driver", "--data-dir", str(data))
    where = data / "root_keys.json"
    check(done, 2, "", f"jobqueue-store token: no root key: {where} does not exist. Pass the "
          "running store's data directory (--data-dir DIR or JOBQUEUE_STORE_DATA_DIR) or its keys "
          "(--root-key or JOBQUEUE_STORE_ROOT_KEY); 'jobqueue-store serve' creates the key on its "
          "first start.\n")  # fmt: skip
    assert not data.exists()
    done = jq("key", "list", "--data-dir", str(data))
    assert done.returncode == 2 and done.stderr.startswith(
        f"jobqueue-store key list: no root key: {where} "
    )
    assert not data.exists()
    done = jq("token", "--role", "client", "--data-dir", str(data))
    check(done, 2, "", "jobqueue-store token: A token for role client needs a client id.\n")
    created = jq("key", "rotate", "--data-dir", str(data))
    assert created.returncode == 0 and where.exists()
    listed = jq("key", "list", "--data-dir", str(data))
    check(listed, 0, f"{created.stdout.strip()} (current)\n")


def test_token_ttl_zero_means_no_expiry(store_proc: StoreProcess) -> None:
    data = ["--data-dir", str(store_proc.data_dir)]
    refused = jq("token", "--role", "client", "--client", "app", "--ttl", "0", *data)
    check(refused, 2, "", "jobqueue-store token: a client token without expiry stays valid until "
          "its root key is removed: pass --allow-no-expiry to mint it anyway, or give --ttl in "
          "seconds\n")  # fmt: skip
    check(jq("token", "--role", "driver", "--ttl", "-1", *data), 2, "",
          "jobqueue-store token: --ttl must be 0 (no expiry) or more\n")  # fmt: skip
    conn = ["--url", store_proc.url]
    ring = KeyRing.load(store_proc.data_dir)
    driver = jq("token", "--role", "driver", "--ttl", "0", *data)
    client = jq("token", "--role", "client", "--client", "app", "--ttl", "0", "--allow-no-expiry",
                *data)  # fmt: skip
    for minted in (driver, client):
        assert minted.returncode == 0, minted.stderr
        principal = TokenAuthority(ring, DEFAULT_NAME).verify(minted.stdout.strip())
        assert principal.expires_at is None, "no 'time <' caveat"
    put = jq("datasource", "put", DS, *conn, "--token", driver.stdout.strip())
    check(put, 0, f"datasource {DS} declared\n")
    check(jq("jobs", DS, *conn, "--token", client.stdout.strip()), 0, "", "no jobs\n")


def test_every_option_and_verb_has_help() -> None:
    from jobqueue_store.cli import build_parser

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{name} {choice.dest}: no help"
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            else:
                assert action.help, f"{name} {action.dest}: no help"

    walk(build_parser(), "jobqueue-store")
    top = jq("--help")
    check(top, 0, top.stdout)
    for needle in ("JOBQUEUE_STORE_TOKEN_FILE", "JOBQUEUE_STORE_URL", "exit status:", "  4  "):
        assert needle in top.stdout
    token_help = " ".join(jq("token", "--help").stdout.split())
    assert "default 86400" in token_help and "admin: everything" in token_help
