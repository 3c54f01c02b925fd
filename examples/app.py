"""An app: submits shell jobs to the store and follows them live until they end.

    JOBQUEUE_STORE_URL=http://127.0.0.1:8080 JOBQUEUE_STORE_TOKEN=<client token> \\
        python examples/app.py echo hello world

Each command line argument list becomes one job on datasource ``shell`` (``--dsid`` to change
it; run ``examples/shell_driver.py`` to serve it). Several jobs: separate them with ``--``
(``python examples/app.py echo one -- date``). The app subscribes to its notifications before it
submits, so it sees every change of every job, prints progress as it comes, and exits with 0 when
every job completed (1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from jobqueue_store.client import JobClient


def parse_commands(words: list[str]) -> list[list[str]]:
    """``["echo", "a", "--", "date"]`` -> ``[["echo", "a"], ["date"]]``."""
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "--":
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


async def main() -> int:
    """Submit the commands and follow them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsid", default="shell")
    parser.add_argument("--timeout", type=float, default=30.0, help="each command's time limit")
    parser.add_argument("words", nargs=argparse.REMAINDER, help="COMMAND [ARGS] [-- COMMAND ...]")
    args = parser.parse_args()
    commands = parse_commands(args.words)
    if not commands:
        parser.error("name a command to run, e.g. 'echo hello'")
    url = os.environ.get("JOBQUEUE_STORE_URL", "http://127.0.0.1:8080")
    token = os.environ["JOBQUEUE_STORE_TOKEN"]

    async with JobClient(url, token) as client, client.subscribe(args.dsid) as notifications:
        pending: dict[str, list[str]] = {}
        for argv in commands:
            request = {"command": argv[0], "args": argv[1:], "timeout": args.timeout}
            record = await client.submit(args.dsid, request)
            pending[record.job] = argv
            print(f"{record.job}: submitted {' '.join(argv)}")
        ok = True
        async for note in notifications:
            record = note.record
            if record.job not in pending:
                continue  # another run's job of the same client
            progress = f" {record.progress:.0%}" if record.progress is not None else ""
            print(f"{record.job}: {record.status.value}{progress}")
            if not record.terminal:
                continue
            argv = pending.pop(record.job)
            if record.status == "complete":
                result = record.response
                print(f"$ {' '.join(argv)}  (exit {result['exit_code']})")
                sys.stdout.write(result["stdout"])
                sys.stderr.write(result["stderr"])
                ok = ok and result["exit_code"] == 0
            else:
                print(f"$ {' '.join(argv)}: {record.status.value}: {record.error}")
                ok = False
            if not pending:
                break
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
