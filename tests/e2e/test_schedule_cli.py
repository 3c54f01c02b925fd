"""Schedules from the command line (``jobqueue-store schedule ...``) and the Python client
(``SyncJobClient``), against a real store process."""

from __future__ import annotations

import json
import time
from typing import Any

from jobqueue_store.client import SyncJobClient
from jobqueue_store.errors import Conflict
from tests.e2e.conftest import StoreProcess, jq

DSID = "sched"


def _until(check: Any, timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy (the store's timers fire every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_schedule_verbs(store_proc: StoreProcess) -> None:
    driver = {"JOBQUEUE_STORE_URL": store_proc.url,
              "JOBQUEUE_STORE_TOKEN": store_proc.token("driver", dsid=DSID)}  # fmt: skip
    assert jq("datasource", "put", DSID, env=driver).returncode == 0
    env = {"JOBQUEUE_STORE_URL": store_proc.url,
           "JOBQUEUE_STORE_TOKEN": store_proc.token("client", "cli-app")}  # fmt: skip

    once = jq("schedule", "add", DSID, "once", '{"n": 1}', "--at", "2020-01-01T00:00:00Z",
              "--json", env=env)  # fmt: skip
    assert once.returncode == 0, once.stderr
    record = json.loads(once.stdout)
    assert record["at"] == 1577836800000 and record["state"] == "active"

    def runs_of_once() -> list[Any]:
        done = jq("schedule", "runs", DSID, "once", "--json", env=env)
        assert done.returncode == 0, done.stderr
        jobs: list[Any] = json.loads(done.stdout)["jobs"]
        return jobs

    (run,) = _until(runs_of_once)
    assert run["job"] == "once.1577836800000" and run["schedule"] == "once"
    text = jq("schedule", "runs", DSID, "once", env=env)
    assert text.stdout.split() == ["once.1577836800000", "submitted", "for", "2020-01-01T00:00:00Z"]

    five = ["schedule", "add", DSID, "five", '{"n": 5}', "--cron", "*/5 * * * *",
            "--timezone", "Europe/London", "--catch-up", "none", "--timeout", "60"]  # fmt: skip
    every = jq(*five, env=env)
    assert every.returncode == 0, every.stderr
    assert every.stdout.startswith("five  active  cron '*/5 * * * *' Europe/London  next ")
    again = jq(*five, env=env)
    assert again.returncode == 0, again.stderr
    listed = jq("schedule", "list", DSID, env=env)
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["five", "once"]
    shown = json.loads(jq("schedule", "show", DSID, "five", "--json", env=env).stdout)
    assert shown["catch_up"] == "none" and shown["timeout"] == 60
    paused = jq("schedule", "pause", DSID, "five", env=env)
    assert paused.returncode == 0 and "  paused  " in paused.stdout
    resumed = jq("schedule", "resume", DSID, "five", "--json", env=env)
    assert json.loads(resumed.stdout)["state"] == "active"
    deleted = jq("schedule", "delete", DSID, "five", "--json", env=env)
    assert json.loads(deleted.stdout)["state"] == "deleted"

    reused = jq("schedule", "add", DSID, "five", "1", "--cron", "0 * * * *", env=env)
    assert reused.returncode == 1
    assert "never reused" in reused.stderr and "(conflict)" in reused.stderr
    paused_deleted = jq("schedule", "pause", DSID, "five", env=env)
    assert paused_deleted.returncode == 1
    assert "Schedule 'five' is deleted: it cannot be paused." in paused_deleted.stderr
    bad = jq("schedule", "add", DSID, "bad", "1", "--cron", "61 * * * *", env=env)
    assert bad.returncode == 1 and "is not valid" in bad.stderr
    zone = jq("schedule", "add", DSID, "bad", "1", "--cron", "0 * * * *", "--timezone", "Nowhere",
              env=env)  # fmt: skip
    assert zone.returncode == 1 and "Unknown time zone 'Nowhere'" in zone.stderr
    usage = jq("schedule", "add", DSID, "bad", "1", "--at", "5", "--timezone", "UTC", env=env)
    assert usage.returncode == 2 and "--timezone goes with --cron" in usage.stderr
    neither = jq("schedule", "add", DSID, "bad", "1", env=env)
    assert neither.returncode == 2


def test_python_client_schedules(store_proc: StoreProcess) -> None:
    driver = {"JOBQUEUE_STORE_URL": store_proc.url,
              "JOBQUEUE_STORE_TOKEN": store_proc.token("driver", dsid=DSID)}  # fmt: skip
    assert jq("datasource", "put", DSID, env=driver).returncode == 0
    with SyncJobClient(store_proc.url, store_proc.token("client", "py-app")) as client:
        past = client.schedule(DSID, "now", {"go": 1}, at="2020-01-01T00:00:00+00:00")
        assert past.at == 1577836800000
        hourly = client.schedule(DSID, "hourly", {"go": 2}, cron="0 * * * *", catch_up="all")
        assert hourly.state == "active" and hourly.next_run_at is not None
        assert (
            client.schedule(DSID, "hourly", {"go": 2}, cron="0 * * * *", catch_up="all") == hourly
        )
        try:
            client.schedule(DSID, "hourly", {"go": 3}, cron="0 * * * *")
        except Conflict as exc:
            assert "another definition" in exc.message
        else:
            raise AssertionError("a different definition under a used id must be refused")
        assert [s.schedule for s in client.schedules(DSID)] == ["hourly", "now"]
        runs = _until(lambda: list(client.runs(DSID, "now")))
        assert [r.scheduled_for for r in runs] == [1577836800000]
        # the subscription yields the run's job notifications and skips the schedule frames
        for note in client.subscribe(DSID, after=0):
            assert note.job == runs[0].job
            break
        assert client.pause(DSID, "hourly").state == "paused"
        assert client.resume(DSID, "hourly").state == "active"
        cancelled = client.cancel_run(DSID, "now", runs[0].job)
        assert cancelled.cancel_requested
        gone = client.delete_schedule(DSID, "hourly")
        assert gone.state == "deleted" and client.get_schedule(DSID, "hourly") == gone
