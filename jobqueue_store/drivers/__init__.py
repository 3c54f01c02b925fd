"""Built-in drivers, run by name: ``jobqueue-store run-driver shell`` or ``... run-driver http``.

Each built-in driver is a module of this package with:

- ``ENV_PREFIX``: the prefix of its environment variables (e.g. ``SHELL_DRIVER_``);
- ``DEFAULT_CONCURRENCY``: how many jobs it runs at once unless told otherwise;
- ``add_options(group)``: its command-line options (each with an environment variable);
- ``make_driver(args) -> Driver``: the driver, configured from the parsed options.

Every built-in driver also takes the options of any driver (``--url``, ``--token``, ``--dsid``,
``--state-file``, ``--concurrency``, ``--log-level``); its datasource id defaults to its name.
Options of a built-in driver go after its name: ``jobqueue-store run-driver shell --allow echo``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from jobqueue_store.driver import Driver
from jobqueue_store.errors import StoreError

__all__ = ["BUILTIN", "build_parser", "builtin_driver", "is_builtin", "main"]

DEFAULT_URL = "http://127.0.0.1:8080"

BUILTIN: dict[str, str] = {
    "shell": "jobqueue_store.drivers.shell",
    "http": "jobqueue_store.drivers.http",
}
"""Built-in driver names and their modules."""


def is_builtin(name: str) -> bool:
    """True if ``name`` is the name of a built-in driver."""
    return name in BUILTIN


def _module(name: str) -> ModuleType:
    return importlib.import_module(BUILTIN[name])


def env_help(env: str, default: object) -> str:
    """The tail of an option's help: its environment variable and default."""
    return f"(env {env}; default {default})"


def split_list(text: str) -> list[str]:
    """Items of a comma- or whitespace-separated list, empty ones dropped."""
    return [item for item in text.replace(",", " ").split() if item]


def positive_float(text: str) -> float:
    """An argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of at least 0")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0")
    return value


def build_parser(name: str) -> argparse.ArgumentParser:
    """The command-line parser of ``jobqueue-store run-driver NAME``."""
    module = _module(name)
    doc = (module.__doc__ or "").strip()
    summary, _, details = doc.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog=f"jobqueue-store run-driver {name}",
        description=summary,
        epilog=details or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store = parser.add_argument_group("every driver")
    store.add_argument(
        "--url",
        default=os.environ.get("JOBQUEUE_STORE_URL") or DEFAULT_URL,
        help=f"store URL {env_help('JOBQUEUE_STORE_URL', DEFAULT_URL)}",
    )
    store.add_argument(
        "--token",
        default=os.environ.get("JOBQUEUE_STORE_TOKEN"),
        help="a driver token for the datasource (env JOBQUEUE_STORE_TOKEN)",
    )
    store.add_argument(
        "--dsid",
        default=os.environ.get("JOBQUEUE_STORE_DSID") or name,
        help=f"the datasource it declares and serves {env_help('JOBQUEUE_STORE_DSID', name)}",
    )
    store.add_argument(
        "--state-file",
        default=None,
        help="where the resume mark is kept (default .jobqueue-driver-<dsid>.json)",
    )
    env = f"{module.ENV_PREFIX}CONCURRENCY"
    store.add_argument(
        "--concurrency",
        type=positive_int,
        default=os.environ.get(env, str(module.DEFAULT_CONCURRENCY)),
        help=f"jobs run at once {env_help(env, module.DEFAULT_CONCURRENCY)}",
    )
    store.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (default INFO)")
    module.add_options(parser.add_argument_group(f"{name} driver"))
    return parser


def _make(name: str, args: argparse.Namespace) -> Driver:
    driver: Driver = _module(name).make_driver(args)
    driver.configure(
        url=args.url,
        token=args.token,
        dsid=args.dsid,
        state_file=args.state_file,
        concurrency=args.concurrency,
    )
    return driver


def builtin_driver(name: str, argv: Sequence[str] = ()) -> Driver:
    """The built-in driver ``name``, configured from ``argv`` and the environment.

    Options argparse refuses print a usage message and exit with status 2, as on the command
    line; a value it cannot check (an allowed URL prefix) raises ``ValueError``.
    """
    return _make(name, build_parser(name).parse_args(list(argv)))


def main(name: str, argv: Sequence[str]) -> int:
    """Run the built-in driver ``name`` with the options ``argv``; returns the exit status."""
    parser = build_parser(name)
    args = parser.parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        driver = _make(name, args)
    except ValueError as exc:
        parser.error(str(exc))
    if not driver.token:
        parser.error("a driver token is needed: pass --token or set JOBQUEUE_STORE_TOKEN")
    try:
        driver.run_forever()
    except ValueError as exc:
        print(f"jobqueue-store run-driver {name}: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"jobqueue-store run-driver {name}: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    return 0
