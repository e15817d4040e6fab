#!/usr/bin/env python3
"""Writer stall while migration 005 is applied to a large x402_resources, ours vs naive.

Ours: the engine (catalog-only DDL in the transaction, VALIDATE and CREATE INDEX CONCURRENTLY
after). Naive: the same DDL in one transaction with validated constraints and a plain
CREATE INDEX. One continuous writer measures its worst insert latency during each.
Usage: bench_writer_stall.py [--rows N ...]   (default: 1,000,000 and 5,000,000)
"""

import argparse
import re
import time
from collections.abc import Callable
from functools import partial

import psycopg
from _common import Writer, baseline_with_rows, engine, throwaway_server

from x402db import db
from x402db.migrate import files as migrations


def naive_sql() -> str:
    m = migrations.find(migrations.load(), "005")
    body = m.up.transactional.replace("NOT VALID", "")
    # The foreign key is a step too (added once its index exists): naive adds it validated.
    steps = [s.replace("NOT VALID", "") for s in m.up.steps if "VALIDATE" not in s]
    return body + "\n" + "\n".join(re.sub(r"CONCURRENTLY\s+", "", s) for s in steps)


def apply_in_one_transaction(conn: psycopg.Connection, sql: str) -> None:
    with conn.transaction():
        conn.execute(sql)


def measure(dsn: str, apply: Callable[[], object]) -> tuple[float, float]:
    writer = Writer(dsn)
    writer.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    apply()
    t1 = time.perf_counter()
    time.sleep(0.3)
    writer.stop()
    return writer.worst_ms(t0, t1), writer.worst_ms(0, t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    args = parser.parse_args()
    print(f"{'rows':>10} {'ours worst':>11} {'naive worst':>12} {'naive/ours':>10} {'idle worst':>11}")
    with throwaway_server() as server:
        for rows in args.rows:
            ours_dsn = baseline_with_rows(server, f"ours_{rows}", rows)
            naive_dsn = baseline_with_rows(server, f"naive_{rows}", rows)
            e = engine(ours_dsn)
            ours, idle = measure(ours_dsn, e.up)
            e.conn.close()
            conn = db.connect(naive_dsn)
            naive_ms, _ = measure(naive_dsn, partial(apply_in_one_transaction, conn, naive_sql()))
            conn.close()
            print(f"{rows:>10,} {ours:>9.1f}ms {naive_ms:>10.1f}ms {naive_ms / ours:>9.1f}x {idle:>9.1f}ms")


if __name__ == "__main__":
    main()
