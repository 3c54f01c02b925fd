"""The client and driver verbs, run as the installed ``jobqueue-store`` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import COMMAND, ROOT, DriverProcess, StoreProcess, _Output, jq

DSID = "cli"


def test_cli_verbs_drive_a_job_from_submit_to_watch(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    url = store_proc.url
    driver_token = store_proc.token("driver", dsid=DSID)
    env = {"JOBQUEUE_STORE_URL": url, "JOBQUEUE_STORE_TOKEN": driver_token}
    put = jq("datasource", "put", DSID, "--description", "echo", "--schema",
             '{"type": "object"}', "--json", env=env)  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout) == {
        "datasource_id": DSID,
        "description": "echo",
        "request_schema": {"type": "object"},
    }
    listed = jq("datasource", "list", env=env)
    assert listed.stdout.split() == [DSID, "echo"]

    runs = {"COUNT_LOG": str(tmp_path / "runs")}
    driver = DriverProcess(
        "tests.e2e.drivers:counting", url, driver_token, DSID, tmp_path / "state.json", env=runs
    )
    drivers.append(driver)
    driver.start()

    token = store_proc.token("client", "cli-app")
    conn = ["--url", url, "--token", token]

    done = jq("submit", DSID, '{"x": 1}', "--job", "j1", "--wait", "30", "--json", *conn)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["job"], record["status"]) == ("j1", "complete")
    assert record["response"] == {"echo": {"x": 1}}

    request_file = tmp_path / "request.json"
    release = tmp_path / "release"
    request_file.write_text(json.dumps({"progress": 0.5, "until": str(release)}))
    queued = jq("submit", DSID, f"@{request_file}", "--job", "j2", "--json", *conn)
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["status"] == "submitted"

    # watch a job: a progress bar from its progress reports, then its end.
    watch = subprocess.Popen([COMMAND, "watch", DSID, "j2", *conn], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
    assert watch.stdout is not None
    output = _Output(watch.stdout)
    output.wait_for("[############------------]  50%")
    release.touch()
    assert watch.wait(timeout=30) == 0
    assert "j2  complete" in output.text().splitlines()[-2]

    human = jq("status", DSID, "j1", *conn)
    assert human.returncode == 0
    assert human.stdout.splitlines() == ["j1  complete", '  response: {"echo":{"x":1}}']

    # cancel a running job: exit 3 when the waited job ends other than complete.
    never = tmp_path / "never"
    jq("submit", DSID, json.dumps({"until": str(never)}), "--job", "j3", *conn)
    cancelled = jq("cancel", DSID, "j3", "--json", *conn)
    assert cancelled.returncode == 0
    assert json.loads(cancelled.stdout)["cancel_requested"] is True
    waited = jq("status", DSID, "j3", "--wait", "30", *conn)
    assert waited.returncode == 3
    assert waited.stdout.startswith("j3  cancelled")

    jobs = jq("jobs", DSID, "--json", *conn)
    assert [j["job"] for j in json.loads(jobs.stdout)["jobs"]] == ["j3", "j2", "j1"]
    completed = jq("jobs", DSID, "--status", "complete", *conn)
    assert completed.stdout.split() == ["j2", "complete", "j1", "complete"]

    # watch a datasource from the start, as JSON lines.
    follow = subprocess.Popen([COMMAND, "watch", DSID, "--after", "0", "--json", *conn],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert follow.stdout is not None
    lines = [json.loads(follow.stdout.readline()) for _ in range(4)]
    follow.kill()
    follow.wait()
    follow.stdout.close()
    assert [(n["job"], n["data"]["status"]) for n in lines] == [
        ("j1", "submitted"),
        ("j1", "accepted"),
        ("j1", "complete"),
        ("j2", "submitted"),
    ]
    assert [n["seq"] for n in lines] == sorted({n["seq"] for n in lines})


def test_cli_errors_have_exit_codes_and_sentences(store_proc: StoreProcess) -> None:
    token = store_proc.token("client", "cli-app")
    conn = ["--url", store_proc.url, "--token", token]
    missing = jq("status", "nowhere", "j1", *conn)
    assert missing.returncode == 1
    assert "Datasource 'nowhere' is not declared" in missing.stderr
    assert missing.stderr.rstrip().endswith("(not_found)")

    no_token = jq("status", DSID, "j1", "--url", store_proc.url, env={"JOBQUEUE_STORE_TOKEN": ""})
    assert no_token.returncode == 2
    assert "JOBQUEUE_STORE_TOKEN" in no_token.stderr

    bad_json = jq("submit", DSID, "{not json", *conn)
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr

    down = jq(
        "status", DSID, "j1", "--url", "http://127.0.0.1:1", "--token", token, "--retries", "0"
    )
    assert down.returncode == 1
    assert "(connection_failed)" in down.stderr

    not_a_driver = jq("run-driver", "jobqueue_store.codec:dumps", *conn, "--dsid", DSID)
    assert not_a_driver.returncode == 2
    assert "is not a jobqueue_store.driver.Driver" in not_a_driver.stderr
