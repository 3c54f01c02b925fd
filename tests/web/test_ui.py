"""The dashboard's files as the store serves them (no browser needed): no token, the security
headers, nothing outside the package, nothing inline, and the API's own routes unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobqueue_store.web.ui import UI_DIR, content_security_policy
from tests.web.conftest import Api

PAGES = sorted(p.name for p in UI_DIR.glob("*.html"))
FILES = sorted(p.name for p in UI_DIR.iterdir() if p.is_file())


def test_the_policy_allows_nothing_inline_and_no_other_host() -> None:
    csp = content_security_policy("store.example:8080")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self' ws://store.example:8080 wss://store.example:8080"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    for bad in ("a b", "x;script-src *", "x'", "", None):
        assert "connect-src 'self';" in content_security_policy(bad)
    assert "ws://[::1]:8080" in content_security_policy("[::1]:8080")


@pytest.mark.parametrize("name", FILES)
def test_the_files_are_self_contained(name: str) -> None:
    text = (UI_DIR / name).read_text(encoding="utf-8")
    assert not re.search(r"https?://", text.replace("http://www.w3.org/2000/svg", "")), name
    if name.endswith(".html"):
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline script"
        assert "<style" not in text and " style=" not in text, "inline style"
        assert not re.search(r"\son[a-z]+=", text), "inline event handler"
    if name.endswith(".js"):
        for target in re.findall(r"""^import .* from ["']([^"']+)["']""", text, re.M):
            assert target.startswith("./") and (UI_DIR / target).is_file(), target
        assert "innerHTML" not in text and "eval(" not in text


async def test_files_need_no_token_and_carry_the_headers(api: Api) -> None:
    for name in ["", *FILES]:
        resp = await api.client.get(f"/ui/{name}")
        assert resp.status == 200, name
        headers = resp.headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        if name.endswith(".js"):
            assert resp.content_type == "text/javascript"


@pytest.mark.parametrize("page", PAGES)
async def test_every_file_a_page_names_is_served(api: Api, page: str) -> None:
    html = (UI_DIR / page).read_text(encoding="utf-8")
    for ref in re.findall(r'(?:src|href)="([^"#?]+)', html):
        if ref.startswith("./"):
            ref = ref[2:]
        if not ref:
            continue
        resp = await api.client.get(f"/ui/{ref}")
        assert resp.status == 200, f"{page} names {ref}"


async def test_unknown_files_and_documents_are_404(api: Api) -> None:
    for path in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/docs/nope.md", "/ui/docs/../setup.cfg"):
        body = await api.call("GET", path, None, expect=404)
        assert body["code"] == "not_found"
    text = await api.call("GET", "/ui/docs/protocol.md", None, expect=200)
    assert "# The jobqueue-store protocol" in text
    resp = await api.client.get("/ui", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/ui/"


async def test_data_still_needs_a_token_and_a_datasource_named_ui_keeps_its_routes(
    api: Api,
) -> None:
    for path in ("/openapi.json", "/cat", "/ds1/job/"):
        await api.call("GET", path, None, expect=401)
    await api.declare("ui")
    tok = api.token()
    await api.call("POST", "/ui/job/", tok, {"job": "j1", "request": 1}, expect=201)
    listed = await api.call("GET", "/ui/job", tok, expect=200, schema="job_list")
    assert [j["job"] for j in listed["jobs"]] == ["j1"]
    await api.call("GET", "/ui/job", None, expect=401)


def test_the_documents_ship_with_the_package() -> None:
    docs = Path(UI_DIR).parent / "docs"
    assert (docs / "protocol.md").is_file() and (docs / "operations.md").is_file()
