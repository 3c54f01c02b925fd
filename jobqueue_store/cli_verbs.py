"""The client and driver verbs of ``jobqueue-store``, beside ``serve``, ``token`` and ``key``.

    datasource put DSID [--description TEXT] [--schema JSON|@FILE]   declare a datasource (driver)
        [--dispatch stream|lease] [--lease-seconds N] [--max-attempts N]
        [--job-timeout SECONDS] [--cancel-grace SECONDS]
    datasource list                                                   the datasources you may use
    submit DSID REQUEST [--job ID] [--wait [SECONDS]] [--timeout S]   submit a job (client)
    status DSID JOB [--wait [SECONDS]]                                a job's status record
    cancel DSID JOB                                                   ask for a job to be cancelled
    jobs DSID [--status S] [--limit N]                                your jobs, newest first
    watch DSID [JOB] [--after SEQ] [--forever]                        follow live (progress bar)
    run-driver MODULE:ATTR [--dsid DSID] [--state-file PATH]          run a Driver object
        [--worker NAME] [--standby] [--concurrency N]
    run-driver shell|http [OPTIONS]                                   run a built-in driver
    schedule add DSID SCHEDULE REQUEST (--cron EXPR [--timezone TZ] | --at TIME)
             [--catch-up none|one|all] [--timeout S]                  create a schedule (client)
    schedule list DSID | show DSID SCHEDULE | runs DSID SCHEDULE      your schedules, one, its runs
    schedule pause|resume|delete DSID SCHEDULE                        stop, restart, soft-delete

``REQUEST`` and ``--schema`` are JSON text, ``@path`` to read a file, or ``-`` for standard input.
Every verb takes ``--url`` (default ``JOBQUEUE_STORE_URL``, else ``http://127.0.0.1:8080``; a URL
without a scheme gets ``http://``), the token as ``--token`` or ``--token-file`` (defaults:
``JOBQUEUE_STORE_TOKEN``, then ``JOBQUEUE_STORE_TOKEN_FILE``; a token file is read again when the
store refuses the token, so a long-lived process picks up a renewed token), ``--retries`` and
``--json`` for output meant for scripts: one JSON document (``watch``: one notification per line).

Exit status: 0 done (a waited or watched job ended ``complete``); 1 the store refused the request
or could not be reached (the store's sentence and code on standard error); 2 bad usage; 3 the job
ended in another terminal status; 4 the wait ended before the job did. No verb prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from jobqueue_store import codec
from jobqueue_store.client import (
    DriverClient,
    JobClient,
    Notification,
    normalize_url,
    read_token_file,
)
from jobqueue_store.errors import SlotTaken, StoreError, Unavailable
from jobqueue_store.models import JobRecord, Status
from jobqueue_store.schedules import ScheduleRecord

__all__ = ["VERBS", "register", "run"]

DEFAULT_URL = "http://127.0.0.1:8080"
VERBS = frozenset(
    {"datasource", "submit", "status", "cancel", "jobs", "watch", "run-driver", "schedule"}
    | {"update", "stop", "start", "revisions"}
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_COMPLETE = 3
EXIT_NOT_DONE = 4

BAR_WIDTH = 24


class UsageError(Exception):
    """The command line does not make sense (exit status 2)."""


# parser -----------------------------------------------------------------------------------------
def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # Defaults resolved in run(): run-driver keeps a Driver's own URL and token when none given.
    common.add_argument(
        "--url",
        default=None,
        help=f"store URL; 'host:port' means http://host:port (env JOBQUEUE_STORE_URL; default "
        f"{DEFAULT_URL})",
    )
    common.add_argument(
        "--token", default=None, help="the token to send (env JOBQUEUE_STORE_TOKEN)"
    )
    common.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the token from this file, and again whenever the store refuses the token "
        "(expired): rewrite the file to renew the token of a running process "
        "(env JOBQUEUE_STORE_TOKEN_FILE)",
    )
    common.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries of a request on network errors, 503 and 429, with backoff, before giving "
        "up with exit status 1 (default 5)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return common


def _wait_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=-1.0,
        default=None,
        metavar="SECONDS",
        help=f"wait until the job ends (at most SECONDS; no value: as long as it takes) {what}",
    )


def register(commands: Any) -> None:
    """Add the verbs to ``commands``, the ``add_subparsers()`` object of ``jobqueue-store``."""
    common = _connection_options()

    datasource = commands.add_parser("datasource", help="declare or list datasources")
    actions = datasource.add_subparsers(dest="ds_action", required=True)
    put = actions.add_parser(
        "put",
        parents=[common],
        help="declare or update a datasource",
        description="Declare or update a datasource. The declaration is replaced as a whole: a "
        "setting left out goes back to its default (a lease datasource needs --dispatch lease "
        "each time).",
    )
    put.add_argument("dsid", help="the datasource id")
    put.add_argument("--description", default="", help="what the datasource does")
    put.add_argument("--schema", default=None, help="request JSON Schema: JSON, @file or -")
    put.add_argument(
        "--dispatch",
        choices=["stream", "lease"],
        default=None,
        help="stream: one driver follows the request stream (the default); lease: any number of "
        "drivers claim jobs, each job held by one of them under a lease",
    )
    put.add_argument(
        "--lease-seconds",
        type=int,
        default=None,
        metavar="N",
        help="1-3600 (default 30): how long a job's lease (lease dispatch) or the worker slot "
        "(stream dispatch) holds without a heartbeat; a crashed worker's jobs come back after it",
    )
    put.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        metavar="N",
        help="1-100 (default 5, lease dispatch): claims of one job before it ends failed",
    )
    put.add_argument(
        "--job-timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="default deadline of the datasource's jobs: the store asks for a job's cancellation "
        "if it has not ended this long after its submit (default: none)",
    )
    put.add_argument(
        "--cancel-grace",
        type=int,
        default=None,
        metavar="SECONDS",
        help="seconds between a deadline's cancel request and the store ending the job "
        "cancelled (default 10)",
    )
    actions.add_parser("list", parents=[common], help="the datasources this token may use")

    submit = commands.add_parser("submit", parents=[common], help="submit a job")
    submit.add_argument("dsid", help="the datasource to submit to")
    submit.add_argument("request", help="the job's request: JSON, @file or - (standard input)")
    submit.add_argument("--job", default=None, help="the job id (default: a new GUID)")
    _wait_option(submit, "before printing its record")
    submit.add_argument(
        "--timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="deadline (1-86400): the store asks for the job's cancellation if it has not ended "
        "SECONDS after the submit, and ends it cancelled after the datasource's grace",
    )

    status = commands.add_parser("status", parents=[common], help="print a job's status record")
    status.add_argument("dsid", help="the datasource")
    status.add_argument("job", help="the job id")
    _wait_option(status, "first")

    cancel = commands.add_parser("cancel", parents=[common], help="ask for a job's cancellation")
    cancel.add_argument("dsid", help="the datasource")
    cancel.add_argument("job", help="the job id")

    jobs = commands.add_parser("jobs", parents=[common], help="list your jobs, newest first")
    jobs.add_argument("dsid", help="the datasource")
    jobs.add_argument(
        "--status",
        default=None,
        choices=[s.value for s in Status],
        help="only jobs in this status (default: all)",
    )
    jobs.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")

    watch = commands.add_parser(
        "watch", parents=[common], help="follow a job (until it ends) or a whole datasource"
    )
    watch.add_argument("dsid", help="the datasource")
    watch.add_argument("job", nargs="?", default=None, help="the job to follow (default: all)")
    watch.add_argument(
        "--after", type=int, default=None, help="first replay notifications after this seq"
    )
    watch.add_argument(
        "--forever",
        action="store_true",
        help="never give up on an unreachable store: retry with backoff, printing one line per "
        "failed attempt (without it, watch gives up after --retries failed attempts in a row)",
    )

    _register_pipeline_verbs(commands, common)
    _register_schedule(commands, common)

    run_driver = commands.add_parser(
        "run-driver",
        parents=[common],
        help="run a driver: built in (shell, http) or MODULE:ATTR",
        description="Run a built-in driver (shell, http) or a jobqueue_store.driver.Driver until "
        "SIGINT or SIGTERM: declare its datasource, follow the request stream, run its handler "
        "per job. With --token-file the token can be renewed without a restart.",
    )
    run_driver.add_argument(
        "target",
        help="a built-in driver, shell or http (see 'run-driver NAME --help' for its options), "
        "or a module (dotted name or .py file) and the Driver's name, 'module:driver'",
    )
    run_driver.add_argument(
        "--dsid",
        default=os.environ.get("JOBQUEUE_STORE_DSID"),
        help="the datasource to serve (env JOBQUEUE_STORE_DSID; default: the Driver's own)",
    )
    run_driver.add_argument(
        "--state-file",
        default=None,
        metavar="PATH",
        help="where the resume mark is kept across restarts (default: the Driver's own, else "
        ".jobqueue-driver-<DSID>.json in the current directory)",
    )
    run_driver.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs run at the same time (default: the Driver's own, 4 unless it says otherwise)",
    )
    run_driver.add_argument(
        "--log-level", default="INFO", help="logging level: DEBUG, INFO, WARNING (default INFO)"
    )
    run_driver.add_argument(
        "--worker",
        default=os.environ.get("JOBQUEUE_STORE_WORKER"),
        help="this worker's name, shown in the catalogue and in the error of a job whose lease "
        "ran out (env JOBQUEUE_STORE_WORKER; default: host name and pid)",
    )
    run_driver.add_argument(
        "--standby",
        action="store_true",
        help="on a stream datasource whose worker slot another driver holds: wait, and take "
        "over when its slot lapses (without it, such a driver exits with an error)",
    )


# dispatch ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Run the verb parsed into ``args``; returns the exit status. Never raises: every failure
    is one line on standard error (the store's sentence and code) and an exit status."""
    try:
        if args.retries < 0:
            raise UsageError("--retries must be 0 or more")
        if args.command == "run-driver":
            return _run_driver(args)
        args.url = _url(args.url or os.environ.get("JOBQUEUE_STORE_URL") or DEFAULT_URL)
        args.token, args.token_file = _credentials(args)
        if not args.token:
            raise UsageError(
                "a token is needed: pass --token or --token-file, or set JOBQUEUE_STORE_TOKEN "
                "or JOBQUEUE_STORE_TOKEN_FILE"
            )
        verb = VERB_FUNCTIONS.get(args.command)
        if verb is None:
            raise UsageError(f"unknown command {args.command!r}")
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(verb(args))
        return EXIT_OK
    except UsageError as exc:
        print(f"jobqueue-store {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"jobqueue-store {args.command}: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # a bug or an unforeseen reply: still one line, no traceback
        logging.getLogger("jobqueue_store.cli").debug("unexpected error", exc_info=True)
        print(
            f"jobqueue-store {args.command}: unexpected error: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _url(value: str) -> str:
    try:
        return normalize_url(value)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None


def _credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(token, token file)``: the first of ``--token``, ``--token-file``,
    ``JOBQUEUE_STORE_TOKEN`` and ``JOBQUEUE_STORE_TOKEN_FILE`` that is set."""
    if args.token and args.token_file:
        raise UsageError("pass --token or --token-file, not both")
    env_file = os.environ.get("JOBQUEUE_STORE_TOKEN_FILE")
    if args.token:
        return args.token, None
    path = args.token_file or (None if os.environ.get("JOBQUEUE_STORE_TOKEN") else env_file)
    if path:
        try:
            return read_token_file(path), path
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return os.environ.get("JOBQUEUE_STORE_TOKEN") or None, None


def _connect_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"token_file": args.token_file, "retries": args.retries}


def _read_json(value: str, what: str) -> Any:
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {what} from {value[1:]}: {exc.strerror}") from None
    else:
        text = value
    try:
        return codec.loads(text)
    except codec.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def _register_pipeline_verbs(commands: Any, common: argparse.ArgumentParser) -> None:
    """``update``, ``stop``, ``start`` and ``revisions``: long-running jobs."""
    update = commands.add_parser(
        "update", parents=[common], help="update a job's request: its next revision"
    )
    update.add_argument("dsid", help="the datasource")
    update.add_argument("job", help="the job")
    update.add_argument("request", help="the new request: JSON, @file or - (standard input)")
    update.add_argument(
        "--rollback",
        action="store_true",
        help="if the driver reports this revision failed, go back to the last one that ran",
    )
    for verb, what in (("stop", "stop a long-running job"), ("start", "start it again")):
        parser = commands.add_parser(verb, parents=[common], help=what)
        parser.add_argument("dsid", help="the datasource")
        parser.add_argument("job", help="the job")
    revisions = commands.add_parser(
        "revisions", parents=[common], help="list a job's revisions, oldest first"
    )
    revisions.add_argument("dsid", help="the datasource")
    revisions.add_argument("job", help="the job")


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(codec.dumps_str(value), file=out or sys.stdout, flush=True)


def _describe(record: JobRecord) -> str:
    line = f"{record.job}  {record.status.value}"
    if record.revision or record.status in (Status.RUNNING, Status.STOPPED):
        line = f"{record.job}  r{record.revision}  {record.status.value}"
        if record.rollback_of is not None:
            line += f" (rollback of r{record.rollback_of})"
        if record.desired_state == "stopped" and record.status is not Status.STOPPED:
            line += " (stop requested)"
    if record.cancel_requested and not record.terminal:
        line += " (cancel requested)"
    if record.progress is not None and not record.terminal:
        line += f"  {_bar(record.progress)}"
    if record.error:
        line += f"\n  error: {record.error}"
    if record.has_response:
        line += f"\n  response: {codec.dumps_str(record.response)}"
    return line


def _bar(progress: float) -> str:
    filled = round(progress * BAR_WIDTH)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {progress * 100:3.0f}%"


def _show(args: argparse.Namespace, record: JobRecord) -> None:
    if args.json:
        _print_json(record.to_wire())
    else:
        print(_describe(record), flush=True)


def _outcome(record: JobRecord) -> int:
    if not record.terminal:
        return EXIT_NOT_DONE
    return EXIT_OK if record.status is Status.COMPLETE else EXIT_NOT_COMPLETE


async def _wait(client: JobClient, args: argparse.Namespace, dsid: str, job: str) -> JobRecord:
    timeout = None if args.wait < 0 else args.wait
    return await client.wait(dsid, job, timeout)


# verbs ------------------------------------------------------------------------------------------
async def _datasource(args: argparse.Namespace) -> int:
    async with DriverClient(args.url, args.token, **_connect_kwargs(args)) as client:
        if args.ds_action == "list":
            datasources = await client.catalogue()
            if args.json:
                _print_json({"datasources": datasources})
            for ds in [] if args.json else datasources:
                print(f"{ds['datasource_id']}  {ds.get('description', '')}{_workers(ds)}")
            return EXIT_OK
        schema = _read_json(args.schema, "--schema") if args.schema is not None else None
        stored = await client.put_datasource(
            args.dsid,
            args.description,
            schema,
            dispatch=args.dispatch,
            lease_seconds=args.lease_seconds,
            max_attempts=args.max_attempts,
            job_timeout=args.job_timeout,
            cancel_grace=args.cancel_grace,
        )
        if args.json:
            _print_json(stored)
        else:
            print(f"datasource {stored['datasource_id']} declared")
        return EXIT_OK


def _workers(ds: dict[str, Any]) -> str:
    """``  [lease; workers: w1, w2]`` for a catalogue entry (nothing for a plain stream one)."""
    parts = [ds["dispatch"]] if ds.get("dispatch") not in (None, "stream") else []
    names = [str(w.get("worker")) for w in ds.get("workers") or [] if isinstance(w, dict)]
    if names:
        parts.append("workers: " + ", ".join(names))
    return f"  [{'; '.join(parts)}]" if parts else ""


async def _submit(args: argparse.Namespace) -> int:
    request = _read_json(args.request, "the request")
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        record = await client.submit(args.dsid, request, args.job, timeout=args.timeout)
        if args.wait is not None:
            record = await _wait(client, args, args.dsid, record.job)
            _show(args, record)
            return _outcome(record)
        _show(args, record)
        return EXIT_OK


async def _status(args: argparse.Namespace) -> int:
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        if args.wait is not None:
            record = await _wait(client, args, args.dsid, args.job)
            _show(args, record)
            return _outcome(record)
        _show(args, await client.status(args.dsid, args.job))
        return EXIT_OK


async def _cancel(args: argparse.Namespace) -> int:
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        _show(args, await client.cancel(args.dsid, args.job))
        return EXIT_OK


async def _update(args: argparse.Namespace) -> int:
    request = _read_json(args.request, "the request")
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        _show(args, await client.update(args.dsid, args.job, request, rollback=args.rollback))
        return EXIT_OK


async def _stop(args: argparse.Namespace) -> int:
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        _show(args, await client.stop(args.dsid, args.job))
        return EXIT_OK


async def _start(args: argparse.Namespace) -> int:
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        _show(args, await client.start(args.dsid, args.job))
        return EXIT_OK


async def _revisions(args: argparse.Namespace) -> int:
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        revisions = await client.revisions(args.dsid, args.job)
    if args.json:
        _print_json({"revisions": revisions})
        return EXIT_OK
    for rev in revisions:
        line = f"{rev['revision']:>3}  {rev['status']:<10} {codec.dumps_str(rev['request'])}"
        if rev.get("rollback_of") is not None:
            line += f"  (rollback of r{rev['rollback_of']})"
        if rev.get("error"):
            line += f"\n     error: {rev['error']}"
        print(line)
    return EXIT_OK


async def _jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        records: list[JobRecord] = []
        page_size = min(args.limit, 1000)
        async for record in client.jobs(args.dsid, status=args.status, page_size=page_size):
            records.append(record)
            if len(records) >= args.limit:
                break
    if args.json:
        _print_json({"jobs": [r.to_wire() for r in records]})
        return EXIT_OK
    for r in records:
        progress = f"  {_bar(r.progress)}" if r.progress is not None and not r.terminal else ""
        print(f"{r.job}  {r.status.value}{progress}")
    if not records:
        print("no jobs", file=sys.stderr)
    return EXIT_OK


class _Watcher:
    """Prints notifications: lines, or one redrawn progress line per job on a terminal."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = args.json
        self.tty = sys.stdout.isatty() and not args.json
        self._open_line = False

    def show(self, seq: int | None, record: JobRecord, wire: dict[str, Any] | None) -> None:
        if self.json:
            _print_json(wire if wire is not None else record.to_wire())
            return
        redraw = self.tty and record.progress is not None and not record.terminal
        text = _describe(record) if seq is None else f"#{seq}  {_describe(record)}"
        if self._open_line:
            sys.stdout.write("\r\x1b[K")
        if redraw:
            sys.stdout.write(text)
            self._open_line = True
        else:
            sys.stdout.write(text + "\n")
            self._open_line = False
        sys.stdout.flush()


def _print_retry(attempt: int, error: StoreError, delay: float) -> None:
    print(
        f"jobqueue-store watch: {error.message.rstrip('.')} ({error.code}); attempt {attempt} "
        f"failed, retrying in {delay:.1f} s",
        file=sys.stderr,
        flush=True,
    )


async def _watch(args: argparse.Namespace) -> int:
    watcher = _Watcher(args)
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        sub = client.subscribe(
            args.dsid,
            after=args.after,
            retries=None if args.forever else args.retries,
            on_retry=_print_retry if args.forever else None,
        )
        async with sub:
            version = 0
            if args.job is not None:
                # Subscribed first, then read: no change can fall between the two.
                record = (
                    await _status_forever(client, args)
                    if args.forever
                    else (await client.status(args.dsid, args.job))
                )
                version = record.version
                watcher.show(None, record, None)
                if record.terminal:
                    return _outcome(record)
            note: Notification
            async for note in sub:
                if args.job is not None:
                    if note.job != args.job or note.record.version <= version:
                        continue
                    version = note.record.version
                watcher.show(note.seq, note.record, note.to_wire())
                if args.job is not None and note.record.terminal:
                    if await _rolled_back(client, note.record):
                        continue  # the failed revision's rollback follows: keep watching
                    return _outcome(note.record)
    return EXIT_OK


async def _rolled_back(client: JobClient, record: JobRecord) -> bool:
    """Whether ``record`` (terminal) is a failed revision that the store rolled back: the
    rollback is written with the failure, so the job is already at a later revision."""
    if record.status is not Status.FAILED or not record.rollback:
        return False
    return (await client.status(record.datasource_id, record.job)).revision > record.revision


async def _status_forever(client: JobClient, args: argparse.Namespace) -> JobRecord:
    """``watch --forever``: the job's record, however long the store stays unreachable."""
    attempt = 0
    while True:
        try:
            return await client.status(args.dsid, args.job)
        except Unavailable as exc:  # ConnectionFailed included, after the client's own retries
            attempt += 1
            delay = min(5.0 * attempt, 30.0)
            _print_retry(attempt, exc, delay)
            await asyncio.sleep(delay)


def load_driver(target: str) -> Any:
    """The object named by ``MODULE:ATTR`` (``MODULE`` a dotted name or a ``.py`` path), or the
    built-in driver of that name (``shell``, ``http``), configured from the environment."""
    from jobqueue_store import drivers

    if drivers.is_builtin(target):
        return drivers.builtin_driver(target)
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{target!r} is not MODULE:ATTR (e.g. examples/shell_driver.py:driver)")
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise UsageError(f"cannot load {module_name}: no such Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UsageError(f"cannot load {module_name}: {type(exc).__name__}: {exc}") from None
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"cannot import {module_name}: {exc}") from None
        except Exception as exc:
            raise UsageError(f"cannot load {module_name}: {type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{module_name} has no attribute {attr!r}") from None


def _takes_no_arguments(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
    )


def _run_driver(args: argparse.Namespace) -> int:
    from jobqueue_store.driver import Driver

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    found = load_driver(args.target)
    driver = found
    if not isinstance(found, Driver) and callable(found) and _takes_no_arguments(found):
        driver = found()  # a factory
    if not isinstance(driver, Driver):
        raise UsageError(f"{args.target} is not a jobqueue_store.driver.Driver")
    token, token_file = _credentials(args)
    driver.configure(
        url=_url(args.url or os.environ.get("JOBQUEUE_STORE_URL") or driver.url or DEFAULT_URL),
        token=token,
        token_file=token_file,
        dsid=args.dsid,
        state_file=args.state_file,
        concurrency=args.concurrency,
        retries=args.retries,
        worker=args.worker,
        standby=True if args.standby else None,
    )
    if not driver.token:
        raise UsageError(
            "a driver token is needed: pass --token or --token-file, or set "
            "JOBQUEUE_STORE_TOKEN or JOBQUEUE_STORE_TOKEN_FILE"
        )
    if not driver.dsid:
        raise UsageError("name the datasource: pass --dsid or set JOBQUEUE_STORE_DSID")
    try:
        driver.run_forever()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except SlotTaken as exc:
        print(
            f"jobqueue-store run-driver: {exc.message} (run-driver --standby waits and takes "
            "over when that worker stops.)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def _register_schedule(commands: Any, common: argparse.ArgumentParser) -> None:
    schedule = commands.add_parser(
        "schedule", help="run a job at a time or every so often (cron), and see its runs"
    )
    actions = schedule.add_subparsers(dest="schedule_action", required=True)
    add = actions.add_parser(
        "add",
        parents=[common],
        help="create a schedule: --cron for recurring runs, --at for one run",
        description="Create a schedule. Same id rules as a job: repeating the same command is "
        "harmless; another definition under a used (or deleted) id is refused.",
    )
    add.add_argument("dsid", help="the datasource its runs go to")
    add.add_argument("schedule", help="the schedule id (1-100 characters of A-Z a-z 0-9 . _ ~ : -)")
    add.add_argument("request", help="each run's request: JSON, @file or - (standard input)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a 5-field cron expression, e.g. '*/5 * * * *'")
    when.add_argument(
        "--at", help="one run at this time: RFC 3339 with an offset, or ms since the epoch"
    )
    add.add_argument("--timezone", default=None, help="with --cron: an IANA name (default UTC)")
    add.add_argument(
        "--catch-up",
        choices=["none", "one", "all"],
        default=None,
        help="fire times missed while the store was down: none, one run (default), or each",
    )
    add.add_argument("--timeout", type=int, default=None, help="each run's timeout in seconds")
    listing = actions.add_parser("list", parents=[common], help="your schedules, newest first")
    listing.add_argument("dsid", help="the datasource")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    for name, text in [
        ("show", "a schedule's record"),
        ("runs", "a schedule's runs, newest first"),
        ("pause", "no runs until resumed"),
        ("resume", "runs again from the next fire time"),
        ("delete", "soft delete: no further runs; record and runs stay readable"),
    ]:
        one = actions.add_parser(name, parents=[common], help=text)
        one.add_argument("dsid", help="the datasource")
        one.add_argument("schedule", help="the schedule id")
        if name == "runs":
            one.add_argument("--limit", type=int, default=100, help="at most this many")


def _describe_schedule(record: ScheduleRecord) -> str:
    when = f"cron '{record.cron}' {record.timezone}" if record.cron else f"at {_iso(record.at)}"
    following = f"next {_iso(record.next_run_at)}" if record.next_run_at is not None else "no next"
    return f"{record.schedule}  {record.state}  {when}  {following}  runs {record.runs}" + (
        f"  last {record.last_run}" if record.last_run else ""
    )


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _schedule(args: argparse.Namespace) -> int:
    action = args.schedule_action
    limit = getattr(args, "limit", 100)
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    async with JobClient(args.url, args.token, **_connect_kwargs(args)) as client:
        if action in ("list", "runs"):
            items: list[Any] = []
            source = (
                client.schedules(args.dsid, page_size=min(limit, 1000))
                if action == "list"
                else client.runs(args.dsid, args.schedule, page_size=min(limit, 1000))
            )
            async for item in source:
                items.append(item)
                if len(items) >= limit:
                    break
            key = "schedules" if action == "list" else "jobs"
            if args.json:
                _print_json({key: [i.to_wire() for i in items]})
            else:
                for item in items:
                    if isinstance(item, ScheduleRecord):
                        print(_describe_schedule(item))
                    else:
                        print(f"{item.job}  {item.status.value}  for {_iso(item.scheduled_for)}")
                if not items:
                    print(f"no {'schedules' if action == 'list' else 'runs'}", file=sys.stderr)
            return EXIT_OK
        if action == "add":
            at: int | str | None = args.at
            if isinstance(at, str) and at.isdigit():
                at = int(at)
            if args.timezone is not None and args.cron is None:
                raise UsageError("--timezone goes with --cron")
            record = await client.schedule(
                args.dsid,
                args.schedule,
                _read_json(args.request, "the request"),
                cron=args.cron,
                timezone=args.timezone,
                at=at,
                catch_up=args.catch_up,
                timeout=args.timeout,
            )
        elif action == "show":
            record = await client.get_schedule(args.dsid, args.schedule)
        elif action == "pause":
            record = await client.pause(args.dsid, args.schedule)
        elif action == "resume":
            record = await client.resume(args.dsid, args.schedule)
        else:
            record = await client.delete_schedule(args.dsid, args.schedule)
        if args.json:
            _print_json(record.to_wire())
        else:
            print(_describe_schedule(record))
        return EXIT_OK


VERB_FUNCTIONS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "schedule": _schedule,
    "datasource": _datasource,
    "submit": _submit,
    "status": _status,
    "cancel": _cancel,
    "jobs": _jobs,
    "watch": _watch,
    "update": _update,
    "stop": _stop,
    "start": _start,
    "revisions": _revisions,
}
