#!/usr/bin/env python3
"""What writers feel while `migrate.py down` of 005 is refused, today's engine vs the old one.

A database with 005 applied and N x402_resources rows (default 1,000,000), a few of them
`openrouter_instant` (so the down is always refused) and a few stored keys. Writers insert and
update x402_resources continuously from several connections. Over windows of the same length, in
one run, it prints their worst and 99th-percentile latency:
- idle: no down;
- old: refusals back to back as the engine ran them before: LOCK the guarded tables IN SHARE ROW
  EXCLUSIVE MODE, then count the guards, then roll back (the old statements, run inline);
- new: refusals back to back through the engine itself (`Engine.down`), which counts first under
  no lock that blocks a writer and refuses there.
Goal: the worst writer during refusals within 10 ms of its idle worst.
Usage: bench_refused_revert.py [--rows N] [--seconds S] [--writers W]
"""

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from _common import Writer, baseline_with_rows, engine, throwaway_server, value
from psycopg import sql

from x402db.errors import Refused
from x402db.migrate import files as migrations

INSTANT_ROWS = 10
KEYS = 10


class MixedWriter(Writer):
    """One application connection: the common writer's insert, then an update of a random existing
    row, in autocommit, timing each statement."""

    def __init__(self, dsn: str, ids: list[str], seed: int) -> None:
        super().__init__(dsn)
        self.ids, self.rng = ids, random.Random(seed)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            t0 = time.perf_counter()
            self.conn.execute(
                "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'proxy', 'w')",
                (self.uid,),
            )
            t1 = time.perf_counter()
            self.samples.append((t0, t1 - t0))
            self.conn.execute(
                "UPDATE public.x402_resources SET name = 'u', updated_at = now() WHERE id = %s",
                (self.rng.choice(self.ids),),
            )
            self.samples.append((t1, time.perf_counter() - t1))


class LockWaits(threading.Thread):
    """Samples the writers' backends in pg_stat_activity: how many samples found one waiting on a
    lock. Latency on a shared machine also moves with CPU and fsync; this counts only lock waits."""

    def __init__(self, dsn: str, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pids, self.samples, self.waiting = pids, 0, 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            n = value(
                self.conn,
                sql.SQL("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = ANY({})")
                .format(sql.Literal(self.pids))
                .as_string(self.conn),
            )
            self.samples += len(self.pids)
            self.waiting += n
            time.sleep(0.002)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()
        self.conn.close()


def deployed_and_refused(server: Any, rows: int) -> str:
    """005 applied over `rows` rows, with rows that make its down refuse and keys it would drop."""
    dsn = baseline_with_rows(server, "refused_revert", rows)
    e = engine(dsn)
    with e.conn:
        e.up()
        uid = value(e.conn, "SELECT id FROM auth.users LIMIT 1")
        e.conn.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) "
            "SELECT %s, 'openrouter_instant', 'i' || g FROM generate_series(1, %s) g",
            (uid, INSTANT_ROWS),
        )
        for i in range(KEYS):
            k = value(e.conn, f"INSERT INTO auth.users (email) VALUES ('k{i}@example.invalid') RETURNING id")
            e.conn.execute(
                "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'x')", (k,)
            )
        e.conn.execute("VACUUM ANALYZE public.x402_resources")
    return dsn


def old_refusal(conn: psycopg.Connection, m: migrations.Migration) -> None:
    """The refused down as the engine ran it before: writers held off first, then the counts."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL lock_timeout = '1s'")
        for table in m.down.lock_tables:
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(*table.split("."))))
        fired = [g for g in m.down.guards if value(conn, g.sql)]
        assert any(g.always for g in fired), "the old down would not have been refused"


def window(
    dsn: str, ids: list[str], writers: int, seconds: float, refuse: Callable[[], None] | None
) -> tuple[float, float, int, int, float, str]:
    """(worst ms, p99 ms, statements, refusals, ms per refusal, lock-wait samples) of all writers over `seconds`."""
    ws = [MixedWriter(dsn, ids, seed) for seed in range(writers)]
    for w in ws:
        w.start()
    waits = LockWaits(dsn, [w.conn.info.backend_pid for w in ws])
    waits.start()
    time.sleep(0.5)
    waits.samples = waits.waiting = 0
    t0 = time.perf_counter()
    refusals = 0
    if refuse is None:
        time.sleep(seconds)
    else:
        while time.perf_counter() - t0 < seconds:
            refuse()
            refusals += 1
    t1 = time.perf_counter()
    waits.stop()
    for w in ws:
        w.stop()
    lat = [d * 1000 for w in ws for t, d in w.samples if t0 <= t <= t1]
    q99 = statistics.quantiles(lat, n=100)[98] if len(lat) >= 100 else max(lat)
    per = (t1 - t0) * 1000 / refusals if refusals else 0.0
    return max(lat), q99, len(lat), refusals, per, f"{waits.waiting}/{waits.samples}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=3)
    args = parser.parse_args()
    with throwaway_server() as server:
        dsn = deployed_and_refused(server, args.rows)
        e = engine(dsn)
        m = migrations.find(e.known, "005")
        ids = [r[0] for r in e.conn.execute("SELECT id FROM public.x402_resources WHERE random() < 0.02 LIMIT 20000")]
        old_conn = psycopg.connect(dsn, autocommit=True)

        def new_refusal() -> None:
            try:
                e.down()
            except Refused:
                return
            raise AssertionError("the down was not refused")

        try:
            e.down()
        except Refused as exc:
            print(f"the refusal: {exc}")
        print(
            f"x402_resources: {args.rows:,} rows ({INSTANT_ROWS} openrouter_instant), {KEYS} keys; "
            f"{args.writers} writers (insert + update), {args.seconds:g} s windows"
        )
        print(
            f"{'window':<34} {'worst':>9} {'p99':>9} {'stmts':>7} {'refusals':>8} {'ms/refusal':>10}"
            f"  {'writer samples waiting on a lock':>32}"
        )
        results = {}
        for label, refuse in (
            ("idle", None),
            ("refusals, old (lock, then count)", lambda: old_refusal(old_conn, m)),
            ("refusals, new (count, no lock)", new_refusal),
            ("idle (again)", None),
        ):
            worst, q99, n, refusals, per, waited = window(dsn, ids, args.writers, args.seconds, refuse)
            results[label] = (worst, q99)
            print(f"{label:<34} {worst:7.2f}ms {q99:7.2f}ms {n:>7} {refusals:>8} {per:>10.0f}  {waited:>32}")
        idle = max(results["idle"][0], results["idle (again)"][0])
        old, new = results["refusals, old (lock, then count)"][0], results["refusals, new (count, no lock)"][0]
        print(
            f"worst writer: old {old:.1f} ms = {old / idle:.1f}x idle, new {new:.1f} ms = {new / idle:.1f}x idle "
            f"(new - idle worst = {new - idle:+.1f} ms; goal <= 10 ms); old/new = {old / new:.1f}x"
        )
        old_conn.close()
        e.conn.close()


if __name__ == "__main__":
    main()
