"""The shell runner example: its command runner in-process, and the driver in a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobqueue_store.client import JobClient, SyncJobClient
from tests.e2e.conftest import ROOT, DriverProcess, StoreProcess

sys.path.insert(0, str(ROOT / "examples"))
import shell_driver

DSID = "shell"


def group_members(pgid: int) -> list[int]:
    """Every process (zombies included) whose process group is ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def assert_group_gone(pgid: int) -> None:
    """No process, not even a zombie, is left in the group; the leader was reaped."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert group_members(pgid) == []


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path) -> str:
    """The content of ``path`` once a process has written it."""
    while not (text := _read(path)):  # noqa: ASYNC110 (another process writes it)
        await asyncio.sleep(0.01)
    return text


# the command runner, in this process --------------------------------------------------------
async def test_runs_command_and_captures_output() -> None:
    result = await shell_driver.run_command(["echo", "hello", "world"], timeout=10)
    assert result == {"exit_code": 0, "stdout": "hello world\n", "stderr": "", "truncated": False}
    failed = await shell_driver.run_command(["sh", "-c", "echo oops >&2; exit 3"], timeout=10)
    assert (failed["exit_code"], failed["stderr"]) == (3, "oops\n")


async def test_output_over_the_limit_is_truncated_not_blocking() -> None:
    result = await shell_driver.run_command(
        ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"], timeout=10, max_output=1000
    )
    assert result["exit_code"] == 0
    assert result["truncated"] is True
    assert result["stdout"] == "x" * 1000


async def test_background_children_left_by_a_command_are_killed_and_reaped() -> None:
    pids: list[int] = []
    result = await shell_driver.run_command(
        ["sh", "-c", "sleep 30 & echo started"], timeout=10, on_start=pids.append
    )
    assert result["stdout"] == "started\n"
    assert_group_gone(pids[0])


async def test_time_limit_kills_the_group(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(shell_driver.CommandTimedOut):
        await shell_driver.run_command(
            ["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3, grace=0.2, on_start=pids.append
        )
    assert_group_gone(pids[0])
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)  # noqa: ASYNC222 (never blocks)


async def test_cancel_escalates_to_sigkill_for_a_group_ignoring_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    pids: list[int] = []
    script = f"trap '' TERM; sleep 30 & sleep 30 & echo $$ > {marker}; wait"
    task = asyncio.create_task(
        shell_driver.run_command(["sh", "-c", script], timeout=30, grace=0.2, on_start=pids.append)
    )
    assert int(await wait_for_file(marker)) == pids[0]
    assert len(group_members(pids[0])) == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_group_gone(pids[0])
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)  # noqa: ASYNC222 (never blocks)


# the driver, in a real process --------------------------------------------------------------
def start_shell_driver(
    store: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> DriverProcess:
    driver = DriverProcess(
        "shell",
        store.url,
        store.token("driver", dsid=DSID),
        DSID,
        tmp_path / "shell-state.json",
        env={"SHELL_DRIVER_GRACE": "0.5"},
        options=["--allow", "echo", "--allow", "sh"],
    )
    drivers.append(driver)
    driver.start()
    return driver


async def test_cancelled_running_job_leaves_no_process(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    start_shell_driver(store_proc, drivers, tmp_path)
    pidfile = tmp_path / "pid"
    script = f"sleep 60 & sleep 60 & echo $$ > {pidfile}; wait"
    async with JobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        job = await client.submit(DSID, {"command": "sh", "args": ["-c", script]})
        pgid = int(await wait_for_file(pidfile))
        assert len(group_members(pgid)) == 3
        assert (await client.status(DSID, job.job)).status == "accepted"
        await client.cancel(DSID, job.job)
        done = await client.wait(DSID, job.job, timeout=30)
    assert done.status == "cancelled"
    assert_group_gone(pgid)


def test_sync_client_runs_a_command_and_refuses_others(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    start_shell_driver(store_proc, drivers, tmp_path)
    with SyncJobClient(store_proc.url, store_proc.token("client", "app1")) as client:
        job = client.submit(DSID, {"command": "echo", "args": ["hi there"]}, "echo-1")
        done = client.wait(DSID, job.job, timeout=30)
        assert done.status == "complete"
        assert done.response == {
            "exit_code": 0,
            "stdout": "hi there\n",
            "stderr": "",
            "truncated": False,
        }
        refused = client.submit(DSID, {"command": "rm", "args": ["-rf", "/"]}, wait=30)
        assert refused.status == "forbidden"
        assert "allow-list" in (refused.error or "")
        assert [r.job for r in client.jobs(DSID)] == [refused.job, "echo-1"]


def test_example_app_submits_and_follows_jobs(
    store_proc: StoreProcess, drivers: list[DriverProcess], tmp_path: Path
) -> None:
    start_shell_driver(store_proc, drivers, tmp_path)
    env = {
        **os.environ,
        "JOBQUEUE_STORE_URL": store_proc.url,
        "JOBQUEUE_STORE_TOKEN": store_proc.token("client", "app1"),
    }
    done = subprocess.run(
        [sys.executable, "examples/app.py", "echo", "hello", "--", "rm", "-rf", "/tmp/x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # rm is not allowed
    assert "$ echo hello  (exit 0)\nhello\n" in done.stdout
    assert "$ rm -rf /tmp/x: forbidden: command 'rm' is not on this driver's allow-list" in (
        done.stdout
    )
