"""The README stays a front door and the docs stay linked: a README that grows back into a
reference, or a relative link to a page or heading that moved, fails here rather than on a
reader."""

from __future__ import annotations

import re
from pathlib import Path

from x402db import ROOT

README = ROOT / "README.md"
MAX_README_LINES = 160
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text a reader follows links in: code blocks and code spans are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercased, punctuation other than
    hyphens and underscores dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub renders for a page: headings (repeats get -1, -2, ...) and HTML ids."""
    seen: dict[str, int] = {}
    out = set(_HTML_ANCHOR.findall(path.read_text()))
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such heading in {dest.relative_to(ROOT)}")
    return broken


def test_the_readme_is_a_front_door():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move the detail into docs/ (docs/README.md)"


def test_every_relative_link_reaches_its_file_and_heading():
    broken = {str(p.relative_to(ROOT)): b for p in PAGES if (b := broken_links(p))}
    assert not broken, broken


def test_the_anchor_rule_is_githubs():
    """The slugs GitHub gives the kinds of heading these pages use: code spans, punctuation,
    dashes."""
    assert (
        _slug("Reading a plan (`make plan`, `scripts/migrate.py plan`)")
        == "reading-a-plan-make-plan-scriptsmigratepy-plan"
    )
    assert _slug("Ledger states") == "ledger-states"
    assert _slug("The toggle hazard: upsert vs update") == "the-toggle-hazard-upsert-vs-update"
    assert _slug("0005 — one stack") == "0005--one-stack"


def test_a_repeated_heading_gets_a_numbered_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Deploy\n\n```sh\n# not a heading\n```\n\n## Deploy\n\n## Deploy\n")
    assert anchors(page) == {"deploy", "deploy-1", "deploy-2"}
