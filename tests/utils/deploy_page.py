"""docs/runbooks/deploy.md's shell blocks, by the marker above each (`<!-- page: NAME -->`), as a
reader copies them."""

from __future__ import annotations

import shlex

from x402db import ROOT

PAGE = ROOT / "docs" / "runbooks" / "deploy.md"


def page_block(name: str) -> str:
    text = PAGE.read_text()
    marker = f"<!-- page: {name} -->\n"
    assert marker in text, f"the deploy page lost its {name!r} block"
    return text.split(marker, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]


def page_command(name: str, starts: str) -> list[str]:
    """The words of the one command of block `name` that starts with `starts`, continuation lines
    joined and comments dropped, as the shell would read it."""
    joined = page_block(name).replace("\\\n", " ")
    line = next(line for line in joined.splitlines() if line.startswith(starts))
    return shlex.split(line, comments=True)
