"""An access logger that never writes a token: the ``token`` query value is redacted."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_TOKEN_RE = re.compile(r"((?:^|[?&])token=)[^&]*", re.IGNORECASE)


def redact(path_qs: str) -> str:
    """``path_qs`` with any ``token=`` query value replaced by ``REDACTED``."""
    return _TOKEN_RE.sub(r"\1REDACTED", path_qs)


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: remote, method, path (token redacted), status, size, seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the access line."""
        self.logger.info(
            '%s "%s %s" %d %d %.4f',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            response.body_length,
            time,
        )
