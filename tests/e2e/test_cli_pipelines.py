"""The README's walkthrough of long-running jobs: the example counter pipeline run by
``run-driver``, driven by the ``update``, ``stop``, ``start``, ``revisions`` and ``watch`` verbs of
the installed command."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import COMMAND, ROOT, DriverProcess, StoreProcess, _Output, jq

DSID = "counter"
WAIT = 30.0


def _status(conn: list[str], job: str) -> dict[str, Any]:
    done = jq("status", DSID, job, "--json", *conn)
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads(done.stdout)
    return record


def _until(conn: list[str], job: str, revision: int, status: str) -> dict[str, Any]:
    """Poll until ``job`` is at ``revision`` with ``status`` (bounded: a hang guard)."""
    deadline = time.monotonic() + WAIT
    record = _status(conn, job)
    while (record["revision"], record["status"]) != (revision, status):
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
        record = _status(conn, job)
    return record


def test_counter_pipeline_walkthrough(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    url = store_proc.url
    driver = DriverProcess(
        "examples/counter_pipeline.py:driver",
        url,
        store_proc.token("driver", dsid=DSID),
        DSID,
        tmp_path / "state.json",
    )
    drivers.append(driver)
    driver.start()
    conn = ["--url", url, "--token", store_proc.token("client", "me")]

    watch = subprocess.Popen([COMMAND, "watch", DSID, *conn], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
    assert watch.stdout is not None
    output = _Output(watch.stdout)
    one: subprocess.Popen[str] | None = None
    try:
        done = jq("submit", DSID, '{"start": 0, "step": 1, "every": 0.05}', "--job", "c1", *conn)
        assert done.returncode == 0, done.stderr
        _until(conn, "c1", 0, "running")
        output.wait_for("c1  r0  running")
        # watching the one job: its failed revision is rolled back, so watch goes on
        one = subprocess.Popen([COMMAND, "watch", DSID, "c1", *conn], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)  # fmt: skip
        assert one.stdout is not None
        one_output = _Output(one.stdout)
        one_output.wait_for("c1  r0  running")

        done = jq("update", DSID, "c1", '{"start": 100, "step": 10, "every": 0.05}', *conn)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("c1  r1  submitted")
        _until(conn, "c1", 1, "running")

        done = jq("update", DSID, "c1", '{"start": 0, "step": 0}', "--rollback", *conn)
        assert done.returncode == 0, done.stderr
        record = _until(conn, "c1", 3, "running")
        assert record["rollback_of"] == 2
        assert record["request"] == {"start": 100, "step": 10, "every": 0.05}
        output.wait_for("c1  r3  running (rollback of r2)")
        one_output.wait_for("c1  r3  running (rollback of r2)")
        assert "c1  r2  failed" in one_output.text()
        assert one.poll() is None

        done = jq("stop", DSID, "c1", *conn)
        assert done.returncode == 0, done.stderr
        _until(conn, "c1", 3, "stopped")
        done = jq("start", DSID, "c1", "--json", *conn)
        assert json.loads(done.stdout)["desired_state"] == "running"
        _until(conn, "c1", 3, "running")

        listed = jq("revisions", DSID, "c1", *conn)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:2] == ["0", "stopped"]
        assert lines[1].split()[:2] == ["1", "stopped"]
        assert lines[2].split()[:2] == ["2", "failed"]
        assert lines[3] == "     error: ValueError: step must not be 0"
        assert lines[4].split()[:2] == ["3", "running"]
        assert lines[4].endswith("(rollback of r2)")
        as_json = json.loads(jq("revisions", DSID, "c1", "--json", *conn).stdout)
        assert [r["status"] for r in as_json["revisions"]] == [
            "stopped",
            "stopped",
            "failed",
            "running",
        ]

        refused = jq("update", DSID, "nope", '{"start": 1}', *conn)
        assert refused.returncode == 1
        assert "There is no job 'nope'" in refused.stderr
        refused = jq("update", DSID, "c1", "1", *conn)  # checked against the request schema
        assert refused.returncode == 1
        assert "1 is not of type 'object'" in refused.stderr
    finally:
        for proc in (watch, one):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
