"""The suite on a machine without a PostgreSQL server: a private cluster, or a clean skip.

Each test runs a small part of the suite (the store contract of tests/contract/test_job_stats.py,
three tests per backend) in a child pytest whose ``JOBQUEUE_STORE_TEST_PG`` names a closed port.
The machine's shared server is never stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.e2e.conftest import ROOT, free_port

PART = "tests/contract/test_job_stats.py"


def run_part(*extra: str) -> subprocess.CompletedProcess[str]:
    """The child pytest's run of :data:`PART` against a closed port."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    env = {**os.environ, "JOBQUEUE_STORE_TEST_PG": dsn}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *extra, PART],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        env=env,
    )


def test_no_server_starts_a_private_cluster_and_runs_the_postgres_half() -> None:
    done = run_part("-v")
    assert done.returncode == 0, done.stdout + done.stderr
    header = [line for line in done.stdout.splitlines() if line.startswith("PostgreSQL half:")]
    assert len(header) == 1, done.stdout
    assert re.fullmatch(
        r"PostgreSQL half: no server answered at postgresql://postgres@127\.0\.0\.1:\d+/test; a "
        r"private throwaway cluster \(.+\) serves it at postgresql://postgres@127\.0\.0\.1:\d+/"
        r"postgres",
        header[0],
    ), header[0]
    assert len(re.findall(r"\[postgres\] PASSED", done.stdout)) == 3, done.stdout
    assert "6 passed" in done.stdout and "skipped" not in done.stdout


def test_no_server_and_no_binaries_skips_the_postgres_half_saying_how_to_run_it() -> None:
    done = run_part("-v", "-p", "tests.e2e.no_postgres")
    assert done.returncode == 0, done.stdout + done.stderr
    header = [line for line in done.stdout.splitlines() if line.startswith("PostgreSQL half:")]
    assert len(header) == 1, done.stdout
    assert header[0].startswith("PostgreSQL half: SKIPPED: no PostgreSQL server answers at ")
    assert header[0].endswith(
        "(PostgreSQL's pg_ctl is not installed): to run the PostgreSQL half, install PostgreSQL "
        "(initdb and pg_ctl) or set JOBQUEUE_STORE_TEST_PG to a running server's DSN"
    )
    assert len(re.findall(r"\[sqlite\] PASSED", done.stdout)) == 3, done.stdout
    assert len(re.findall(r"\[postgres\] SKIPPED", done.stdout)) == 3, done.stdout
    assert "3 passed, 3 skipped" in done.stdout
