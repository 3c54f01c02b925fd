"""URL normalisation and an allow-list of URL prefixes, for the http driver.

A URL is checked in the form that is then fetched: it is parsed once, refused if it is ambiguous
(a user name or password, a backslash, a space or control character, an encoded slash, a ``..;``
segment, a scheme other than http and https), and rebuilt in one canonical form: scheme and host
in lower case, the default port dropped, percent-escapes of unreserved characters decoded and the
others in upper case, ``.`` and ``..`` segments resolved, the fragment dropped. The allow-list
compares that form with its prefixes, normalised the same way: same scheme, host and port, and
a path that starts with the prefix's path at a segment boundary (``/api`` allows ``/api`` and
``/api/x``, not ``/apix``; ``/api/`` allows what is below it). The driver fetches exactly the
rebuilt URL, so no other parser gets a say.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

__all__ = ["AllowList", "NormalURL", "UrlRefused", "normalise"]

MAX_URL_LENGTH = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


class UrlRefused(ValueError):
    """A URL that is not a plain, unambiguous http(s) URL; the message says why."""


@dataclass(frozen=True, slots=True)
class NormalURL:
    """A URL in canonical form (see the module documentation)."""

    scheme: str
    host: str
    port: int | None
    """None for the scheme's default port."""
    path: str
    query: str

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{host}{port}"

    def __str__(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.origin}{self.path}{query}"


def _host(raw: str, text: str) -> str:
    if "%" in raw:
        raise UrlRefused(f"{text!r} has a percent-escape in its host name")
    if ":" in raw:
        try:
            return str(ipaddress.IPv6Address(raw))
        except ValueError:
            raise UrlRefused(f"{text!r} does not have a valid IPv6 address") from None
    host = raw.rstrip(".") if raw.endswith(".") and not raw.endswith("..") else raw
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlRefused(f"{text!r} does not have a valid host name") from None
    if not _HOST_NAME.match(host):
        raise UrlRefused(f"{text!r} does not have a valid host name")
    return host


def _unescape_unreserved(part: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = chr(int(match[1], 16))
        return char if char in _UNRESERVED else "%" + match[1].upper()

    return _ESCAPE.sub(one, part)


def _path(raw: str, text: str) -> str:
    path = _unescape_unreserved(raw or "/")
    upper = path.upper()
    if "%2F" in upper or "%5C" in upper:
        raise UrlRefused(
            f"{text!r} has an encoded slash or backslash in its path, which servers read "
            "differently; write the path plainly"
        )
    path = quote(path, safe=_PATH_SAFE)
    segments = path.split("/")[1:]
    out: list[str] = []
    for segment in segments:
        if segment.split(";", 1)[0] in (".", "..") and segment not in (".", ".."):
            raise UrlRefused(f"{text!r} has a path segment {segment!r} that servers read as '..'")
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def normalise(text: str) -> NormalURL:
    """``text`` in canonical form; :class:`UrlRefused` with a sentence if it is not acceptable."""
    if len(text) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_CHARS.search(text):
        raise UrlRefused(f"{text!r} has a space, control character or backslash; escape it")
    if _BAD_ESCAPE.search(text):
        raise UrlRefused(f"{text!r} has a '%' that does not start a %XX escape")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"{text!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlRefused(f"{text!r} is not an http:// or https:// URL")
    if not parts.netloc or not parts.hostname:
        raise UrlRefused(f"{text!r} has no host")
    if "@" in parts.netloc:
        raise UrlRefused(
            f"{text!r} has a user name or password before its host; send credentials in headers"
        )
    if port == DEFAULT_PORTS[scheme]:
        port = None
    query = quote(_unescape_unreserved(parts.query), safe=_QUERY_SAFE)
    return NormalURL(scheme, _host(parts.hostname, text), port, _path(parts.path, text), query)


class AllowList:
    """The URL prefixes an operator allows (see the module documentation)."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes: list[NormalURL] = []
        for text in prefixes:
            try:
                prefix = normalise(text)
            except UrlRefused as exc:
                raise ValueError(f"allowed URL prefix: {exc}") from None
            if prefix.query or "?" in text or "#" in text:
                raise ValueError(
                    f"allowed URL prefix {text!r} has a query or fragment; give scheme, host, "
                    "port and path only"
                )
            self.prefixes.append(prefix)

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def __str__(self) -> str:
        return ", ".join(str(p) for p in self.prefixes)

    def allows(self, url: NormalURL) -> bool:
        """True if ``url`` is under one of the prefixes."""
        for prefix in self.prefixes:
            if (url.scheme, url.host, url.port) != (prefix.scheme, prefix.host, prefix.port):
                continue
            if prefix.path.endswith("/"):
                if url.path.startswith(prefix.path):
                    return True
            elif url.path == prefix.path or url.path.startswith(prefix.path + "/"):
                return True
        return False
