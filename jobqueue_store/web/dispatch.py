"""The application's request handler: routes matched by splitting the path, the store middleware
called directly.

aiohttp's ``Application._handle`` finds a route by trying the regular expression of every
resource under the path's prefix in turn, then runs the handler through a cached middleware
chain with a wrapper of its own; for the store's short, fixed-shape paths that costs more than
the rest of a status read. :class:`Dispatcher` matches the same routes by comparing path
segments, and gives every request it cannot match with certainty (percent-escapes, an
``Expect`` header, the dashboard's files, no match) to ``Application._handle``, so what it
answers is what aiohttp would answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo

from jobqueue_store.web.middleware import is_plain_path, store_middleware

TRAILING = "{trailing_slash}"
"""How the optional trailing slash every protocol route takes appears in its formatter."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """A route's path: the literal segments to compare and the segments that are parameters."""

    route: AbstractRoute
    literals: tuple[tuple[int, str], ...]
    params: tuple[tuple[str, int], ...]


def _shape(route: AbstractRoute) -> tuple[_Shape, int, int] | None:
    """The route's shape, segment count and aiohttp index depth; ``None`` unless every segment of
    its path is a literal or a whole-segment parameter, followed by the optional slash."""
    formatter = route.resource.get_info().get("formatter") if route.resource else None
    if not isinstance(formatter, str) or not formatter.endswith(TRAILING):
        return None
    parts = formatter[: -len(TRAILING)].split("/")
    if parts[0] != "" or len(parts) < 2:
        return None
    literals: list[tuple[int, str]] = []
    params: list[tuple[str, int]] = []
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("{") and part.endswith("}") and part.count("{") == 1:
            name = part[1:-1]
            if not name.isidentifier():
                return None  # a parameter with its own expression
            params.append((name, index))
        elif not part or "{" in part or "}" in part:
            return None
        else:
            literals.append((index, part))
    # aiohttp indexes a resource under its path up to the last '/' before the first parameter
    # and tries longer prefixes of a request's path first: the depth orders the candidates.
    first_param = min((i for _, i in params), default=len(parts))
    depth = min(first_param, len(parts) - 1) - 1
    return _Shape(route, tuple(literals), tuple(params)), len(parts), depth


class Dispatcher:
    """The request handler of :class:`~jobqueue_store.web.server.StoreServer` (see the module's
    docstring). Built after the application's routes are added."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._fallback: Callable[[web.Request], Awaitable[web.StreamResponse]] = app._handle
        table: dict[tuple[str, int], list[tuple[int, int, _Shape]]] = {}
        foreign: set[str] = set()
        for order, route in enumerate(app.router.routes()):
            found = _shape(route)
            if found is None:
                # Paths whose first segment leads to such a route are left to aiohttp.
                canonical = route.resource.canonical if route.resource else ""
                foreign.add(canonical.split("/")[1] if canonical.count("/") else "")
                continue
            shape, count, depth = found
            table.setdefault((route.method, count), []).append((-depth, order, shape))
        self._table = {key: [s for *_, s in sorted(rows)] for key, rows in table.items()}
        self._foreign = frozenset(foreign)

    def match(self, method: str, path: str) -> tuple[AbstractRoute, dict[str, str]] | None:
        """The route and parameters of ``method path`` (``path`` as the request line has it,
        without the query), or ``None`` when aiohttp should decide: for paths with escapes,
        dot segments, a fragment or other than ASCII characters, which aiohttp normalises."""
        if not is_plain_path(path):
            return None
        slash = ""
        if len(path) > 1 and path[-1] == "/":
            path, slash = path[:-1], "/"
        parts = path.split("/")
        shapes = self._table.get((method, len(parts)))
        if shapes is None or parts[0] != "" or parts[1] in self._foreign:
            return None
        for shape in shapes:
            for index, literal in shape.literals:
                if parts[index] != literal:
                    break
            else:
                values = {"trailing_slash": slash}
                for name, index in shape.params:
                    value = parts[index]
                    if not value or "{" in value or "}" in value:
                        return None
                    values[name] = value
                return shape.route, values
        return None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        """Answer ``request``."""
        path = request.raw_path
        query = path.find("?")
        found = self.match(request.method, path if query < 0 else path[:query])
        if found is None or hdrs.EXPECT in request.headers:
            response = await self._fallback(request)
        else:
            route, values = found
            info = UrlMappingMatchInfo(values, route)
            info.add_app(self._app)
            info.freeze()
            request._match_info = info
            response = await store_middleware(request, route.handler, self._app)
        if getattr(request.protocol, "close_after_response", False) and not response.prepared:
            response.force_close()
        return response
