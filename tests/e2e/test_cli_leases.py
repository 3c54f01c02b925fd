"""The command line and the sync client for lease datasources and deadlines."""

from __future__ import annotations

import asyncio
import json

from jobqueue_store.client import DriverClient, SyncJobClient
from tests.e2e.conftest import StoreProcess, jq


def test_datasource_put_list_and_submit_timeout(store_proc: StoreProcess) -> None:
    env = {"JOBQUEUE_STORE_URL": store_proc.url, "JOBQUEUE_STORE_TOKEN": store_proc.token("driver")}
    put = jq("datasource", "put", "work", "--description", "w", "--dispatch", "lease",
             "--lease-seconds", "7", "--max-attempts", "3", "--job-timeout", "600",
             "--cancel-grace", "4", "--json", env=env)  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout) == {
        "datasource_id": "work",
        "description": "w",
        "dispatch": "lease",
        "lease_seconds": 7,
        "max_attempts": 3,
        "job_timeout": 600,
        "cancel_grace": 4,
    }
    # A bad value gets the store's sentence, exit status 1.
    bad = jq("datasource", "put", "work", "--dispatch", "lease", "--lease-seconds", "0", env=env)
    assert bad.returncode == 1 and "lease_seconds" in bad.stderr and "(bad_request)" in bad.stderr

    client = {"JOBQUEUE_STORE_URL": store_proc.url,
              "JOBQUEUE_STORE_TOKEN": store_proc.token("client", "app")}  # fmt: skip
    sub = jq("submit", "work", "1", "--job", "t1", "--timeout", "30", "--json", env=client)
    assert sub.returncode == 0, sub.stderr
    record = json.loads(sub.stdout)
    assert record["deadline"] == record["submitted_at"] + 30_000
    # Without --timeout the datasource's job_timeout applies.
    sub = jq("submit", "work", "2", "--job", "t2", "--json", env=client)
    record = json.loads(sub.stdout)
    assert record["deadline"] == record["submitted_at"] + 600_000

    with SyncJobClient(store_proc.url, store_proc.token("client", "app")) as sync:
        record3 = sync.submit("work", 3, "t3", timeout=45)
        assert record3.deadline == record3.submitted_at + 45_000

    listed = jq("datasource", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "work  w  [lease]", listed.stdout

    async def claim() -> None:
        async with DriverClient(store_proc.url, store_proc.token("driver")) as drv:
            assert [c.job for c in await drv.claim("work", "w-cli")] == ["t1"]

    asyncio.run(claim())  # a worker that claimed shows in the list
    listed = jq("datasource", "list", env=env)
    assert listed.stdout.strip() == "work  w  [lease; workers: w-cli]", listed.stdout

    helped = jq("run-driver", "--help")
    assert "--standby" in helped.stdout and "--worker" in helped.stdout
