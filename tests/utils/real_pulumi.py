"""The real Pulumi CLI, for the tests: the tools `make pulumi-tools` finds or builds, run offline
(file backend, passphrase secrets provider, no update check, no plugin download) against a copy of
the project, so that a test may edit its SQL or stack files without touching the checkout.

Every setting goes through the environment of the one process that runs; nothing is written to
the user's own Pulumi settings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from x402db import ROOT

TOOLS_SCRIPT = ROOT / "tools" / "pulumi" / "pulumi_tools.py"
REQUIRED = ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python", "pulumi-resource-postgresql")
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt")
PROJECT_DIRS = ("x402db", "sql")
PASSPHRASE = "correct horse battery staple, for tests only"


def find_tools() -> tuple[Path | None, str]:
    """(directory, "") when the tools are there, else (None, the reason in one line)."""
    given = os.environ.get("PULUMI_BIN")
    if given == "":
        # `make test` asked `make pulumi-tools --optional` first, which printed why it found none.
        if shutil.which("go") is None and shutil.which("pulumi") is None:
            return None, "neither Go nor a pulumi CLI is installed, so the real Pulumi engine cannot be built or found"
        return None, "`make pulumi-tools` failed (its message is above this run's output): run it alone to see why"
    if given:
        missing = [t for t in REQUIRED if not (Path(given) / t).exists()]
        if missing:
            return None, f"PULUMI_BIN={given} lacks {', '.join(missing)}: run `make pulumi-tools`"
        return Path(given), ""
    if shutil.which("go") is None and shutil.which("pulumi") is None:
        return None, "neither Go nor a pulumi CLI is installed, so the real Pulumi engine cannot be built or found"
    out = subprocess.run([sys.executable, str(TOOLS_SCRIPT)], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not lines[-1].startswith("PULUMI_BIN="):
        return None, (out.stderr.strip().splitlines() or ["make pulumi-tools failed"])[-1]
    return Path(lines[-1].split("=", 1)[1]), ""


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def ok(self) -> Result:
        assert self.returncode == 0, f"pulumi {' '.join(self.args)} exited {self.returncode}:\n{self.output[-6000:]}"
        return self


@dataclass
class Project:
    """A copy of the deployable bundle with its own Pulumi home and file backend."""

    tools: Path
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="x402-pulumi-")))

    def __post_init__(self) -> None:
        self.dir = self.base / "project"
        self.dir.mkdir()
        for name in PROJECT_FILES:
            shutil.copy2(ROOT / name, self.dir / name)
        for name in PROJECT_DIRS:
            # With __pycache__: copy2 keeps each source's mtime, so the compiled files stay valid
            # (and an edited copy recompiles), and no run compiles the package again. Not the
            # temporary files another worker's import writes there and renames at any moment.
            shutil.copytree(ROOT / name, self.dir / name, ignore=shutil.ignore_patterns("*.pyc.*"))
        # Pulumi.yaml names .venv: the interpreter running the suite, with every pinned package.
        (self.dir / ".venv").symlink_to(Path(sys.prefix))
        self.home = self.base / "home"
        self.state = self.base / "state"
        self.home.mkdir()
        self.state.mkdir()
        self.passphrase_file = self.base / "passphrase"
        fd = os.open(self.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, PASSPHRASE.encode())
        os.close(fd)

    def env(self, **extra: str) -> dict[str, str]:
        # No PGPASSFILE either: the stack's own password must be what connects.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PULUMI_") and k not in ("DATABASE_URL", "PGPASSWORD", "PGPASSFILE")
        }
        env.update(
            {
                "PATH": f"{self.tools}{os.pathsep}{env.get('PATH', '')}",
                "PULUMI_HOME": str(self.home),
                "PULUMI_BACKEND_URL": f"file://{self.state}",
                "PULUMI_CONFIG_PASSPHRASE_FILE": str(self.passphrase_file),
                "PULUMI_SKIP_UPDATE_CHECK": "true",
                "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                "PULUMI_SKIP_CONFIRMATIONS": "true",
                "PULUMI_DISABLE_REGISTRY_RESOLVE": "true",
                "NO_COLOR": "1",
            }
        )
        env.update(extra)
        return env

    def run(
        self, *args: str, input: str | None = None, timeout: float = 600, env: dict[str, str] | None = None
    ) -> Result:
        proc = subprocess.run(
            [str(self.tools / "pulumi"), *args, "--non-interactive"],
            cwd=self.dir,
            env=env or self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(args, proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(
            [str(self.tools / "pulumi"), *args, "--non-interactive"],
            cwd=self.dir,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            **kwargs,
        )

    def init(self, stack: str, config: dict[str, str], password: str | None) -> None:
        self.run("stack", "init", stack, "--secrets-provider", "passphrase").ok()
        if config:  # one CLI run for all of them (each run costs a Go binary's start)
            self.run("config", "set-all", *(f"--plaintext={key}={value}" for key, value in config.items())).ok()
        if password is not None:
            self.run("config", "set", "--secret", "password", input=password).ok()

    def export(self) -> dict:
        return json.loads(self.run("stack", "export", "--show-secrets=false").ok().stdout)

    def resources(self) -> dict[str, dict]:
        """State by resource name, without the stack and provider entries."""
        out = {}
        for r in self.export()["deployment"].get("resources", []):
            if r["type"].startswith("pulumi:"):
                continue
            out[r["urn"].split("::")[-1]] = r
        return out

    def backend_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.state.rglob("*")) if p.is_file())

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def kill_run(home: Path) -> None:
    """SIGKILL every process of a run of this Pulumi home: the CLI and each plugin, which Pulumi
    starts in process groups of their own, so killing the CLI's group would leave them."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and f"PULUMI_HOME={home}".encode() in environ:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
