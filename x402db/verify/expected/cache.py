"""The derived expectation on disk, keyed by what it was derived from: every migration file (in
order, by checksum), the scratch server's major version and the code that reads the catalog.
A file is written to a temporary name and renamed, so a killed run never leaves half a file and
two concurrent runs each leave a whole one (the last rename wins; both are valid). A file that
does not parse, or names another key, is a miss."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ...migrate.files import Migration

# Bumped when the JSON layout changes. The code that decides what a derivation finds is hashed
# into the key (CODE): the facts queries, the derivation, the engine that applies the files and
# the access model whose grants it applies, so an edit to any of them is a miss, not a stale hit.
FORMAT = 1
ENV = "X402_EXPECTED_CACHE"
_PACKAGE = Path(__file__).resolve().parents[2]
CODE = (
    _PACKAGE / "verify" / "expected" / "facts.py",
    _PACKAGE / "verify" / "expected" / "derive.py",
    _PACKAGE / "migrate" / "engine.py",
    _PACKAGE / "access.py",
)


def directory() -> Path:
    """X402_EXPECTED_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/x402db/expected."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "x402db" / "expected"


def key(migrations: list[Migration], server_major: int) -> str:
    code = hashlib.sha256(b"".join(p.read_bytes() for p in CODE)).hexdigest()
    material = {
        "format": FORMAT,
        "code": code,
        "server_major": server_major,
        "migrations": [[m.version, m.name, m.checksum, m.down_checksum] for m in migrations],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def path(cache_key: str, where: Path | None = None) -> Path:
    return (where or directory()) / f"{cache_key}.json"


def load(cache_key: str, where: Path | None = None) -> dict[str, Any] | None:
    try:
        data = json.loads(path(cache_key, where).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != cache_key or data.get("format") != FORMAT:
        return None
    return data


def store(cache_key: str, data: dict[str, Any], where: Path | None = None) -> Path:
    target = path(cache_key, where)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cache_key[:16]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({**data, "key": cache_key, "format": FORMAT}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
