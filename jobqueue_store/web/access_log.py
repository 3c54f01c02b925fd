"""An access logger that never writes a token (the ``token`` query value is redacted) and
whose lines are bounded: a long path is cut."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_TOKEN_RE = re.compile(r"((?:^|[?&])token=)[^&]*", re.IGNORECASE)

MAX_PATH = 512
"""Characters of a request's path and query written to the access log."""


def redact(path_qs: str) -> str:
    """``path_qs`` with any ``token=`` query value replaced by ``REDACTED``."""
    return _TOKEN_RE.sub(r"\1REDACTED", path_qs)


def shorten(path_qs: str) -> str:
    """``path_qs`` cut to :data:`MAX_PATH` characters (the cut marked with ``...``)."""
    return path_qs if len(path_qs) <= MAX_PATH else path_qs[:MAX_PATH] + "..."


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: remote, method, path (token redacted), status, size, seconds.
    With ``--log-format json`` the same values are also fields of the JSON line."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the access line."""
        path = shorten(redact(request.path_qs))
        self.logger.info(
            '%s "%s %s" %d %d %.4f',
            request.remote,
            request.method,
            path,
            response.status,
            response.body_length,
            time,
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": path,
                "status": response.status,
                "bytes": response.body_length,
                "seconds": round(time, 6),
            },
        )
