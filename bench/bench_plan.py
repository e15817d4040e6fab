#!/usr/bin/env python3
"""`migrate.py plan` on a large x402_resources: its wall time, and what a concurrent writer feels.

Two databases with N rows (default 1,000,000): one at 001 (plan up: 005 pending), one with 005
applied (plan --down: the guards count every row). One writer inserts continuously; its worst
and 99th-percentile insert latency while plans run back to back is printed next to the same
figures over an equally long window with no plan, in the same run.
Usage: bench_plan.py [--rows N] [--seconds S]
"""

import argparse
import statistics
import subprocess
import sys
import threading
import time

import psycopg
from _common import Writer, baseline_with_rows, engine, throwaway_server

from x402db import ROOT
from x402db.migrate.files import Direction
from x402db.plan.planner import Planner


def plan_times(dsn: str, direction: Direction, n: int = 5) -> list[float]:
    e = engine(dsn)
    out = []
    with e.conn:
        for _ in range(n):
            t0 = time.perf_counter()
            Planner(e).build(direction)
            out.append(time.perf_counter() - t0)
    return out


def cli_time(dsn: str, *args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/migrate.py"), "plan", "--json", "--dsn", dsn, *args],
        check=False,
        capture_output=True,
    )
    return time.perf_counter() - t0


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000 if len(samples) >= 100 else max(samples) * 1000


class LockWaits(threading.Thread):
    """Samples the writer's backend in pg_stat_activity: how often it was waiting on a lock.
    Latency on a shared 2-core machine also moves with CPU load; this counts only lock waits."""

    def __init__(self, dsn: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid, self.samples, self.waiting = pid, 0, 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            row = self.conn.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (self.pid,)
            ).fetchone()
            self.samples += 1
            self.waiting += bool(row and row[0])

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()
        self.conn.close()


def writer_window(dsn: str, seconds: float, direction: Direction | None) -> tuple[float, float, int, int, str]:
    """(worst ms, p99 ms, inserts, plans, lock-wait samples) of one writer over `seconds`, with plans
    back to back or none."""
    writer = Writer(dsn)
    writer.start()
    waits = LockWaits(dsn, writer.conn.info.backend_pid)
    waits.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    plans = 0
    if direction:
        e = engine(dsn)
        with e.conn:
            while time.perf_counter() - t0 < seconds:
                Planner(e).build(direction)
                plans += 1
    else:
        time.sleep(seconds)
    t1 = time.perf_counter()
    writer.stop()
    waits.stop()
    window = [d for t, d in writer.samples if t0 <= t <= t1]
    return max(window) * 1000, p99(window), len(window), plans, f"{waits.waiting}/{waits.samples}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with throwaway_server() as server:
        up_dsn = baseline_with_rows(server, "plan_up", args.rows)
        down_dsn = baseline_with_rows(server, "plan_down", args.rows)
        e = engine(down_dsn)
        with e.conn:
            e.up()
        print(f"x402_resources: {args.rows:,} rows")
        for label, dsn, direction, cli_args in (
            ("plan (up, 005 pending)", up_dsn, Direction.UP, ()),
            ("plan --down (guards count)", down_dsn, Direction.DOWN, ("--down",)),
        ):
            times = plan_times(dsn, direction)
            print(
                f"{label:<28} wall: median {statistics.median(times) * 1000:7.1f} ms, max {max(times) * 1000:7.1f} ms"
                f" (in process, 5 runs); CLI incl. interpreter start {cli_time(dsn, *cli_args) * 1000:7.1f} ms; target < 1000 ms"
            )
        print(
            f"{'writer, ' + str(args.seconds) + ' s window':<28} {'worst':>9} {'p99':>9} {'inserts':>8} {'plans':>6}"
            f"  {'samples waiting on a lock':>26}"
        )
        windows: list[tuple[str, str, Direction | None]] = [
            ("no plan", down_dsn, None),
            ("plans back to back (up)", up_dsn, Direction.UP),
            ("plans back to back (down)", down_dsn, Direction.DOWN),
            ("no plan (again)", down_dsn, None),
        ]
        for label, dsn, window in windows:
            worst, q99, n, plans, waited = writer_window(dsn, args.seconds, window)
            print(f"{label:<28} {worst:7.2f}ms {q99:7.2f}ms {n:>8} {plans:>6}  {waited:>26}")


if __name__ == "__main__":
    main()
