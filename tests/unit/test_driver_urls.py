"""The http driver's URL normalisation and allow-list of prefixes."""

from __future__ import annotations

import pytest

from jobqueue_store.drivers.urls import AllowList, UrlRefused, normalise


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://Api.Example.COM:80/a/./b/../c?x=1#frag", "http://api.example.com/a/c?x=1"),
        ("https://h.example:443", "https://h.example/"),
        ("http://h.example/%7Euser/%2e%2E/x", "http://h.example/x"),
        ("http://h.example/a/..", "http://h.example/"),
        ("http://h.example/../../etc", "http://h.example/etc"),
        ("http://h.example/a%3fb%c3%a4", "http://h.example/a%3Fb%C3%A4"),
        ("http://h.example/\u00e4", "http://h.example/%C3%A4"),
        ("http://[::0001]:8080/p", "http://[::1]:8080/p"),
        ("http://127.0.0.1./x", "http://127.0.0.1/x"),
        ("http://b\u00fccher.example/", "http://xn--bcher-kva.example/"),
        ("http://h.example/q?a=%41&b=c d".replace(" ", ""), "http://h.example/q?a=A&b=cd"),
    ],
)
def test_urls_are_rebuilt_in_one_canonical_form(url: str, canonical: str) -> None:
    assert str(normalise(url)) == canonical


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://allowed.example@evil.example/", "user name or password"),
        ("http://user:pw@allowed.example/", "user name or password"),
        ("http://evil.example\\@allowed.example/", "backslash"),
        ("http://allowed.example/a\\..\\b", "backslash"),
        ("http://allowed.example/ok/..%2fsecret", "encoded slash"),
        ("http://allowed.example/ok/..%5Csecret", "encoded slash or backslash"),
        ("http://allowed.example/ok/..;/secret", "read as '..'"),
        ("http://allowed.example/ok/%2e%2e;x/secret", "read as '..'"),
        ("http://allowed.example/a%zz", "%XX"),
        ("http://allowed.example/a b", "space"),
        ("http://allowed.example/a\nb", "control character"),
        ("ftp://allowed.example/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("//allowed.example/", "http:// or https://"),
        ("http:///path", "no host"),
        ("http://allowed.example:99999/", "not a valid URL"),
        ("http://allowed.example:port/", "not a valid URL"),
        ("http://%61llowed.example/", "percent-escape in its host"),
        ("http://a..b/", "host name"),
        ("http://" + "a" * 9000, "longer than"),
    ],
)
def test_ambiguous_urls_are_refused_with_a_sentence(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        normalise(url)


ALLOW = AllowList(["http://allowed.example/api", "https://hooks.example:8443/ci/", "http://[::1]/"])


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://allowed.example/api", True),
        ("http://allowed.example:80/api/x?y=1", True),
        ("http://ALLOWED.example./api/x", True),
        ("http://allowed.example/api/./x/../y", True),
        ("http://allowed.example/apix", False),
        ("http://allowed.example/api/../admin", False),
        ("http://allowed.example/api/%2E%2E/admin", False),
        ("http://allowed.example/", False),
        ("https://allowed.example/api", False),
        ("http://allowed.example:8080/api", False),
        ("http://allowed.example.evil.example/api", False),
        ("http://evil.example/allowed.example/api", False),
        ("http://evil.example/?http://allowed.example/api", False),
        ("https://hooks.example:8443/ci/build", True),
        ("https://hooks.example:8443/ci", False),
        ("https://hooks.example/ci/build", False),
        ("http://[::1]/anything", True),
        ("http://[::1]:8080/anything", False),
    ],
)
def test_allow_list_matches_scheme_host_port_and_path_at_a_segment_boundary(
    url: str, allowed: bool
) -> None:
    assert ALLOW.allows(normalise(url)) is allowed


def test_allow_list_refuses_prefixes_that_are_not_plain_urls() -> None:
    with pytest.raises(ValueError, match="has a query or fragment"):
        AllowList(["http://allowed.example/api?key=1"])
    with pytest.raises(ValueError, match="user name or password"):
        AllowList(["http://user@allowed.example/"])
    with pytest.raises(ValueError, match="http:// or https://"):
        AllowList(["allowed.example"])
    assert not AllowList([])
