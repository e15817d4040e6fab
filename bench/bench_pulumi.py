#!/usr/bin/env python3
"""What the real Pulumi engine costs next to the local path, measured in one run.

On one server (a throwaway embedded PostgreSQL 18, target postgres): the wall time of a no-op
`make deploy` (scripts/deploy_local.py on DATABASE_URL), of `pulumi preview`, of a no-op
`pulumi up --yes` (which previews first, as an operator runs it) and of `pulumi up --yes
--skip-preview`, each the median of N runs; then where one run of the program spends its time,
phase by phase, each phase measured alone with the tools and the program's own code.

With --today DIR (the PULUMI_BIN of the tools to compare with) and --today-root DIR (a checkout
whose x402db the program of those tools runs; default this one), the same figures are measured
for them too, interleaved run by run on a database of their own, and printed beside ours as a
ratio.
Usage: bench_pulumi.py [--runs N] [--today DIR [--today-root DIR]]
(needs `make pulumi-tools`; PULUMI_BIN or it runs it)
"""

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import throwaway_server

from x402db import ROOT
from x402db.local.server import LocalServer

# The real-CLI harness lives in tests/, which a script in bench/ cannot import until the root is on
# the path (noqa: E402).
sys.path.insert(0, str(ROOT))
from tests.utils.real_pulumi import Project, find_tools  # noqa: E402

PHASES = (
    "program imports",
    "dynamic-provider start",
    "Preflight Check",
    "first SqlMigration Check",
    "About",
    "GetRequiredPackages",
    "program interpreter shutdown",
    "dynamic-provider shutdown",
)
RUNS = ("make deploy (no-op)", "pulumi preview", "pulumi up --yes (no-op)", "pulumi up --skip-preview")

# What the program imports before its first resource, timed inside the interpreter; then its exit,
# timed from outside: the way the tools' runner ends a program that succeeded.
IMPORTS = "import pulumi, pulumi_postgresql, x402db.iac.component"
PROGRAM = f"""
import os, sys, time
t = time.perf_counter()
{IMPORTS}
print(time.perf_counter() - t, flush=True)
if sys.argv[1] == "os._exit":
    os._exit(0)
"""


@dataclass
class Side:
    """One set of tools with its own project, stack and database, and what was measured of it."""

    label: str
    tools: Path
    root: Path
    database: str
    project: Project | None = None
    requests: dict[str, object] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, what: str, seconds: float) -> None:
        self.samples.setdefault(what, []).append(seconds)

    def median(self, what: str) -> float:
        return statistics.median(self.samples[what])


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def program_exit(tools: Path) -> str:
    """How the tools' runner ends a program that succeeded: ours wraps the SDK's runner and leaves
    with os._exit; the SDK's alone exits normally, tearing the interpreter down."""
    return "os._exit" if (tools / "pulumi-language-python-exec-sdk").is_file() else "sys.exit"


def start_plugin(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.Popen, str]:
    """Start a plugin in a process group of its own, as the engine does, and time it until it
    prints its port."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    assert proc.stdout is not None  # stdout=PIPE
    port = proc.stdout.readline().strip()
    took = time.perf_counter() - t0
    if not port.isdigit():
        os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(f"bench_pulumi: {cmd[0]} printed no port")
    return took, proc, port


def stop_plugin(proc: subprocess.Popen) -> float:
    """The engine's way: SIGINT to the plugin's process group, then wait for the launcher to exit.
    Whatever is left after 5 s is killed, as the engine kills it."""
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    took = time.perf_counter() - t0
    try:
        os.killpg(proc.pid, 0)
        os.killpg(proc.pid, signal.SIGKILL)  # a provider the launcher left behind
        raise SystemExit(f"bench_pulumi: {proc.args!r} left a process behind after its interrupt")
    except ProcessLookupError:
        pass
    return took


def check_requests(dsn: str, database: str, deployment: str, stack: dict[str, str]) -> dict[str, object]:
    """The Preflight's and the first SqlMigration's Check requests, as the engine sends them."""
    from pulumi.dynamic.dynamic import PROVIDER_KEY, serialize_provider
    from pulumi.runtime import proto, rpc

    from x402db.iac.preflight import PreflightProvider
    from x402db.iac.sql_migration import MigrationProvider
    from x402db.migrate import files

    first = files.load()[0]
    preflight = {
        "dsn": dsn,
        "database": database,
        "backend_role": "",
        "target": "postgres",
        "owner": {**stack, "take_over_from": ""},
        "deployment": deployment,
        PROVIDER_KEY: serialize_provider(PreflightProvider()),
    }
    migration = {
        "dsn": dsn,
        "version": first.version,
        "name": first.name,
        "checksum": first.checksum,
        "up_sql": first.up_text,
        "down_sql": first.down_text,
        "target": "postgres",
        "lock_timeout": "",
        PROVIDER_KEY: serialize_provider(MigrationProvider()),
    }

    def request(urn: str, news: dict[str, object]) -> object:
        olds = asyncio.run(rpc.serialize_properties({}, {}))
        return proto.CheckRequest(urn=urn, olds=olds, news=asyncio.run(rpc.serialize_properties(news, {})))

    return {
        "Preflight Check": request("urn:pulumi:bench::x402::x402:Preflight::openrouter-preflight", preflight),
        "first SqlMigration Check": request(
            f"urn:pulumi:bench::x402::x402:SqlMigration::openrouter-migration-{first.version}", migration
        ),
    }


def measure_phases(side: Side, server: LocalServer) -> None:
    import grpc
    from google.protobuf import struct_pb2  # type: ignore[import-untyped]
    from pulumi.runtime import proto
    from pulumi.runtime.proto import language_pb2, language_pb2_grpc, provider_pb2_grpc

    project = side.project
    assert project is not None
    # The engine starts plugins in the program's directory: its x402db comes first on sys.path.
    env = {**project.env(), "PULUMI_RUNTIME_VIRTUALENV": str(project.dir / ".venv")}
    python = str(project.dir / ".venv/bin/python")

    # The program's imports, then its exit (from the line it prints to the end of the process).
    proc = subprocess.Popen(
        [python, "-c", PROGRAM, program_exit(side.tools)], cwd=project.dir, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    t0 = time.perf_counter()
    proc.wait()
    side.add("program interpreter shutdown", time.perf_counter() - t0)
    side.add("program imports", float(line))

    # The dynamic provider: start, the two first Checks of a run, and its shutdown.
    requests = side.requests
    took, proc, port = start_plugin(
        [str(side.tools / "pulumi-resource-pulumi-python"), "127.0.0.1:1"], env, project.dir
    )
    side.add("dynamic-provider start", took)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = provider_pb2_grpc.ResourceProviderStub(channel)
        stub.Configure(proto.ConfigureRequest(acceptSecrets=True))
        for phase, request in requests.items():
            t0 = time.perf_counter()
            response = stub.Check(request)
            side.add(phase, time.perf_counter() - t0)
            if response.failures:
                raise SystemExit(f"bench_pulumi: {phase} failed: {response.failures[0].reason}")
    side.add("dynamic-provider shutdown", stop_plugin(proc))

    # The language host's two calls the engine makes before the program runs.
    options = struct_pb2.Struct()
    options.update({"toolchain": "pip", "virtualenv": ".venv"})
    info = language_pb2.ProgramInfo(
        root_directory=str(project.dir), program_directory=str(project.dir), entry_point=".", options=options
    )
    _took, proc, port = start_plugin([str(side.tools / "pulumi-language-python"), "127.0.0.1:1"], env, project.dir)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        host = language_pb2_grpc.LanguageRuntimeStub(channel)
        side.add("About", timed(lambda: host.About(language_pb2.AboutRequest(info=info))))
        side.add(
            "GetRequiredPackages",
            timed(lambda: host.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(info=info))),
        )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def prepare(side: Side, server: LocalServer) -> None:
    server.ensure_database(side.database)
    project = side.project = Project(side.tools)
    if side.root != ROOT:  # the program of the tools compared with runs that checkout's code
        shutil.rmtree(project.dir / "x402db")
        shutil.copytree(side.root / "x402db", project.dir / "x402db", ignore=shutil.ignore_patterns("__pycache__"))
    project.init(
        "bench",
        {
            "target": "postgres",
            "host": "127.0.0.1",
            "port": str(server.port()),
            "database": side.database,
            "username": server.superuser,
            "sslmode": "disable",
            "protect": "false",
            "superuser": "true",
        },
        server.password,
    )
    project.run("up", "--yes", "--skip-preview").ok()
    deployment = project.resources()["openrouter-preflight"]["outputs"]["deployment"]
    stack = {"project": "x402-openrouter-db", "stack": "bench"}
    side.requests = check_requests(server.url(side.database), side.database, deployment, stack)


def measure_runs(side: Side) -> None:
    project = side.project
    assert project is not None
    side.add("pulumi preview", timed(lambda: project.run("preview", "--expect-no-changes").ok()))
    side.add("pulumi up --yes (no-op)", timed(lambda: project.run("up", "--yes", "--expect-no-changes").ok()))
    side.add(
        "pulumi up --skip-preview",
        timed(lambda: project.run("up", "--yes", "--skip-preview", "--expect-no-changes").ok()),
    )


def report(runs: int, now: Side, today: Side | None, deploy: float) -> None:
    print(f"no-op, median of {runs} runs, PostgreSQL 18, target postgres; now = {now.tools}")
    if today:
        print(f"today = {today.tools} (x402db from {today.root}), measured interleaved with now")
    head = f"  {'':<34}{'now':>8}  {'x deploy':>8}"
    print(head + (f"  {'today':>8}  {'x deploy':>8}  {'now/today':>9}" if today else ""))
    for what in RUNS:
        value = deploy if what == RUNS[0] else now.median(what)
        line = f"  {what:<34}{value:7.2f}s  {value / deploy:7.1f}x"
        if today and what != RUNS[0]:
            before = today.median(what)
            line += f"  {before:7.2f}s  {before / deploy:7.1f}x  {value / before:9.2f}"
        print(line)
    print("one run of the program, phase by phase (each measured alone, median)")
    print(f"  {'':<34}{'now':>8}" + (f"  {'today':>8}  {'now/today':>9}" if today else ""))
    for phase in PHASES:
        line = f"  {phase:<34}{now.median(phase):7.3f}s"
        if today:
            before = today.median(phase)
            line += f"  {before:7.3f}s  {now.median(phase) / before if before else float('nan'):9.2f}"
        print(line)
    print(f"  (the program's exit is the tools' runner's: {program_exit(now.tools)} now", end="")
    print(f", {program_exit(today.tools)} today)" if today else ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--today", type=Path, help="the PULUMI_BIN of the tools to compare with")
    parser.add_argument("--today-root", type=Path, default=ROOT, help="the checkout whose x402db they run")
    args = parser.parse_args()
    tools, reason = find_tools()
    if tools is None:
        raise SystemExit(f"bench_pulumi: {reason}")
    now = Side("now", tools, ROOT, "bench_pulumi")
    sides = [now]
    today = None
    if args.today:
        today = Side("today", args.today, args.today_root.resolve(), "bench_pulumi_today")
        sides.append(today)
    deploys: list[float] = []
    with throwaway_server() as server:
        try:
            for side in sides:
                prepare(side, server)
            env = {**os.environ, "DATABASE_URL": server.url(now.database)}

            def deploy() -> None:
                r = subprocess.run(
                    [sys.executable, str(ROOT / "scripts/deploy_local.py")], env=env, capture_output=True, text=True
                )
                assert r.returncode == 0, r.stderr

            for _ in range(args.runs):
                deploys.append(timed(deploy))
                for side in sides:
                    measure_runs(side)
                for side in sides:
                    measure_phases(side, server)
        finally:
            for side in sides:
                if side.project is not None:
                    side.project.cleanup()
    report(args.runs, now, today, statistics.median(deploys))


if __name__ == "__main__":
    main()
