"""Tokens: mint and verify macaroons (protocol.md §4) -> ``Principal``. No HTTP here.

``TokenAuthority.verify`` answers who the bearer is (401 ``Unauthorized`` for anything that is
not a valid token) and ``TokenAuthority.authorize`` whether the request-dependent caveats
(``method``, ``path``, ``dsid``) allow one request (403 ``Forbidden``). Role rules (which role may
use which endpoint) belong to the web layer.

Verification follows PITFALLS: pymacaroons ORs its ``satisfy_general`` callbacks, so each callback
accepts only its own caveat kind, parses it strictly, compares, and never raises. Identity comes
only from caveats of a token whose signature verified.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

from pymacaroons import Macaroon, Verifier

from jobqueue_store.errors import Forbidden, Unauthorized
from jobqueue_store.keys import KeyRing
from jobqueue_store.models import CLIENT_ID_RE, DSID_RE, Role

__all__ = [
    "MAX_TOKEN_LENGTH",
    "Principal",
    "TokenAuthority",
    "extract_token",
    "format_time",
    "parse_time",
]

MAX_TOKEN_LENGTH = 16384
"""Longer tokens are refused before decoding."""

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_METHOD_RE = re.compile(r"[A-Za-z]{1,32}")
_PATH_PATTERN_RE = re.compile(r"[\x21-\x7e]{1,1024}")  # printable ASCII, no space


def parse_time(value: str) -> float:
    """Parse an RFC 3339 timestamp with a zone (``Z`` or ``+hh:mm``) to epoch seconds.

    Raises ``ValueError`` for anything else (no zone, a space instead of ``T``, out-of-range
    fields).
    """
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        raise ValueError(
            f"{value!r} is not an RFC 3339 timestamp with a zone, like 2026-11-24T07:00:00Z."
        )
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if m.group(8):
        tz = UTC
    else:
        hours, minutes = int(m.group(10)), int(m.group(11))
        if hours > 23 or minutes > 59:
            raise ValueError(f"{value!r} has an invalid zone offset.")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        dt = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid date and time.") from None
    fraction = float(m.group(7)) if m.group(7) else 0.0
    return dt.timestamp() + fraction


def format_time(epoch: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with whole seconds, e.g. ``2026-11-24T07:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


@functools.lru_cache(maxsize=1024)
def _path_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified bearer of a token: its identity and the request-dependent caveats."""

    role: Role
    client: str | None
    key_id: str
    dsid_sets: tuple[frozenset[str], ...] = ()
    """Each ``dsid`` caveat's list; a datasource must be in every one."""
    paths: tuple[str, ...] = ()
    """Each ``path`` caveat's pattern; a request path must match every one."""
    method_sets: tuple[frozenset[str], ...] = ()
    """Each ``method`` caveat's list (upper case); a method must be in every one."""
    expires_at: float | None = None
    """Epoch seconds of the earliest ``time <`` caveat."""

    def allows_dsid(self, dsid: str) -> bool:
        """Whether every ``dsid`` caveat lists ``dsid``."""
        return all(dsid in s for s in self.dsid_sets)

    def allows_method(self, method: str) -> bool:
        """Whether every ``method`` caveat lists ``method`` (case-insensitive)."""
        method = method.upper()
        return all(method in s for s in self.method_sets)

    def allows_path(self, path: str) -> bool:
        """Whether ``path`` fully matches every ``path`` caveat (``*``: any run of characters)."""
        return all(_path_regex(p).fullmatch(path) is not None for p in self.paths)

    def dsid_filter(self, all_ids: Iterable[str]) -> list[str]:
        """The datasources of ``all_ids`` this principal may use, in their order."""
        return [d for d in all_ids if self.allows_dsid(d)]


# -- caveat syntax (shared by mint and verify) ---------------------------------------------------


def _parse_dsids(value: str) -> frozenset[str]:
    items = value.split(",")
    if not all(DSID_RE.fullmatch(d) for d in items):
        raise ValueError("a 'dsid' caveat must list datasource ids separated by commas")
    return frozenset(items)


def _parse_methods(value: str) -> frozenset[str]:
    items = value.split(",")
    if not all(_METHOD_RE.fullmatch(m) for m in items):
        raise ValueError("a 'method' caveat must list HTTP methods separated by commas")
    return frozenset(m.upper() for m in items)


def _parse_path(value: str) -> str:
    if not _PATH_PATTERN_RE.fullmatch(value):
        raise ValueError("a 'path' caveat must be a non-empty pattern without spaces")
    return value


def _parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"unknown role {value!r}: use client, driver or admin") from None


def _parse_client(value: str) -> str:
    if not CLIENT_ID_RE.fullmatch(value):
        raise ValueError("a 'client' caveat must name a client id of A-Z a-z 0-9 . _ ~ : @ -")
    return value


_PARSERS: dict[str, Callable[[str], object]] = {
    "target = ": lambda v: v,
    "role = ": _parse_role,
    "client = ": _parse_client,
    "dsid = ": _parse_dsids,
    "path = ": _parse_path,
    "method = ": _parse_methods,
    "time < ": parse_time,
}


@dataclass(slots=True)
class _Seen:
    """What the callbacks of one verification accepted (trusted only if the signature holds)."""

    targets: int = 0
    roles: set[Role] = field(default_factory=set)
    clients: set[str] = field(default_factory=set)
    dsid_sets: list[frozenset[str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    method_sets: list[frozenset[str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _short(predicate: str) -> str:
    return repr(predicate if len(predicate) <= 80 else predicate[:77] + "...")


class TokenAuthority:
    """Mints tokens from a key ring and verifies them, caching verified tokens."""

    def __init__(
        self,
        keyring: KeyRing,
        store_name: str,
        *,
        cache_size: int = 10000,
        clock_skew: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """An authority for the store named ``store_name``.

        ``clock_skew`` seconds of grace are allowed after a ``time <`` caveat (0: strict);
        ``clock`` gives the current epoch time (tests replace it).
        """
        if not store_name or any(c.isspace() for c in store_name):
            raise ValueError("The store name must be non-empty and contain no whitespace.")
        if clock_skew < 0:
            raise ValueError("clock_skew must not be negative.")
        self.keyring = keyring
        self.store_name = store_name
        self.cache_size = max(0, cache_size)
        self.clock_skew = clock_skew
        self._clock = clock
        # token -> (principal, usable until (epoch s), the key's secret object when verified)
        self._cache: OrderedDict[str, tuple[Principal, float, bytes]] = OrderedDict()

    # -- minting --------------------------------------------------------------------------------

    def mint(
        self,
        role: Role,
        *,
        client: str | None = None,
        dsids: Sequence[str] | None = None,
        ttl: float | None = 86400,
        extra_caveats: Sequence[str] = (),
    ) -> str:
        """A serialized macaroon from the current root key with ``target``, ``role``,
        ``client`` (required for role client), ``dsid`` (when given) and ``time <`` caveats
        (none when ``ttl`` is None: the token never expires), then ``extra_caveats`` (each must
        be a caveat this store understands)."""
        role = Role(role)
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds (None: no expiry).")
        caveats = [f"target = {self.store_name}", f"role = {role.value}"]
        if client is not None:
            _parse_client(client)
            caveats.append(f"client = {client}")
        elif role is Role.CLIENT:
            raise ValueError("A token for role client needs a client id.")
        if dsids is not None:
            if isinstance(dsids, str):
                raise ValueError("dsids must be a sequence of datasource ids, not one string.")
            value = ",".join(dsids)
            _parse_dsids(value)
            caveats.append(f"dsid = {value}")
        if ttl is not None:
            caveats.append(f"time < {format_time(self._clock() + ttl)}")
        for caveat in extra_caveats:
            for prefix, parse in _PARSERS.items():
                if caveat.startswith(prefix):
                    parse(caveat[len(prefix) :])
                    break
            else:
                raise ValueError(f"Unknown caveat {caveat!r}: the store would refuse the token.")
            caveats.append(caveat)
        key_id = self.keyring.current
        macaroon = Macaroon(
            location=self.store_name,
            identifier=key_id,
            key=self.keyring.current_secret,
        )
        for caveat in caveats:
            macaroon.add_first_party_caveat(caveat)
        token: str = macaroon.serialize()
        return token

    # -- verification ---------------------------------------------------------------------------

    def verify(self, token: str) -> Principal:
        """The principal of a valid ``token``; ``Unauthorized`` (saying why) for anything else."""
        now = self._clock()
        entry = self._cache.get(token)
        if entry is not None:
            principal, until, secret = entry
            if now < until and self.keyring.get(principal.key_id) is secret:
                self._cache.move_to_end(token)
                return principal
            del self._cache[token]
        principal, secret = self._verify(token, now)
        if self.cache_size:
            until = (
                principal.expires_at + self.clock_skew
                if principal.expires_at is not None
                else float("inf")
            )
            self._cache[token] = (principal, until, secret)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return principal

    def clear_cache(self) -> None:
        """Forget every cached verification."""
        self._cache.clear()

    def _verify(self, token: str, now: float) -> tuple[Principal, bytes]:
        if not isinstance(token, str) or not token:
            raise Unauthorized("The token is empty: send a macaroon as 'Authorization: Bearer'.")
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized(f"The token is longer than {MAX_TOKEN_LENGTH} characters.")
        try:
            macaroon = Macaroon.deserialize(token)
            identifier = macaroon.identifier_bytes.decode("utf-8")
            caveats = list(macaroon.caveats)
            third_party = any(not c.first_party() for c in caveats)
        except Exception:
            raise Unauthorized("The token could not be decoded: it is not a macaroon.") from None
        secret = self.keyring.get(identifier)
        if secret is None:
            raise Unauthorized(
                "The token was made with a root key this store does not hold "
                "(revoked, or from another store)."
            )
        if third_party:
            raise Unauthorized("The token has a third-party caveat, which this store refuses.")

        seen = _Seen()
        verifier = Verifier()
        for callback in self._callbacks(seen, now):
            verifier.satisfy_general(callback)
        try:
            ok = verifier.verify(macaroon, secret)
        except Exception:
            ok = False
        if not ok or seen.failures:
            if seen.failures:
                raise Unauthorized(seen.failures[0])
            raise Unauthorized("The token's signature is invalid.")

        if seen.targets == 0:
            raise Unauthorized("The token has no 'target' caveat naming this store.")
        if not seen.roles:
            raise Unauthorized("The token has no 'role' caveat.")
        if len(seen.roles) > 1:
            raise Unauthorized("The token's 'role' caveats name different roles.")
        if len(seen.clients) > 1:
            raise Unauthorized("The token's 'client' caveats name different clients.")
        (role,) = seen.roles
        client = next(iter(seen.clients), None)
        if role is Role.CLIENT and client is None:
            raise Unauthorized("A token for role client needs a 'client' caveat.")
        principal = Principal(
            role=role,
            client=client,
            key_id=identifier,
            dsid_sets=tuple(seen.dsid_sets),
            paths=tuple(seen.paths),
            method_sets=tuple(seen.method_sets),
            expires_at=min(seen.times) if seen.times else None,
        )
        return principal, secret

    def _callbacks(self, seen: _Seen, now: float) -> list[Callable[[str], bool]]:
        """One strict callback per caveat kind, plus one noting unknown caveats (never True)."""
        store_name = self.store_name
        skew = self.clock_skew

        def target(value: str) -> None:
            if value != store_name:
                raise ValueError(f"the token is for another store ({value!r})")
            seen.targets += 1

        def role(value: str) -> None:
            seen.roles.add(_parse_role(value))

        def client(value: str) -> None:
            seen.clients.add(_parse_client(value))

        def dsid(value: str) -> None:
            seen.dsid_sets.append(_parse_dsids(value))

        def path(value: str) -> None:
            seen.paths.append(_parse_path(value))

        def method(value: str) -> None:
            seen.method_sets.append(_parse_methods(value))

        def expiry(value: str) -> None:
            t = parse_time(value)
            if now >= t + skew:
                raise ValueError("the token has expired: get a new one")
            seen.times.append(t)

        handlers: dict[str, Callable[[str], None]] = {
            "target = ": target,
            "role = ": role,
            "client = ": client,
            "dsid = ": dsid,
            "path = ": path,
            "method = ": method,
            "time < ": expiry,
        }

        def make(prefix: str, handler: Callable[[str], None]) -> Callable[[str], bool]:
            def callback(predicate: Any) -> bool:
                try:
                    if not isinstance(predicate, str) or not predicate.startswith(prefix):
                        return False
                    handler(predicate[len(prefix) :])
                except Exception as exc:
                    seen.failures.append(f"Caveat {_short(predicate)} refused: {exc}.")
                    return False
                return True

            return callback

        def unknown(predicate: Any) -> bool:
            try:
                if not isinstance(predicate, str) or not any(
                    predicate.startswith(p) for p in handlers
                ):
                    seen.failures.append(
                        f"The token has a caveat this store does not understand: "
                        f"{_short(str(predicate))}."
                    )
            except Exception:
                pass
            return False

        return [make(p, h) for p, h in handlers.items()] + [unknown]

    # -- authorization --------------------------------------------------------------------------

    def authorize(self, principal: Principal, *, method: str, path: str, dsid: str | None) -> None:
        """Raise ``Forbidden`` unless the ``method``, ``path`` and ``dsid`` caveats allow this
        request. ``path`` is the raw (percent-encoded) request path; it is decoded and matched
        without its trailing slash or with one. A path with ``..`` or ``.`` segments or an
        encoded slash is refused."""
        if principal.method_sets and not principal.allows_method(method):
            raise Forbidden(f"The token's 'method' caveat does not allow {method.upper()}.")
        if dsid is not None and principal.dsid_sets and not principal.allows_dsid(dsid):
            raise Forbidden(f"The token's 'dsid' caveat does not allow the datasource {dsid!r}.")
        raw = path.split("?", 1)[0] if "?" in path else path
        # A '.' or '..' segment needs "/." (the path starts with "/"); an encoded slash needs
        # "%": most paths have neither, and no path caveat to match.
        if not principal.paths and "%" not in raw and "/." not in raw:
            return
        if "%2f" in raw.lower() or "%5c" in raw.lower():
            raise Forbidden("The request path contains an encoded slash, which is refused.")
        try:
            decoded = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            raise Forbidden("The request path is not valid percent-encoded UTF-8.") from None
        if any(segment in (".", "..") for segment in decoded.split("/")):
            raise Forbidden("The request path contains '.' or '..' segments, which are refused.")
        if principal.paths:
            bare = decoded.rstrip("/") or "/"
            candidates = (bare,) if bare == "/" else (bare, bare + "/")
            if not any(principal.allows_path(c) for c in candidates):
                raise Forbidden("The token's 'path' caveat does not allow this request path.")


def token_fingerprint(token: str) -> str:
    """A short, non-secret fingerprint of a token, for logs (never log the token itself)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lname = name.lower()
        for key, val in headers.items():
            if key.lower() == lname:
                return val
    return value


def extract_token(
    headers: Mapping[str, str], query: Mapping[str, str], allow_query: bool
) -> str | None:
    """The token of a request: ``Authorization: Bearer <t>``, else ``X-Api-Key: <t>``, else
    (only if ``allow_query``, for websockets) the query parameter ``token``. None if absent."""
    auth = _header(headers, "Authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = _header(headers, "X-Api-Key")
    if api_key and api_key.strip():
        return api_key.strip()
    if allow_query:
        from_query = query.get("token")
        if from_query and from_query.strip():
            return from_query.strip()
    return None
