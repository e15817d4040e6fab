"""Regenerate `shipped_downs.json` from git's history of `sql/*.down.sql` and the files as they
are: `make shipped-downs` (python -m x402db.migrate.shipped --write).

The list is data shipped inside the package, because the engine must know every down an earlier
release applied rows with, whatever the checkout's sql/ holds by then. It is derived, never typed:
each version's checksums are those of every committed text of its down, oldest first, then the
working file's when it is not committed yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from .. import ROOT, SQL_DIR
from .files import SHIPPED_DOWNS_FILE, checksum, shipped_downs

ABOUT = (
    "SHA-256 of every down file this bundle ever shipped, oldest first, per version; derived from "
    "`git log -p -- sql/*.down.sql` by `make shipped-downs`. A ledger row written before down checksums "
    "were recorded may be reverted only by one of these; its next `up` records the newest."
)


def _git(*args: str) -> str | None:
    """git's output, or None outside a git checkout (a copy of the tree, an unpacked release)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.decode("utf-8")


def _history(rel: str) -> list[str] | None:
    commits = _git("log", "--format=%H", "--", rel)
    if commits is None:
        return None
    texts = [_git("show", f"{c}:{rel}") for c in reversed(commits.split())]
    return [checksum(t) for t in texts if t is not None]


def derive(sql_dir: Path = SQL_DIR) -> dict[str, list[str]]:
    """Per version: git's history of the down when there is one, else what the list already
    holds (never forgotten: an earlier release may have applied rows with it), then the file."""
    kept = shipped_downs()
    result: dict[str, list[str]] = {}
    for path in sorted(sql_dir.glob("*.down.sql")):
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
        history = _history(rel)
        sums: list[str] = []
        for sha in history if history is not None else list(kept.get(path.name[:3], ())):
            if sha not in sums:
                sums.append(sha)
        current = checksum(path.read_text(encoding="utf-8"))
        if current not in sums:
            sums.append(current)
        elif sums[-1] != current:  # a down restored to an earlier text: that text is the newest now
            sums.remove(current)
            sums.append(current)
        result[path.name[:3]] = sums
    return result


def render(data: dict[str, list[str]]) -> str:
    return json.dumps({"about": ABOUT, **data}, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x402db.migrate.shipped", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {SHIPPED_DOWNS_FILE.name} (default: check it)")
    args = parser.parse_args(argv)
    text = render(derive())
    if args.write:
        tmp = SHIPPED_DOWNS_FILE.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(SHIPPED_DOWNS_FILE)
        print(f"wrote {SHIPPED_DOWNS_FILE.relative_to(ROOT)}")
        return 0
    if SHIPPED_DOWNS_FILE.read_text(encoding="utf-8") != text:
        print(f"{SHIPPED_DOWNS_FILE.relative_to(ROOT)} is stale: run `make shipped-downs`")
        return 1
    print(f"{SHIPPED_DOWNS_FILE.relative_to(ROOT)} is current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
