"""The ``jobqueue-store`` command: ``serve``, ``token``, ``key``.

Every option can also be set with an environment variable ``JOBQUEUE_STORE_<OPTION>`` (upper
case, dashes as underscores), e.g. ``JOBQUEUE_STORE_PORT=9000``. A flag wins over the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from jobqueue_store import __version__, cli_verbs
from jobqueue_store.config import DEFAULT_NAME, Limits, Settings
from jobqueue_store.keys import KeyRing, NoKeyFile

if TYPE_CHECKING:
    from jobqueue_store.supervisor import Supervisor

ENV_PREFIX = "JOBQUEUE_STORE_"
log = logging.getLogger("jobqueue_store")


def env_default(option: str, default: str | None = None) -> str | None:
    """The value of ``JOBQUEUE_STORE_<OPTION>`` or ``default``."""
    return os.environ.get(ENV_PREFIX + option.upper().replace("-", "_"), default)


def add_option(
    parser: argparse.ArgumentParser, option: str, default: str | None, help_text: str
) -> None:
    """``--option`` whose default comes from the environment, then ``default``."""
    env = ENV_PREFIX + option.upper().replace("-", "_")
    parser.add_argument(
        f"--{option}",
        default=env_default(option, default),
        help=f"{help_text} (env {env}; default {default!r})",
    )


def _store_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "data-dir", "./data", "data directory (database, root keys)")
    add_option(parser, "name", DEFAULT_NAME, "store name, the tokens' target caveat")
    add_option(
        parser,
        "root-key",
        "",
        "root keys '<id>:<hex>[,...]' shared by several "
        "processes; empty: the data dir's root_keys.json",
    )


EPILOG = """\
environment:
  Every option of serve, token and key can be set as JOBQUEUE_STORE_<OPTION> (upper case,
  dashes as underscores, e.g. JOBQUEUE_STORE_PORT=9000); a flag wins over the variable.
  The client and driver verbs read:
    JOBQUEUE_STORE_URL         the store's URL (default http://127.0.0.1:8080)
    JOBQUEUE_STORE_TOKEN       the token to send
    JOBQUEUE_STORE_TOKEN_FILE  a file holding the token, read again when the store refuses
                               it (renew a long-lived driver's token by rewriting the file)
    JOBQUEUE_STORE_DSID        run-driver's datasource
    JOBQUEUE_STORE_ROOT_KEY    root keys '<id>:<hex>[,...]' instead of <data-dir>/root_keys.json

exit status:
  0  done (a waited or watched job ended complete)
  1  the store refused the request or could not be reached (its sentence and code on stderr);
     serve failed
  2  bad usage: a bad option or argument, an unreadable file, no root key where token looked
  3  a waited or watched job ended in another terminal status (failed, cancelled, forbidden)
  4  --wait ended before the job did

Run 'jobqueue-store <command> --help' for a command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="jobqueue-store",
        description="An asynchronous job-queue store with pub/sub.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jobqueue-store {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the store")
    add_option(serve, "host", "127.0.0.1", "address to listen on")
    add_option(serve, "port", "8080", "port to listen on")
    _store_options(serve)
    add_option(
        serve,
        "database",
        "",
        "SQLite file or postgresql:// DSN; empty: <data-dir>/jobqueue.sqlite3",
    )
    add_option(serve, "synchronous", "FULL", "SQLite synchronous pragma: FULL, NORMAL or OFF")
    add_option(
        serve,
        "workers",
        "1",
        "store processes sharing the port (SO_REUSEPORT); more than 1 needs a postgresql:// "
        "database",
    )
    add_option(serve, "reuse-port", "off", "'on' to bind with SO_REUSEPORT (set for workers)")
    add_option(serve, "max-body", str(Limits().max_body), "largest request body in bytes")
    add_option(serve, "max-wait", str(Limits().max_wait), "longest ?wait= in seconds")
    add_option(serve, "submits-per-second", "0", "per-client submit rate limit (0: off)")
    add_option(
        serve, "max-unfinished-jobs", "0", "unfinished jobs per client and datasource (0: off)"
    )
    add_option(
        serve, "max-json-depth", str(Limits().max_json_depth), "deepest JSON nesting in a body"
    )
    add_option(
        serve, "max-ws-message", str(Limits().max_ws_message), "largest websocket frame in bytes"
    )
    add_option(
        serve, "max-connections", str(Limits().max_connections), "open websockets per process"
    )
    add_option(
        serve,
        "max-ws-per-client",
        str(Limits().max_ws_per_client),
        "open websockets per client id (0: off)",
    )
    add_option(
        serve,
        "header-timeout",
        f"{Limits().header_timeout:g}",
        "seconds a request may take to send its request line and headers",
    )
    add_option(
        serve,
        "body-timeout",
        f"{Limits().body_timeout:g}",
        "seconds a request body may take, plus one per --body-min-rate bytes of it",
    )
    add_option(
        serve,
        "body-min-rate",
        str(Limits().body_min_rate),
        "slowest average body upload accepted, in bytes per second",
    )
    add_option(
        serve,
        "keepalive-timeout",
        f"{Limits().keepalive_timeout:g}",
        "seconds a kept-alive connection may stay idle between requests",
    )
    add_option(
        serve,
        "max-open-connections",
        str(Limits().max_open_connections),
        "open HTTP connections per process, websockets included (more get 503)",
    )
    add_option(
        serve,
        "retention-days",
        f"{Settings().retention_days:g}",
        "purge terminal jobs and their log entries older than this (0: keep forever)",
    )
    add_option(serve, "log-level", "INFO", "logging level")
    add_option(serve, "log-format", "text", "process log format: 'text' or 'json' (JSON lines)")
    add_option(serve, "access-log", "off", "'on' to log every request (tokens redacted)")
    add_option(serve, "audit-log", "-", "audit log of every write: a file, '-' (stderr) or 'off'")
    serve.add_argument(
        "--migrate-only",
        action="store_true",
        help="create or upgrade the database schema, then exit",
    )
    # Set by the supervising process of --workers on its children.
    serve.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)

    token = commands.add_parser(
        "token",
        help="print a new token",
        description="Print one token, minted from the store's current root key (read from "
        "--data-dir or --root-key; never created here: 'serve' creates it on its first start).",
    )
    token.add_argument(
        "--role",
        required=True,
        choices=["client", "driver", "admin"],
        help="client: submits and follows its own jobs; driver: declares datasources and "
        "reports job status; admin: everything, including /metrics",
    )
    token.add_argument("--client", default=None, help="client id (required for role client)")
    token.add_argument(
        "--dsid", default=None, help="datasource(s) allowed, comma separated (default: any)"
    )
    token.add_argument(
        "--ttl",
        type=float,
        default=86400.0,
        help="lifetime in seconds (default 86400, one day); 0: the token never expires, which "
        "a client token also needs --allow-no-expiry for. Long-lived drivers: see --token-file",
    )
    token.add_argument(
        "--allow-no-expiry",
        action="store_true",
        help="allow --ttl 0 for a client token (it stays valid until its root key is removed)",
    )
    _store_options(token)

    key = commands.add_parser(
        "key",
        help="manage root keys in the data dir",
        description="list: the root key ids, the current one marked. rotate: add a fresh key and "
        "make it current; tokens of the older keys still verify (creates the key file if there "
        "is none). remove KEY_ID: revoke every token made from that key (rotate first if it is "
        "the current one). A running store reads the changed keys on SIGHUP or restart.",
    )
    key.add_argument(
        "action", choices=["list", "rotate", "remove"], help="list, rotate or remove (see above)"
    )
    key.add_argument("key_id", nargs="?", help="the key to remove")
    add_option(key, "data-dir", "./data", "data directory")
    cli_verbs.register(commands)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings of ``serve`` from parsed arguments."""
    limits = Limits(
        max_body=int(args.max_body),
        max_wait=float(args.max_wait),
        submits_per_second=float(args.submits_per_second),
        max_unfinished_jobs=int(args.max_unfinished_jobs),
        max_json_depth=int(args.max_json_depth),
        max_ws_message=int(args.max_ws_message),
        max_connections=int(args.max_connections),
        max_ws_per_client=int(args.max_ws_per_client),
        header_timeout=float(args.header_timeout),
        body_timeout=float(args.body_timeout),
        body_min_rate=int(args.body_min_rate),
        keepalive_timeout=float(args.keepalive_timeout),
        max_open_connections=int(args.max_open_connections),
    )
    for option, value in (
        ("header-timeout", limits.header_timeout),
        ("body-timeout", limits.body_timeout),
        ("body-min-rate", limits.body_min_rate),
        ("keepalive-timeout", limits.keepalive_timeout),
        ("max-open-connections", limits.max_open_connections),
    ):
        if not value > 0:
            raise ValueError(f"--{option} must be a positive number, not {value:g}")
    return Settings(
        host=args.host,
        port=int(args.port),
        data_dir=Path(args.data_dir),
        name=args.name,
        database=args.database,
        synchronous=args.synchronous.upper(),
        root_key=args.root_key,
        workers=int(args.workers),
        reuse_port=args.reuse_port == "on" or int(args.workers) > 1,
        retention_days=float(args.retention_days),
        audit_log=args.audit_log,
        limits=limits,
    )


async def serve(
    settings: Settings,
    *,
    access_log: bool = False,
    migrate_only: bool = False,
    supervisor: Supervisor | None = None,
    parent_fd: int | None = None,
) -> int:
    """Run the store until SIGINT or SIGTERM, then shut down gracefully; the exit status.

    ``supervisor``: worker processes started once listening, stopped and awaited at shutdown.
    ``parent_fd``: (in a worker) a pipe from the supervising process; its end stops the store.
    """
    from jobqueue_store.audit import AuditLog
    from jobqueue_store.web.app import create_app

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    app = create_app(settings)
    if migrate_only:
        from jobqueue_store.web.keys import STORE

        store = app[STORE]
        await store.open()  # opening runs the migrations
        try:
            version = await store.migrate()
        finally:
            await store.close()
        print(f"schema version {version}", flush=True)
        return 0
    with AuditLog(settings.audit_log):
        return await _serve_app(
            app, settings, access_log=access_log, supervisor=supervisor, parent_fd=parent_fd
        )


def _raise_open_files_limit() -> int | None:
    """Lift the soft limit on open files to the hard one: every websocket is a descriptor, and
    the default soft limit (often 1024) is far below ``--max-connections``. The limit now."""
    try:
        import resource  # POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else int(soft)
    except (ImportError, ValueError, OSError) as exc:
        log.warning("could not raise the open files limit: %s", exc)
        return None


# Descriptors kept for the database, logs and root keys when capping connections.
RESERVED_FILES = 64


def _connection_cap(limits: Limits, open_files: int | None) -> int:
    """``--max-open-connections``, lowered to fit the open files limit (a process out of
    descriptors cannot even refuse a connection politely)."""
    cap = limits.max_open_connections
    if open_files is not None and cap > open_files - RESERVED_FILES:
        cap = max(1, open_files - RESERVED_FILES)
        log.warning(
            "--max-open-connections %d lowered to %d to fit the open files limit (%d)",
            limits.max_open_connections,
            cap,
            open_files,
        )
    return cap


GC_THRESHOLDS = (50_000, 50, 100)
"""The cyclic garbage collector's thresholds while the store serves (Python's: 700, 10, 10).

Requests allocate many short-lived objects, which reference counting frees, and the store keeps
caches whose entries live for seconds (job rows a driver is updating, records status reads
fetched): with Python's thresholds the collector ran often and walked those caches in its older
generations. Raising them took the benchmark's durable submit from 0.45-0.46 to 0.49-0.51 of the
bare handler and the driver update from 0.42 to 0.46-0.50; cyclic garbage (rare here) waits for
50,000 allocations instead of 700 before it is freed."""


def tune_gc() -> None:
    """Set :data:`GC_THRESHOLDS` (``serve`` calls it once the server listens)."""
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve_app(
    app: web.Application,
    settings: Settings,
    *,
    access_log: bool,
    supervisor: Supervisor | None = None,
    parent_fd: int | None = None,
) -> int:
    from jobqueue_store.supervisor import watch_parent
    from jobqueue_store.web.access_log import RedactingAccessLogger
    from jobqueue_store.web.server import StoreRunner

    open_files = _raise_open_files_limit()

    runner = StoreRunner(
        app,
        limits=settings.limits,
        max_connections=_connection_cap(settings.limits, open_files),
        access_log_class=RedactingAccessLogger,
        access_log=logging.getLogger("jobqueue_store.access") if access_log else None,
        shutdown_timeout=10.0,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.port, backlog=1024, reuse_port=settings.reuse_port or None
    )
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not settings.root_key:
        loop.add_signal_handler(signal.SIGHUP, _reload_keys, app, settings)
    if parent_fd is not None:
        watch_parent(loop, parent_fd, stop.set)
    if supervisor is not None:
        supervisor.start()
    tune_gc()
    print(f"jobqueue-store listening on http://{settings.host}:{settings.port}", flush=True)
    status = 0
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if supervisor is not None:
            supervisor.terminate()  # the workers drain at the same time as this process
        await runner.cleanup()
        if supervisor is not None:
            status = await supervisor.wait()
    return status


def serve_workers(settings: Settings, argv: Sequence[str]) -> int:
    """``serve --workers N``: this process and N-1 children, one PostgreSQL store each, all
    bound to one port with SO_REUSEPORT (the kernel spreads connections over them). They share
    the database, so notifications and ``?wait=`` cross processes. SIGTERM or SIGINT to this
    process stops them all; the children are supervised (see :mod:`jobqueue_store.supervisor`):
    restarted when they die, stopped when this process dies."""
    if not settings.database.startswith(("postgresql://", "postgres://")):
        print(
            "jobqueue-store serve: --workers above 1 needs --database postgresql://...: an "
            "SQLite store is served by one process (its single writer is what keeps seq and "
            "timestamps in order).",
            file=sys.stderr,
        )
        return 2
    child_argv = [
        sys.executable,
        "-m",
        "jobqueue_store",
        *argv,
        "--workers",
        "1",
        "--reuse-port",
        "on",
    ]
    from jobqueue_store.supervisor import Supervisor

    status = 1
    with contextlib.suppress(KeyboardInterrupt):
        status = _run(serve(settings, supervisor=Supervisor(child_argv, settings.workers - 1)))
    return status


def _reload_keys(app: web.Application, settings: Settings) -> None:
    """SIGHUP: re-read ``root_keys.json`` (after ``key rotate`` / ``key remove``)."""
    from jobqueue_store.web.keys import AUTHORITY

    authority = app[AUTHORITY]
    try:
        authority.keyring.reload(settings.data_dir)
    except ValueError as exc:
        log.error("root keys not reloaded: %s", exc)
        return
    authority.clear_cache()
    log.info("root keys reloaded: %s", ", ".join(authority.keyring.key_ids))


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro`` on uvloop if it is installed, else on asyncio's loop. The store runs outside
    the import's ``except``, so no logged traceback carries the ImportError."""
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    if uvloop is None:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _no_key_file(command: str, exc: NoKeyFile) -> int:
    print(
        f"jobqueue-store {command}: no root key: {exc.path} does not exist. Pass the running "
        "store's data directory (--data-dir DIR or JOBQUEUE_STORE_DATA_DIR) or its keys "
        "(--root-key or JOBQUEUE_STORE_ROOT_KEY); 'jobqueue-store serve' creates the key on its "
        "first start.",
        file=sys.stderr,
    )
    return 2


def cmd_token(args: argparse.Namespace) -> int:
    """Print one token, from the store's existing root key (never a new one: a token minted
    from a key the running store does not hold would be refused)."""
    from jobqueue_store.auth import TokenAuthority
    from jobqueue_store.models import Role

    if args.ttl < 0 or args.ttl != args.ttl:
        print("jobqueue-store token: --ttl must be 0 (no expiry) or more", file=sys.stderr)
        return 2
    if args.ttl == 0 and args.role == "client" and not args.allow_no_expiry:
        print(
            "jobqueue-store token: a client token without expiry stays valid until its root key "
            "is removed: pass --allow-no-expiry to mint it anyway, or give --ttl in seconds",
            file=sys.stderr,
        )
        return 2
    dsids = [d for d in args.dsid.split(",") if d] if args.dsid else None

    def mint(ring: KeyRing) -> str:
        return TokenAuthority(ring, args.name).mint(
            Role(args.role), client=args.client, dsids=dsids, ttl=args.ttl or None
        )

    try:
        mint(KeyRing.generate())  # a usage error is told before a key that cannot be found
        token = mint(
            KeyRing.from_env(args.root_key) if args.root_key else KeyRing.load(Path(args.data_dir))
        )
    except NoKeyFile as exc:
        return _no_key_file("token", exc)
    except ValueError as exc:
        print(f"jobqueue-store token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """List, rotate or remove root keys."""
    data_dir = Path(args.data_dir)
    try:
        if args.action == "rotate":
            print(KeyRing.rotate(data_dir))
        elif args.action == "remove":
            if not args.key_id:
                print("jobqueue-store key remove: name the key id to remove", file=sys.stderr)
                return 2
            KeyRing.remove(data_dir, args.key_id)
        else:
            ring = KeyRing.load(data_dir)
            for key_id in ring.key_ids:
                print(f"{key_id}{' (current)' if key_id == ring.current else ''}")
    except NoKeyFile as exc:
        return _no_key_file(f"key {args.action}", exc)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobqueue-store`` command."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["run-driver"] and len(words) > 1:  # a built-in driver has its own options
        from jobqueue_store import drivers

        if drivers.is_builtin(words[1]):
            return drivers.main(words[1], words[2:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from jobqueue_store import logs

            logs.configure(args.log_level, args.log_format)
            settings = settings_from(args)
            if settings.workers > 1 and not args.migrate_only:
                return serve_workers(settings, list(argv if argv is not None else sys.argv[1:]))
            if args.parent_pid is not None:
                from jobqueue_store.supervisor import die_with_parent

                die_with_parent(args.parent_pid)
            status = 0
            with contextlib.suppress(KeyboardInterrupt):
                status = _run(
                    serve(
                        settings,
                        access_log=args.access_log == "on",
                        migrate_only=args.migrate_only,
                        parent_fd=args.parent_fd,
                    )
                )
            return status
        if args.command == "token":
            return cmd_token(args)
        if args.command == "key":
            return cmd_key(args)
        return cli_verbs.run(args)
    except ValueError as exc:
        print(f"jobqueue-store: {exc}", file=sys.stderr)
        return 2
    return 2
