"""Settings of a store process, from command-line flags and ``JOBQUEUE_STORE_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_NAME = "jobqueue-store"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits that protect the store from oversized or abusive requests."""

    max_body: int = MIB
    """Largest request body accepted, in bytes (default 1 MiB); larger is 413."""
    max_json_depth: int = 64
    """Deepest nesting of arrays and objects accepted in a request body; deeper is 400."""
    max_ws_message: int = 64 * 1024
    """Largest websocket frame accepted from a peer, in bytes."""
    max_wait: float = 60.0
    """Longest ``?wait=`` a request may ask for, in seconds."""
    ws_heartbeat: float = 20.0
    """Seconds between websocket pings; a peer that does not answer is dropped."""
    ws_send_queue: int = 1024
    """Notifications buffered per subscriber before it is closed with 4008."""
    ws_send_timeout: float = 10.0
    """Seconds a single websocket send may take before the subscriber is closed."""
    max_connections: int = 10_000
    """Open websocket connections accepted by this process."""
    max_ws_per_client: int = 64
    """Open websocket connections per client id (0: unlimited)."""
    max_unfinished_jobs: int = 0
    """Unfinished jobs a client may hold per datasource (0: unlimited); one more is 429."""
    submits_per_second: float = 0.0
    """Submits a client may make per second, burst of twice that (0: unlimited)."""
    header_timeout: float = 10.0
    """Seconds a request may take to send its request line and headers, counted from the
    connection's opening or from the request's first byte; slower is closed (408)."""
    body_timeout: float = 10.0
    """Seconds a request body may take, plus one second per ``body_min_rate`` bytes of it."""
    body_min_rate: int = 64 * 1024
    """Slowest average body upload accepted, in bytes per second (see ``body_timeout``)."""
    keepalive_timeout: float = 30.0
    """Seconds a kept-alive connection may stay idle between two requests before it is closed."""
    max_open_connections: int = 12_000
    """Open HTTP connections (websockets included) accepted by this process; more get 503."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a store process needs to run."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    name: str = DEFAULT_NAME
    database: str = ""
    """SQLite file path or ``postgresql://`` DSN; empty: ``<data_dir>/jobqueue.sqlite3``."""
    synchronous: str = "FULL"
    """SQLite ``synchronous`` pragma: FULL (default, durable), NORMAL or OFF."""
    root_key: str = ""
    """``<id>:<hex>[,...]`` root keys shared by several processes; empty: the data dir's file."""
    token_cache_size: int = 10_000
    workers: int = 1
    """Store processes serving one port (SO_REUSEPORT); more than 1 needs PostgreSQL."""
    reuse_port: bool = False
    retention_days: float = 7.0
    """Terminal jobs older than this are purged with their log entries (0: keep forever)."""
    audit_log: str = "-"
    """Where the audit log goes: a file path, ``-`` (standard error) or ``off``."""
    limits: Limits = field(default_factory=Limits)
