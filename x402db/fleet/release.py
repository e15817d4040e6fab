"""The release a fleet rolls out: a short digest of everything that decides what a deploy does,
the migrations (sql/), the package (x402db/), Pulumi.yaml and the program (__main__.py). Evidence is recorded against it,
and promotion compares it, so it must be the same in every checkout of the same tree: relative
paths and bytes only, never mtimes, absolute paths or caches."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .. import ROOT

TREES = ("sql", "x402db")
FILES = ("Pulumi.yaml", "__main__.py")  # the project and its program
SKIP_DIRS = ("__pycache__",)  # written by the interpreter, different per Python version
SKIP_SUFFIXES = (".pyc", ".pyo")


def files(root: Path = ROOT) -> list[str]:
    """The relative paths the digest covers, sorted."""
    found = [name for name in FILES if (root / name).is_file()]
    for tree in TREES:
        for path in (root / tree).rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and not set(rel.parts) & set(SKIP_DIRS) and path.suffix not in SKIP_SUFFIXES:
                found.append(rel.as_posix())
    return sorted(found)


def digest(root: Path = ROOT) -> str:
    """The first 16 hex digits of sha256 over each file's relative path and bytes, in path order."""
    h = hashlib.sha256()
    for rel in files(root):
        data = (root / rel).read_bytes()
        # Each entry framed by its path and length, so no two trees give the same stream.
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]
