"""The documentation's links: README.md and docs/*.md link only to files of this repository (that
exist, with the anchor they name) and to public standards and libraries."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Public standards bodies and the homes of the libraries the project uses.
ALLOWED_HOSTS = frozenset(
    {
        "pypi.org",
        "json-schema.org",
        "www.rfc-editor.org",
        "datatracker.ietf.org",
        "www.w3.org",
        "developer.mozilla.org",
        "spec.openapis.org",
        "prometheus.io",
        "docs.aiohttp.org",
        "www.postgresql.org",
        "www.sqlite.org",
        "sqlite.org",
        "playwright.dev",
    }
)

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def links(text: str) -> list[str]:
    """The link targets of a Markdown text, code blocks and code spans left out."""
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text) + _AUTOLINK.findall(text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeats get -1, -2... as on GitHub)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_the_documents_exist() -> None:
    names = {p.name for p in DOCUMENTS}
    assert {"README.md", "protocol.md", "operations.md"} <= names


def test_slugs_follow_github() -> None:
    assert slug("Many workers on one datasource: leases") == "many-workers-on-one-datasource-leases"
    assert slug("Health, readiness and metrics") == "health-readiness-and-metrics"
    assert slug("SQLite `synchronous`") == "sqlite-synchronous"
    assert links("see [a](x.md#b) and `[c](d)` and ![i](s.png)\n```\n[e](f)\n```") == [
        "x.md#b",
        "s.png",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_link_resolves_inside_the_repository_or_to_a_public_standard(
    document: Path,
) -> None:
    problems: list[str] = []
    found = links(document.read_text(encoding="utf-8"))
    assert found, f"{document.name} has no links: the extractor is broken"
    for target in found:
        parts = urlsplit(target)
        if parts.scheme:
            if parts.scheme != "https" or parts.hostname not in ALLOWED_HOSTS:
                problems.append(f"{target}: leaves the repository (not an allowed public host)")
            continue
        path = document if not parts.path else (document.parent / unquote(parts.path)).resolve()
        if not path.is_relative_to(ROOT):
            problems.append(f"{target}: points outside the repository")
            continue
        if not path.exists():
            problems.append(f"{target}: no such file")
            continue
        if parts.fragment:
            if path.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif parts.fragment not in anchors(path):
                problems.append(f"{target}: no heading '#{parts.fragment}' in {path.name}")
    assert problems == [], f"{document.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_documents_cite_no_document_a_reader_does_not_have(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    assert not re.search(r"\bSPEC\b", text), "cite docs/ instead of a contract outside the repo"
    assert "../shared" not in text
