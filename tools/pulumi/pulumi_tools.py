#!/usr/bin/env python3
"""`make pulumi-tools`: find or build the Pulumi CLI, its Python language host, the dynamic-provider
launcher and the postgresql resource plugin, and print `PULUMI_BIN=<dir>` as the last line.

Invariants:
- a finished tool directory is complete: it is built under a temporary name and renamed into place,
  so a kill -9 or a second concurrent build never leaves a half-filled directory behind;
- the directory is keyed by the versions and by a hash of every input of the build (the wrappers'
  go.mod/go.sum and sources, this script, the Go version), so a second run costs seconds and a
  changed pin never reuses a stale binary;
- tools the user already has (the official installer, brew) are used as they are when compatible:
  PULUMI_BIN then holds links to them;
- every Go build is verified against the committed go.sum files; nothing is fetched but modules.

Stdlib only: it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI_MODULE = HERE / "cli"
PROVIDER_DIR = HERE / "provider"
# Our own program runner and dynamic-provider launcher, each a small difference from the SDK's
# (tools/pulumi/README.md): they replace the SDK's files of the same names in the build.
LAUNCHERS_DIR = HERE / "launchers"
# The CLI is built at the version nearest to the SDK pin (pulumi==3.272.0) that the Go module
# proxy serves: pkg/v3 v3.270.0 to v3.273.0 are refused there (tools/pulumi/README.md).
CLI_VERSION = "3.274.0"
SDK_MODULE = "github.com/pulumi/pulumi/sdk/v3"
CLI_PACKAGE = "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
MIN_USER_CLI = (3, 272, 0)  # the SDK's version: the CLI must not be older than the SDK
PROVIDER_REQUESTED = "3.18.2"  # what pulumi-postgresql==3.18.2 asks the engine for
LANGHOST_VERSION = f"0.1.0+sdk.{CLI_VERSION}"
TOOLS = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-pulumi-python",
    "pulumi-resource-postgresql",
)
# Built only: the SDK's own runner, which ours (pulumi-language-python-exec) runs unchanged.
SDK_EXEC = "pulumi-language-python-exec-sdk"


class ToolsError(Exception):
    """One line for the user; the exit code is 1."""


def cache_root() -> Path:
    explicit = os.environ.get("X402_PULUMI_TOOLS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "x402db" / "pulumi-tools"


# build.sh marks the start of each of its steps with a stderr line of this prefix.
STEP_MARK = "x402-step: "


def say(message: str) -> None:
    # One quiet line per step, on a terminal and in CI alike: a build is never silent for minutes,
    # and stdout keeps only the PULUMI_BIN line.
    print(f"pulumi-tools: {message}", file=sys.stderr, flush=True)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    # No VCS stamp: the same inputs give the same bytes, whichever checkout builds them.
    flags = env.get("GOFLAGS", "")
    for flag in ("-modcacherw", "-buildvcs=false"):
        if flag not in flags:
            flags = (flags + " " + flag).strip()
    env["GOFLAGS"] = flags
    return env


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolsError(
            "go is not installed, and no compatible pulumi was found on PATH: "
            "install Go 1.26 (https://go.dev/dl/) or the Pulumi CLI, then run `make pulumi-tools` again"
        )
    out = subprocess.run([go, "version"], capture_output=True, text=True, env=go_env())
    if out.returncode != 0:
        raise ToolsError(
            f"`go version` failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
        )
    return out.stdout.strip()


def build_key(go: str) -> str:
    digest = hashlib.sha256()
    inputs = [Path(__file__)]
    for folder in (CLI_MODULE, PROVIDER_DIR, LAUNCHERS_DIR):
        inputs += sorted(p for p in folder.rglob("*") if p.is_file() and _is_input(p, folder))
    for path in inputs:
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(go.encode())
    return digest.hexdigest()[:12]


def _is_input(path: Path, folder: Path) -> bool:
    rel = path.relative_to(folder).parts
    # The upstream link and the embedded schema are the build's own outputs, not its inputs.
    return not any(part.startswith(".") or part in ("upstream", "build", "schema-embed.json") for part in rel)


def provider_label() -> str:
    label = PROVIDER_DIR / "VERSION"
    if not label.is_file():
        raise ToolsError(f"{label} is missing: the provider wrapper is incomplete in this checkout")
    return label.read_text().strip()


def run(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> str:
    """Runs one build step and returns its stdout. Says when it starts and how long it took, and
    likewise for each sub-step the command marks on stderr (STEP_MARK); the rest of its stderr is
    kept for the one-line error."""
    say(f"{what} ...")
    started = time.monotonic()
    substep: tuple[str, float] | None = None
    tail: list[str] = []
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or go_env(), stdout=out, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(STEP_MARK):
                _done(substep)
                substep = (f"{what}: {line[len(STEP_MARK) :].strip()}", time.monotonic())
                say(f"{substep[0]} ...")
            elif line.strip():
                tail = [*tail[-20:], line.rstrip()]
        returncode = proc.wait()
        out.seek(0)
        stdout = out.read()
    if returncode != 0:
        lines = tail or [line for line in stdout.splitlines() if line.strip()]
        raise ToolsError(
            f"{what} failed: {lines[-1] if lines else f'exit {returncode}'}"
            f" (run `{' '.join(cmd)}` in {cwd} to see all of it)"
        )
    _done(substep)
    say(f"{what}: done in {time.monotonic() - started:.0f} s")
    return stdout


def _done(step: tuple[str, float] | None) -> None:
    if step is not None:
        say(f"{step[0]}: done in {time.monotonic() - step[1]:.0f} s")


def build(target: Path) -> None:
    """Builds every tool into `target`, which must not exist yet."""
    work = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    started = time.monotonic()
    try:
        say(f"building the Pulumi tools into {target} (10 to 20 minutes the first time, then cached)")
        ldflags = f"-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v{CLI_VERSION}"
        run(
            [
                "go",
                "build",
                "-trimpath",
                "-tags",
                "osusergo,grpcnotrace",
                "-ldflags",
                ldflags,
                "-o",
                str(work / "pulumi"),
                CLI_PACKAGE,
            ],
            CLI_MODULE,
            f"pulumi v{CLI_VERSION}",
        )
        run(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                f"-s -w -X main.version={LANGHOST_VERSION}",
                "-o",
                str(work / "pulumi-language-python"),
                "./cmd/pulumi-language-python",
            ],
            CLI_MODULE,
            "pulumi-language-python",
        )
        sdk = json.loads(
            run(
                ["go", "mod", "download", "-json", f"{SDK_MODULE}@v{CLI_VERSION}"], CLI_MODULE, f"sdk/v3 v{CLI_VERSION}"
            )
        )
        copies = {
            Path(sdk["Dir"]) / "python/cmd/pulumi-language-python-exec": SDK_EXEC,
            LAUNCHERS_DIR / "pulumi-language-python-exec": "pulumi-language-python-exec",
            LAUNCHERS_DIR / "pulumi-resource-pulumi-python": "pulumi-resource-pulumi-python",
        }
        for source, name in copies.items():
            shutil.copyfile(source, work / name)
            (work / name).chmod(0o755)
        run(["bash", str(PROVIDER_DIR / "build.sh"), str(work)], PROVIDER_DIR, "pulumi-resource-postgresql")
        missing = [tool for tool in (*TOOLS, SDK_EXEC) if not (work / tool).is_file()]
        if missing:
            raise ToolsError(f"the build produced no {', '.join(missing)}")
        (work / "BUILD.json").write_text(
            json.dumps(
                {
                    "pulumi": CLI_VERSION,
                    "pulumi-language-python": LANGHOST_VERSION,
                    "pulumi-resource-postgresql": provider_label(),
                    "go": go_version(),
                },
                indent=2,
            )
            + "\n"
        )
        work.chmod(0o755)
        try:
            work.rename(target)
        except OSError:
            if not (target / "BUILD.json").is_file():
                raise
            # A concurrent build finished first; its result is as good as ours.
        say(f"built in {(time.monotonic() - started) / 60:.1f} min")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None


def user_tools(exclude: Path) -> dict[str, Path] | None:
    """The user's own compatible installation, or None. Official CLI archives ship the language
    host and the dynamic-provider launcher next to `pulumi`; the postgresql plugin may be on PATH
    or in the plugin cache."""
    pulumi = shutil.which("pulumi")
    if pulumi is None or Path(pulumi).resolve().is_relative_to(exclude.resolve()):
        return None
    out = subprocess.run(
        [pulumi, "version"], capture_output=True, text=True, env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    )
    version = _version_tuple(out.stdout)
    if out.returncode != 0 or version is None or version < MIN_USER_CLI:
        return None
    found = {"pulumi": Path(pulumi)}
    beside = Path(pulumi).resolve().parent
    for tool in TOOLS[1:4]:
        path = shutil.which(tool) or (beside / tool if (beside / tool).is_file() else None)
        if tool != "pulumi-language-python-exec" and path is None:
            return None
        if path is not None:
            found[tool] = Path(path)
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    cached = home / "plugins" / f"resource-postgresql-v{PROVIDER_REQUESTED}" / "pulumi-resource-postgresql"
    provider = shutil.which("pulumi-resource-postgresql") or (cached if cached.is_file() else None)
    if provider is None:
        return None
    found["pulumi-resource-postgresql"] = Path(provider)
    return found


def link_user_tools(found: dict[str, Path], root: Path) -> Path:
    digest = hashlib.sha256("\0".join(f"{k}={v}" for k, v in sorted(found.items())).encode()).hexdigest()[:12]
    target = root / f"user-{digest}"
    if not target.is_dir():
        work = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=root))
        for name, path in found.items():
            (work / name).symlink_to(path.resolve())
        try:
            work.rename(target)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    return target


def ensure(prefer_build: bool) -> Path:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    if not prefer_build:
        found = user_tools(exclude=root)
        if found is not None:
            say("using the Pulumi CLI and plugins already installed: " + ", ".join(str(p) for p in found.values()))
            return link_user_tools(found, root)
    go = go_version()
    target = root / f"pulumi-{CLI_VERSION}_postgresql-{provider_label()}_{build_key(go)}"
    if not (target / "BUILD.json").is_file():
        build(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--build", action="store_true", help="build from Go modules even when a compatible pulumi is installed"
    )
    parser.add_argument(
        "--optional",
        action="store_true",
        help="for `make test`: when the tools cannot be had, say why and print an empty PULUMI_BIN=, exit 0",
    )
    args = parser.parse_args(argv)
    try:
        directory = ensure(prefer_build=args.build)
    except ToolsError as exc:
        print(f"pulumi-tools: {exc}", file=sys.stderr)
        if args.optional:
            print("PULUMI_BIN=")
            return 0
        return 1
    print(f"PULUMI_BIN={directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
