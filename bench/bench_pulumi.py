#!/usr/bin/env python3
"""What the real Pulumi engine costs next to the local path, measured in one run.

On one deployed database (a throwaway embedded PostgreSQL 18, target postgres): the wall time of
a no-op `make deploy` (scripts/deploy_local.py on DATABASE_URL), of `pulumi preview` and of a
no-op `pulumi up --yes` (which previews first, as an operator runs it), each the median of N
runs; then where the engine's start-up goes: the CLI alone (`pulumi version`), each plugin's
launch (start to the port it prints), the program's imports, and the provider's Configure.
Usage: bench_pulumi.py [--runs N]   (needs `make pulumi-tools`; PULUMI_BIN or it runs it)
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import throwaway_server

from x402db import ROOT
from x402db.local.server import LocalServer

# The real-CLI harness lives in tests/, which a script in bench/ cannot import until the root is on
# the path (noqa: E402).
sys.path.insert(0, str(ROOT))
from tests.utils.real_pulumi import Project, find_tools  # noqa: E402


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def launch(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.Popen, str]:
    """Start a plugin and time it until it prints its port."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    port = proc.stdout.readline().strip()
    took = time.perf_counter() - t0
    if not port.isdigit():
        proc.kill()
        raise SystemExit(f"{cmd[0]} printed no port")
    return took, proc, port


def configure_time(port: str, server: LocalServer, database: str) -> float:
    import grpc
    from pulumi.runtime import proto, rpc
    from pulumi.runtime.proto import provider_pb2_grpc

    args = asyncio.run(
        rpc.serialize_properties(
            {
                "host": "127.0.0.1",
                "port": str(server.port()),
                "database": database,
                "username": server.superuser,
                "password": server.password,
                "sslmode": "disable",
                "superuser": "true",
                "version": "3.18.2",
            },
            {},
        )
    )
    stub = provider_pb2_grpc.ResourceProviderStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    t0 = time.perf_counter()
    stub.Configure(proto.ConfigureRequest(args=args, acceptSecrets=True))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    tools, reason = find_tools()
    if tools is None:
        raise SystemExit(f"bench_pulumi: {reason}")
    with throwaway_server() as server:
        dsn = server.ensure_database("bench_pulumi")
        project = Project(tools)
        try:
            project.init(
                "bench",
                {
                    "target": "postgres",
                    "host": "127.0.0.1",
                    "port": str(server.port()),
                    "database": "bench_pulumi",
                    "username": server.superuser,
                    "sslmode": "disable",
                    "protect": "false",
                    "superuser": "true",
                },
                server.password,
            )
            project.run("up", "--yes", "--skip-preview").ok()
            env = {**os.environ, "DATABASE_URL": server.url("bench_pulumi")}

            def deploy():
                r = subprocess.run(
                    [sys.executable, str(ROOT / "scripts/deploy_local.py")], env=env, capture_output=True, text=True
                )
                assert r.returncode == 0, r.stderr

            local = timed(deploy, runs)
            preview = timed(lambda: project.run("preview", "--expect-no-changes").ok(), runs)
            up = timed(lambda: project.run("up", "--yes", "--expect-no-changes").ok(), runs)

            penv = project.env()
            cli = timed(
                lambda: subprocess.run([str(tools / "pulumi"), "version"], env=penv, capture_output=True, check=True),
                runs,
            )
            launches = {}
            for name, cmd in (
                ("pulumi-resource-postgresql", [str(tools / "pulumi-resource-postgresql"), "127.0.0.1:1"]),
                ("pulumi-language-python", [str(tools / "pulumi-language-python"), "127.0.0.1:1"]),
                ("pulumi-resource-pulumi-python", [str(tools / "pulumi-resource-pulumi-python"), "127.0.0.1:1"]),
            ):
                took, proc, port = launch(
                    cmd, {**penv, "PULUMI_RUNTIME_VIRTUALENV": str(project.dir / ".venv")}, project.dir
                )
                launches[name] = took
                if name == "pulumi-resource-postgresql":
                    configure = configure_time(port, server, "bench_pulumi")
                proc.kill()
                proc.wait()
            imports = timed(
                lambda: subprocess.run(
                    [
                        str(project.dir / ".venv/bin/python"),
                        "-c",
                        "import pulumi, pulumi_postgresql, x402db.iac.component",
                    ],
                    cwd=project.dir,
                    check=True,
                ),
                runs,
            )
        finally:
            project.cleanup()
        del dsn
    print(f"no-op, median of {runs} runs, one deployed database (PostgreSQL 18, target postgres)")
    print(f"  make deploy (no-op)             {local:7.2f} s   1.0x (baseline)")
    print(f"  pulumi preview                  {preview:7.2f} s   {preview / local:4.1f}x")
    print(f"  pulumi up --yes (no-op)         {up:7.2f} s   {up / local:4.1f}x")
    print("where the engine's start-up goes (each measured alone)")
    print(f"  CLI alone (pulumi version)      {cli:7.2f} s")
    for name, took in launches.items():
        print(f"  launch {name:<25}{took:7.2f} s")
    print(f"  program imports (pulumi, pulumi_postgresql, x402db) {imports:5.2f} s")
    print(f"  provider Configure              {configure:7.3f} s")


if __name__ == "__main__":
    main()
