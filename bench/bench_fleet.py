#!/usr/bin/env python3
"""What a fleet rollout costs next to the same stacks deployed one by one, measured in one run.

Eight targets, eight databases on one throwaway embedded PostgreSQL 18 (target postgres), one
stack each in a copy of the project. All eight are deployed once first (not timed). Then, on the
deployed stacks, the wall time of a no-op `scripts/fleet.py up --yes` with one wave of the eight
targets, `parallel: 4` and `maxPerHost: 4`, against eight sequential `pulumi up --yes
--skip-preview --stack X`, printed side by side with their ratio (sequential / fleet), and the
fleet's per-target phase times (median over the targets): where a target's time goes.

The fleet does more per target than the bare `up` it is compared with: a read-only plan and a
preview before any change, then the up, read-only smoke and a `preview --expect-no-changes`.
For that reason it is also measured against what an operator would type per stack to check as
much: `pulumi preview`, `pulumi up --skip-preview`, `pulumi preview --expect-no-changes`, in
sequence. With --runs N all are measured N times, interleaved, and the medians are printed.
Usage: bench_fleet.py [--runs N] [--targets N] [--parallel N]
(needs `make pulumi-tools`; PULUMI_BIN or it runs it)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from _common import throwaway_server

from x402db import ROOT
from x402db.local.server import LocalServer

# The real-CLI harness lives in tests/, which a script in bench/ cannot import until the root is on
# the path (noqa: E402).
sys.path.insert(0, str(ROOT))
from tests.utils.real_pulumi import Project, find_tools  # noqa: E402

PHASES = ("plan", "preview", "up", "smoke", "after")  # a target's phases, in the order they run
FLEET = "fleet.py up --yes (no-op)"
SEQUENTIAL = "sequential pulumi up --skip-preview"
# What an operator would run by hand per stack to check as much as a wave does (smoke aside, 0.5 s).
CHECKED = "sequential preview, up, preview (by hand)"
T = TypeVar("T")


def fleet_file(server: LocalServer, databases: list[str], password_file: Path, parallel: int) -> str:
    """One wave of every target, as docs/runbooks/fleet.md writes a fleet file."""
    lines = [
        "version: 1",
        f"defaults: {{target: postgres, host: 127.0.0.1, port: {server.port()}, username: {server.superuser},"
        f" superuser: true, sslmode: disable, protect: false, password: {{file: {password_file}}}}}",
        "targets:",
        *(f"  {name}: {{database: {name}}}" for name in databases),
        "waves:",
        f"  - {{name: all, targets: [{', '.join(databases)}], parallel: {parallel}, maxPerHost: {parallel}}}",
    ]
    return "\n".join(lines) + "\n"


def fleet_up(project: Project) -> tuple[dict, str]:
    """`fleet.py up --yes --json` in the project copy, whose x402db it runs: the report, and why
    it was not ok ("" when it was)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from x402db.cli.fleet import cli; cli()", "up", "--yes", "--json"],
        cwd=project.dir,
        env=project.env(PYTHONPATH=str(project.dir)),
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(f"bench_fleet: fleet.py up exited {proc.returncode}: {proc.stderr.strip()[-2000:]}") from None
    why = [
        f"{t['name']}: {t['result']}: {t['reason']}"
        for wave in report["waves"]
        for t in wave["targets"]
        if t["result"] != "ok"
    ]
    return report, "; ".join(why)


def fleet_ok(project: Project) -> dict:
    report, why = fleet_up(project)
    if why:
        raise SystemExit(f"bench_fleet: the no-op rollout was not ok: {why}")
    return report


def sequential_up(project: Project, databases: list[str]) -> None:
    for name in databases:
        # --expect-no-changes only checks that the run was the no-op it is meant to be.
        project.run("up", "--yes", "--skip-preview", "--expect-no-changes", "--stack", name).ok()


def sequential_checked(project: Project, databases: list[str]) -> None:
    for name in databases:
        project.run("preview", "--stack", name).ok()
        project.run("up", "--yes", "--skip-preview", "--stack", name).ok()
        project.run("preview", "--expect-no-changes", "--stack", name).ok()


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def phase_medians(reports: list[dict]) -> dict[str, float]:
    """Each phase's median over every target of every timed rollout."""
    seconds: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for report in reports:
        for wave in report["waves"]:
            for target in wave["targets"]:
                for phase in PHASES:
                    if (got := target["phases"].get(phase)) and got.get("seconds") is not None:
                        seconds[phase].append(got["seconds"])
    return {phase: statistics.median(s) for phase, s in seconds.items() if s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    tools, reason = find_tools()
    if tools is None:
        raise SystemExit(f"bench_fleet: {reason}")
    databases = [f"t{i}" for i in range(1, args.targets + 1)]
    samples: dict[str, list[float]] = {FLEET: [], SEQUENTIAL: [], CHECKED: []}
    reports = []
    with throwaway_server() as server:
        project = Project(tools)
        try:
            for name in databases:
                server.ensure_database(name)
            password = project.base / "db-password"  # owner-only and no final newline, as fleet.md asks
            fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, (server.password or "").encode())
            os.close(fd)
            (project.dir / "fleet.yaml").write_text(fleet_file(server, databases, password, args.parallel))
            took, _ = timed(lambda: fleet_ok(project))
            print(f"deployed {len(databases)} targets once with the fleet (not timed below): {took:.1f}s", flush=True)
            for run in range(args.runs):
                # Interleaved, the order swapped each run: neither side always runs on a warmer machine.
                order = [FLEET, SEQUENTIAL, CHECKED] if run % 2 == 0 else [CHECKED, SEQUENTIAL, FLEET]
                for what in order:
                    if what == FLEET:
                        took, report = timed(lambda: fleet_ok(project))
                        reports.append(report)
                    elif what == SEQUENTIAL:
                        took, _ = timed(lambda: sequential_up(project, databases))
                    else:
                        took, _ = timed(lambda: sequential_checked(project, databases))
                    samples[what].append(took)
        finally:
            project.cleanup()
    fleet, sequential, checked = (statistics.median(samples[w]) for w in (FLEET, SEQUENTIAL, CHECKED))
    load = os.getloadavg()[0]
    print(
        f"no-op, {len(databases)} targets on one PostgreSQL 18, target postgres, median of {args.runs} run(s), "
        f"load average {load:.1f} at the end"
    )
    print(f"  {FLEET + f' (parallel {args.parallel})':<48}{fleet:8.1f}s")
    print(f"  {SEQUENTIAL + f' x{len(databases)}':<48}{sequential:8.1f}s")
    print(f"  {'sequential / fleet':<48}{sequential / fleet:8.2f}")
    print(f"  {CHECKED + f' x{len(databases)}':<48}{checked:8.1f}s")
    print(f"  {'sequential by hand / fleet':<48}{checked / fleet:8.2f}")
    print("the fleet's phases per target (median over targets and runs; up, smoke and after run in the workers)")
    for phase, seconds in phase_medians(reports).items():
        print(f"  {phase:<48}{seconds:8.1f}s")


if __name__ == "__main__":
    main()
