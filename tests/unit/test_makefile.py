"""The Makefile as a newcomer meets it: `make help` lists every target, ARGS reaches every target
that runs a script, a stopped local server is one line saying what to do, and the first install
shows pip at work. No recipe here installs anything: STAMP and BIN are overridden."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from x402db import ROOT

MAKEFILE = ROOT / "Makefile"
# Targets that run no script of ours taking options: they act on the code or on the venv.
NO_ARGS = {"help", "venv", "lint", "fmt", "lock"}
MARKER = "--zz-args-marker"
ENV = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CI")}


def _make(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    # STAMP=Makefile: the venv rule's file exists, so no recipe can reinstall the shared venv.
    return subprocess.run(
        ["make", "-s", "STAMP=Makefile", *args], cwd=cwd, capture_output=True, text=True, env=env or ENV, timeout=60
    )


def _targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE.read_text(), re.M))


def test_help_lists_every_target_and_args_reaches_each_that_runs_a_script():
    listed = set(re.findall(r"^  make (\S+)", _make("help").stdout, re.M))
    assert listed == _targets() and {"start", "stop", "revert", "status", "smoke"} <= listed, listed
    for target in sorted(listed - NO_ARGS):
        shown = _make("-n", target, f"ARGS={MARKER}").stdout
        assert MARKER in shown, f"make {target} drops ARGS:\n{shown}"


def test_a_stopped_local_server_is_one_line_saying_what_to_do():
    """Without DATABASE_URL, `make status` (smoke, plan, revert) on a stopped server said so, then
    went on and said "no database given", which sent people looking for a missing setting."""
    base = Path(tempfile.mkdtemp(prefix="x402db-make-"))
    try:
        for name in ("x402db", "scripts", "sql", "Makefile"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, base / name)
        (base / ".venv").symlink_to(ROOT / ".venv")
        env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
        for target in ("status", "revert"):
            r = _make(target, cwd=base, env=env)
            errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
            assert r.returncode != 0 and errors == [
                "error: the local server is stopped: make start (or make deploy), or set DATABASE_URL"
            ], r.stderr
            assert "Traceback" not in r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_first_install_shows_pip_at_a_terminal_and_two_short_lines_in_ci(tmp_path):
    from tests.utils.tty import run_in_pty

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "pip was given: $*"\n')
    (fake / "python").chmod(0o755)
    argv = ["make", "-s", "-C", str(ROOT), "venv", f"BIN={fake}", f"VENV={tmp_path}", f"STAMP={tmp_path}/stamp"]
    piped = subprocess.run(argv, capture_output=True, text=True, env=ENV | {"CI": "true"}, timeout=60)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert lines[0].startswith("installing the pinned dependencies into") and "with pip" in lines[0], lines
    assert "--quiet" in lines[1] and re.fullmatch(r"installed the dependencies in \d+ s", lines[2]), lines
    (tmp_path / "stamp").unlink()
    code, shown = run_in_pty(["-c", f"import os; os.execvp('make', {argv!r})"], ENV)
    assert code == 0 and "pip was given: -m pip install --disable-pip-version-check" in shown, shown
