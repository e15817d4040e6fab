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
from ..errors import UsageError
from .files import SHIPPED_DOWNS_FILE, checksum

ABOUT = (
    "SHA-256 of every down file this bundle ever shipped, oldest first, per version; derived from "
    "`git log -p -- sql/*.down.sql` by `make shipped-downs`. A ledger row written before down checksums "
    "were recorded may be reverted only by one of these; its next `up` records the newest."
)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise UsageError(
            "make shipped-downs needs git and a git checkout: the list is derived from sql/'s history"
        ) from None
    return out.stdout.decode("utf-8")


def derive(sql_dir: Path = SQL_DIR) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for path in sorted(sql_dir.glob("*.down.sql")):
        rel = path.relative_to(ROOT).as_posix()
        sums: list[str] = []
        for commit in reversed(_git("log", "--format=%H", "--", rel).split()):
            sha = checksum(_git("show", f"{commit}:{rel}"))
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
