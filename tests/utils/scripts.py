"""Run one of scripts/ as an operator would: a fresh process, without the caller's DSN or secrets."""

from __future__ import annotations

import os
import subprocess
import sys

from x402db import ROOT


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
