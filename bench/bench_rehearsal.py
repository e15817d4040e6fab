#!/usr/bin/env python3
"""The release rehearsed under the application's load, on a Supabase-built database.

Traffic as PostgREST sends it (service_role, and authenticated users with their own claims)
runs through: a quiet window, up, a refused down, down (--allow-data-loss), up again, and a key
rotation. Per phase: requests, errors by SQLSTATE, p50/p99/max latency against the quiet window,
and rows or keys lost. Exit 0 when every phase is clean.
Usage: bench_rehearsal.py [--scale small|full] [--resources N --models N --users N]
       [--connections N --rate R --phase-seconds S] [--pg 15|18] [--json]
  small (default): 20,000 resources, 200 models, 2,000 users, 4 connections, 60 req/s, 5 s
  full (the issue's): 1,000,000 resources, 2,000 models, 50,000 users, 12 connections, 240 req/s, 20 s
"""

import argparse
import os
import shutil
import sys

from _common import throwaway_server
from rehearsal.fixture import Volume
from rehearsal.report import as_json, as_table
from rehearsal.run import Load, rehearse

from tests.utils.db import SUPERUSER, create_postgres_role
from x402db.cli.common import quiet
from x402db.local.server import embedded_bindir, system_bindir

SCALES = {
    "small": (Volume(resources=20_000, models=200, users=2_000), Load(4, 60, 5, 500)),
    "full": (Volume(resources=1_000_000, models=2_000, users=50_000), Load(12, 240, 20, 2_000)),
}


def progress_printer():
    """A bar per phase at a terminal; nothing otherwise (the `say` lines are CI's record)."""
    if quiet():
        return lambda *a: None, lambda line: print(f"rehearsal: {line}", file=sys.stderr, flush=True)
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(phase: str, elapsed: float, planned: float) -> None:
        bar = bars.get(phase)
        if bar is None:
            for old in bars.values():
                old.close()
            # A terminal that reports no size (0x0) makes tqdm print nothing: as rotate_keys does,
            # give it get_terminal_size's answer, which falls back to 80x24.
            size = shutil.get_terminal_size()
            bar = bars[phase] = tqdm(
                total=round(planned, 1),
                desc=f"{phase:<12}",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s",
                file=sys.stderr,
                leave=False,
                ncols=size.columns,
                nrows=size.lines,
            )
        bar.n = round(elapsed, 1)
        bar.refresh()

    def say(line: str) -> None:
        tqdm.write(f"rehearsal: {line}", file=sys.stderr)

    return progress, say


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=SCALES, default="small")
    for name in ("resources", "models", "users", "connections", "active-users"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--rate", type=float, help="requests per second, all connections together")
    p.add_argument("--phase-seconds", type=float, help="the least length of each phase")
    p.add_argument(
        "--pg", choices=["15", "18"], help="15: the system's (as Supabase runs), 18: embedded; default 15 if installed"
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = p.parse_args()
    volume, load = SCALES[args.scale]
    volume = Volume(args.resources or volume.resources, args.models or volume.models, args.users or volume.users)
    load = Load(
        args.connections or load.connections,
        args.rate or load.rate,
        args.phase_seconds or load.seconds,
        args.active_users or load.active_users,
    )
    system = system_bindir()
    if args.pg == "15" and system is None:
        p.error("--pg 15 needs the system PostgreSQL (postgresql-15); none is installed")
    bindir = embedded_bindir() if args.pg == "18" or system is None else system
    progress, say = progress_printer()
    with throwaway_server(bindir, superuser=SUPERUSER) as server:
        create_postgres_role(server)
        context = {
            "server": server.version(),
            "resources": volume.resources,
            "models": volume.models,
            "users": volume.users,
            "connections": load.connections,
            "rate": load.rate,
            "phase_seconds": load.seconds,
        }
        phases = rehearse(server, volume, load, progress, say)
    print(as_json(phases, context) if args.json else as_table(phases, context))
    return 0 if all(ph.clean for ph in phases) else 1


if __name__ == "__main__":
    os.environ.setdefault("PGAPPNAME", "bench-rehearsal")
    sys.exit(main())
