"""The dashboard: ``GET /ui/`` and its static files, shipped in ``jobqueue_store/ui/``.

The page's files need no token (they hold no data); every data call the page makes goes to the
ordinary API with the token the user pasted, so a token sees in the page exactly what the API
gives it. Every reply here carries a Content-Security-Policy that allows no inline script or
style and no other host, and denies framing. The protocol documents of ``docs/`` are served as
plain text under ``/ui/docs/`` so that a store's users can read them without the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

from jobqueue_store.errors import NotFound

__all__ = ["OPEN_ROUTE_NAMES", "UI_DIR", "add_routes", "security_headers"]

UI_DIR: Final = Path(__file__).resolve().parent.parent / "ui"
"""The dashboard's static files."""
DOCS_DIR: Final = Path(__file__).resolve().parent.parent / "docs"
"""The protocol documents (a link to the repository's ``docs/``, shipped as package data)."""

OPEN_ROUTE_NAMES: Final = frozenset({"ui_root", "ui_index", "ui_file", "ui_doc"})
"""Routes served without a token."""

CONTENT_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".md": "text/plain",
}
# A Host header fit to be repeated in the policy (anything else is left out, never echoed).
_HOST_RE: Final = re.compile(r"[A-Za-z0-9.-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")


def content_security_policy(host: str | None) -> str:
    """The policy of every dashboard reply.

    ``connect-src 'self'`` covers same-host websockets in current browsers (CSP level 3), but not
    in every browser still in use: the ``ws:``/``wss:`` URLs of the request's own host are listed
    too.
    """
    connect = "'self'"
    if host and _HOST_RE.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def security_headers(request: web.Request) -> dict[str, str]:
    """The headers every dashboard reply carries."""
    return {
        "Content-Security-Policy": content_security_policy(request.host),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def _files(folder: Path, suffixes: frozenset[str]) -> dict[str, Path]:
    """The servable files of ``folder`` by name: only these are ever opened (no traversal)."""
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in suffixes}


_UI_FILES: Final = _files(UI_DIR, frozenset(CONTENT_TYPES) - {".md"})
_DOC_FILES: Final = _files(DOCS_DIR, frozenset({".md"}))


def _file_response(request: web.Request, path: Path) -> web.FileResponse:
    response = web.FileResponse(path, headers=security_headers(request))
    content_type = CONTENT_TYPES[path.suffix]
    response.content_type = content_type
    if content_type.startswith("text/") or content_type.endswith("+xml"):
        response.charset = "utf-8"
    return response


async def ui_root(request: web.Request) -> web.StreamResponse:
    """``GET /ui``: to ``/ui/``, so that the page's relative URLs resolve."""
    raise web.HTTPFound("/ui/", headers=security_headers(request))


async def ui_index(request: web.Request) -> web.StreamResponse:
    """``GET /ui/``: the dashboard page."""
    return _file_response(request, _UI_FILES["index.html"])


async def ui_file(request: web.Request) -> web.StreamResponse:
    """``GET /ui/<name>``: one static file of the dashboard."""
    name = request.match_info["name"]
    path = _UI_FILES.get(name)
    if path is None:
        raise NotFound(f"The dashboard has no file '{name}'; open /ui/.")
    return _file_response(request, path)


async def ui_doc(request: web.Request) -> web.StreamResponse:
    """``GET /ui/docs/<name>.md``: a protocol document, as plain text."""
    name = request.match_info["name"]
    path = _DOC_FILES.get(name)
    if path is None:
        names = ", ".join(sorted(_DOC_FILES)) or "none"
        raise NotFound(f"There is no document '{name}' (documents: {names}).")
    return _file_response(request, path)


def _one_of(names: dict[str, Path]) -> str:
    """A route pattern matching exactly these file names (never an empty match)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def add_routes(app: web.Application) -> None:
    """Add the dashboard's routes to the store's application.

    The routes match only the files that exist: aiohttp resolves ``/ui/...`` before
    ``/{dsid}/...`` whatever the order, and a datasource named ``ui`` keeps ``/ui/job``.
    """
    app.router.add_get("/ui", ui_root, name="ui_root")
    app.router.add_get("/ui/", ui_index, name="ui_index")
    app.router.add_get(f"/ui/docs/{{name:{_one_of(_DOC_FILES)}}}", ui_doc, name="ui_doc")
    app.router.add_get(f"/ui/{{name:{_one_of(_UI_FILES)}}}", ui_file, name="ui_file")
