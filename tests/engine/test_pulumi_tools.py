"""`make pulumi-tools` (tools/pulumi/pulumi_tools.py) with real binaries: a compatible installation
the user already has is used as it is (and the same directory again on a second run), and a
machine with neither Go nor a complete installation gets one line saying so."""

from __future__ import annotations

import os
import re
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


def test_each_build_step_says_when_it_starts_and_how_long_it_took_in_ci_too():
    """A cold build takes 10 to 20 minutes: a CI log gets a quiet line as each step starts and
    ends, sub-steps of build.sh included, while stdout keeps only what the step printed."""
    marks = 'echo "x402-step: one" >&2; echo go: downloading >&2; echo "x402-step: two" >&2; echo result'
    code = (
        "import pathlib, sys; sys.path.insert(0, sys.argv[1]); import pulumi_tools as t;"
        " print(t.run(['bash', '-c', sys.argv[2]], pathlib.Path('.'), 'demo'), end='')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(TOOLS_SCRIPT.parent), marks],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout == "result\n", r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        "pulumi-tools: demo ...",
        "pulumi-tools: demo: one ...",
        "pulumi-tools: demo: one: done in 0 s",
        "pulumi-tools: demo: two ...",
        "pulumi-tools: demo: two: done in 0 s",
        "pulumi-tools: demo: done in 0 s",
    ]
    build_sh = (TOOLS_SCRIPT.parent / "provider" / "build.sh").read_text()
    steps = re.findall(r'^\s*step "([^"]+)"', build_sh, re.M)
    assert [s.split(":")[0].split(" ")[0] for s in steps] == ["upstream", "schema", "mapping", "provider"], steps
