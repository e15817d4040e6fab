"""Run one of scripts/ as an operator would: a fresh process, without the caller's DSN or secrets;
and what every failed run must look like."""

from __future__ import annotations

import os
import subprocess
import sys

from x402db import ROOT

MARKER = "Zq9-marker-secret-7Hx"  # a secret that must never be printed back


def run_script(name: str, *args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "INTEGRATION_ENCRYPTION_SECRET", "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS")
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=timeout,
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
