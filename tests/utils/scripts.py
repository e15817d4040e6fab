"""Run one of scripts/ as an operator would, without the caller's DSN or secrets: in a fresh
process (`run_script`), or the same script file in this process (`call_script`); and what every
failed run must look like."""

from __future__ import annotations

import io
import os
import runpy
import subprocess
import sys
import traceback

from x402db import ROOT

MARKER = "Zq9-marker-secret-7Hx"  # a secret that must never be printed back
NOT_INHERITED = ("DATABASE_URL", "INTEGRATION_ENCRYPTION_SECRET", "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS")


def _script_env(env: dict | None) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    full_env.update(env or {})
    return full_env


def run_script(name: str, *args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    """A fresh interpreter: what only a process shows (its exit through the interpreter, output
    written below Python, a timeout, a kill) is proved here."""
    full_env = _script_env(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=timeout,
    )


def call_script(name: str, *args: str, env: dict | None = None, input: str | None = None):
    """run_script's contract without an interpreter's start (a third of a second of CPU, most of a
    CLI test's cost): the script file itself runs in this process, with its argv, only the given
    environment, stdin from `input` (empty without it, as a pipe or /dev/null gives), and its
    output and exit code captured as a subprocess's would be. For what the process boundary itself
    must show, use run_script."""
    path = ROOT / "scripts" / name
    full_env = _script_env(env)
    saved = (dict(os.environ), sys.argv, sys.stdin, sys.stdout, sys.stderr)
    out, err = io.BytesIO(), io.BytesIO()
    # Held here until the bytes are read: a wrapper closes its buffer when it is collected.
    streams = [io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")]
    streams += [io.TextIOWrapper(b, encoding="utf-8", write_through=True) for b in (out, err)]
    os.environ.clear()
    os.environ.update(full_env)
    sys.argv = [str(path), *args]
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        runpy.run_path(str(path), run_name="__main__")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    except Exception:  # what the interpreter would print before exiting 1
        traceback.print_exc(file=sys.stderr)
        code = 1
    finally:
        for stream in streams[1:]:
            stream.flush()
        environ, sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(
        [sys.executable, str(path), *args], code, out.getvalue().decode(), err.getvalue().decode()
    )


def assert_one_line_error(r, code: int, *secrets: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == code, (r.returncode, out)
    assert "Traceback" not in out and "Exception ignored" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for s in (MARKER, *secrets):
        assert s not in out, out
    return lines[0]
