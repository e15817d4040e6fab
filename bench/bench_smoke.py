#!/usr/bin/env python3
"""Read-only smoke on a deployed database: the hand-written catalog checks alone (the baseline,
what smoke ran before every migration was judged from its own SQL), against the same checks plus
the derived comparison, with the derivation served from its cache and derived anew (a cache of
its own, emptied before each run). Medians of interleaved runs, in one process, as ratios.
Goal: cached at most 2x the baseline, and at most 1 s."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import throwaway_server  # the repository root is on the path from here on

from x402db import access, db
from x402db.local.scratch import EmbeddedScratch
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect
from x402db.verify.expected.derive import derive
from x402db.verify.smoke import run_checks

ROUNDS = 7


def seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    with throwaway_server() as server:
        dsn = server.ensure_database("bench_smoke")
        with db.connect(dsn) as conn:
            Engine(conn, migrations.load(), detect(conn)).up()
            access.apply(conn)
        scratch = EmbeddedScratch()
        warm = Path(tempfile.mkdtemp(prefix="x402db-bench-expected-"))
        cold = Path(tempfile.mkdtemp(prefix="x402db-bench-expected-cold-"))
        try:
            derive(scratch, cache_dir=warm)  # fills the warm cache once

            def baseline() -> None:
                assert run_checks(dsn, read_only=True).passed

            def cached() -> None:
                assert run_checks(dsn, read_only=True, expectation=derive(scratch, cache_dir=warm)).passed

            def uncached() -> None:
                shutil.rmtree(cold, ignore_errors=True)
                cold.mkdir()
                assert run_checks(dsn, read_only=True, expectation=derive(scratch, cache_dir=cold)).passed

            times: dict[str, list[float]] = {"baseline": [], "cached": [], "uncached": []}
            for _ in range(ROUNDS):
                for name, fn in (("baseline", baseline), ("cached", cached), ("uncached", uncached)):
                    times[name].append(seconds(fn))
        finally:
            shutil.rmtree(warm, ignore_errors=True)
            shutil.rmtree(cold, ignore_errors=True)
    base = statistics.median(times["baseline"])
    print(f"read-only smoke, median of {ROUNDS} interleaved runs on a deployed PostgreSQL 18:")
    print(f"  baseline (hand-written catalog checks only)  {base * 1000:8.1f} ms")
    for name in ("cached", "uncached"):
        t = statistics.median(times[name])
        print(f"  + derived comparison, {name:<8}             {t * 1000:8.1f} ms  = {t / base:5.2f}x baseline")
    ok = statistics.median(times["cached"]) <= min(2 * base, 1.0)
    print(f"goal: cached at most 2x the baseline and at most 1 s: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
