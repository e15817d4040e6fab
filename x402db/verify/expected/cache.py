"""The derived expectation on disk, keyed by what it was derived from: every migration file (in
order, by checksum), the scratch server's major version and the code that reads the catalog.
A file is written to a temporary name and renamed, so a killed run never leaves half a file and
two concurrent runs each leave a whole one (the last rename wins; both are valid). A file that
does not parse, or names another key, is a miss.

The cache decides what counts as drift, so it is trusted only as far as its files can be: a file
another user owns, or one in a directory others may write to, is a miss (derived anew), never an
answer; a poisoned expectation would otherwise turn drift into "as its SQL defines". A cache that
cannot be written (no home, a full disk, a read-only filesystem) costs a derivation per run, never
the verdict."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ...migrate.files import Migration

# Bumped when the JSON layout changes. The code that decides what a derivation finds is hashed
# into the key (CODE_GLOBS), so an edit to any of it is a miss, not a stale hit.
FORMAT = 1
ENV = "X402_EXPECTED_CACHE"
_PACKAGE = Path(__file__).resolve().parents[2]
# Everything that decides what a derivation finds: how files are read and split, how the engine
# applies them, the grants it adds, what the facts read and skip, and the scratch server.
CODE_GLOBS = ("verify/expected/*.py", "migrate/*.py", "access.py", "private.py", "local/server.py", "local/scratch.py")


def _code() -> list[Path]:
    return sorted(p for g in CODE_GLOBS for p in _PACKAGE.glob(g))


def directory() -> Path:
    """X402_EXPECTED_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/x402db/expected."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # a uid with no passwd entry and no HOME
            base = tempfile.gettempdir()
    return Path(base) / "x402db" / "expected"


def key(migrations: list[Migration], server_major: int) -> str:
    code = hashlib.sha256(b"".join(p.read_bytes() for p in _code())).hexdigest()
    material = {
        "format": FORMAT,
        "code": code,
        "server_major": server_major,
        "migrations": [[m.version, m.name, m.checksum, m.down_checksum] for m in migrations],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def path(cache_key: str, where: Path | None = None) -> Path:
    return (where or directory()) / f"{cache_key}.json"


def trusted(file: Path) -> bool:
    """Only this user may have written the file: it is theirs, and no other user may write to it
    or replace it in its directory."""
    try:
        st, dir_st = file.stat(), file.parent.stat()
    except OSError:
        return False
    me = os.geteuid()
    return st.st_uid == me and not st.st_mode & 0o022 and dir_st.st_uid in (me, 0) and not dir_st.st_mode & 0o022


def load(cache_key: str, where: Path | None = None) -> dict[str, Any] | None:
    file = path(cache_key, where)
    if not trusted(file):
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != cache_key or data.get("format") != FORMAT:
        return None
    return data


def store(cache_key: str, data: dict[str, Any], where: Path | None = None) -> Path | None:
    """Write the file, or return None when the cache cannot be written (the caller goes on)."""
    try:
        return _store(cache_key, data, where)
    except OSError:
        return None


def _store(cache_key: str, data: dict[str, Any], where: Path | None = None) -> Path:
    target = path(cache_key, where)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
