"""Runs tests/utils/pulumi_harness.py (the real program under Pulumi's mocks) and reads its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).with_name("pulumi_harness.py")
SECRET_KEY = "<secret>"


def run_program(config: dict) -> dict:
    r = subprocess.run([sys.executable, str(HARNESS), json.dumps(config)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stderr or "harness failed")
    return json.loads(r.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["resources"]}


def short(urns: list[str]) -> list[str]:
    return [u.split("::")[-1] for u in urns]


def plain(value):
    """The value with every secret-marked part removed: what would be stored in plaintext."""
    if isinstance(value, dict):
        if SECRET_KEY in value:
            return "<redacted>"
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
