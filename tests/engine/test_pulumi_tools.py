"""`make pulumi-tools` (tools/pulumi/pulumi_tools.py) with real binaries: a compatible installation
the user already has is used as it is (and the same directory again on a second run), and a
machine with neither Go nor a complete installation gets one line saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.utils.real_pulumi import TOOLS_SCRIPT


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def _installation(tmp_path: Path, tools: Path, names) -> Path:
    """A directory laid out as the official installer leaves one: the CLI and its plugins."""
    home = tmp_path / "installed"
    home.mkdir()
    for name in names:
        (home / name).symlink_to((tools / name).resolve())
    return home


def test_a_compatible_installation_is_used_as_it_is(pulumi_tools, tmp_path):
    installed = _installation(
        tmp_path,
        pulumi_tools,
        ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python", "pulumi-resource-postgresql"),
    )
    env = {
        **os.environ,
        "PATH": f"{installed}{os.pathsep}/usr/bin:/bin",
        "X402_PULUMI_TOOLS_CACHE": str(tmp_path / "cache"),
    }
    r = _run(env)
    assert r.returncode == 0, r.stderr
    chosen = Path(r.stdout.strip().splitlines()[-1].split("=", 1)[1])
    assert chosen.name.startswith("user-")
    assert (chosen / "pulumi").resolve() == (pulumi_tools / "pulumi").resolve()
    assert (chosen / "pulumi-resource-postgresql").resolve() == (pulumi_tools / "pulumi-resource-postgresql").resolve()
    again = _run(env)
    assert again.stdout == r.stdout


def test_an_installation_without_the_plugin_is_not_used(pulumi_tools, tmp_path):
    installed = _installation(
        tmp_path, pulumi_tools, ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python")
    )
    env = {
        **os.environ,
        "PATH": f"{installed}{os.pathsep}/usr/bin:/bin",
        "X402_PULUMI_TOOLS_CACHE": str(tmp_path / "cache"),
        "PULUMI_HOME": str(tmp_path / "home"),
    }
    r = _run(env, "--optional")
    # Without Go on this PATH it cannot build either: one line, and an empty PULUMI_BIN.
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "PULUMI_BIN="
    assert len(r.stderr.strip().splitlines()) == 1 and "go is not installed" in r.stderr, r.stderr
    assert _run(env).returncode == 1
