"""The shell driver now ships with the package: run ``jobqueue-store run-driver shell``.

Its options (allow-list, time and output limits) are listed by
``jobqueue-store run-driver shell --help``. This file keeps older command lines working::

    jobqueue-store run-driver examples/shell_driver.py:driver --dsid shell
    python examples/shell_driver.py --allow echo,date

(the driver configured from ``SHELL_DRIVER_*`` environment variables, or from the same options as
``run-driver shell``), and re-exports the command runner, :func:`run_command`.
"""

from __future__ import annotations

import sys

from jobqueue_store.drivers import builtin_driver, main
from jobqueue_store.drivers.shell import (
    REQUEST_SCHEMA,
    CommandTimedOut,
    ShellOptions,
    make_driver,
    run_command,
)

__all__ = [
    "REQUEST_SCHEMA",
    "CommandTimedOut",
    "ShellOptions",
    "driver",
    "make_driver",
    "run_command",
]

driver = builtin_driver("shell")

if __name__ == "__main__":
    sys.exit(main("shell", sys.argv[1:]))
