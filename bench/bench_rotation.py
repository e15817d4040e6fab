#!/usr/bin/env python3
"""Key rotation throughput on 1,000,000 rows with verification on, beside the SQL-only ceiling
(one plain UPDATE rewriting the same column of the same rows) and a naive row-by-row loop,
measured in one run. Targets: ours >= 50% of the ceiling, and >= 10x the naive loop.
Usage: bench_rotation.py [--rows N] [--naive-rows N] [--batch-size N]"""

import argparse
import time
import uuid

from _common import throwaway_server

from x402db import db
from x402db.keys.crypto import Context, Keyring
from x402db.keys.rotation import Rotator
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect

OLD, NEW = "bench-old-secret", "bench-new-secret"
T = "public.user_openrouter_integrations"


def seed(dsn: str, n: int) -> None:
    ring = Keyring(OLD)
    with db.connect(dsn) as c:
        Engine(c, migrations.load(), detect(c)).up()
        ids = [str(uuid.uuid4()) for _ in range(n)]
        with c.cursor().copy("COPY auth.users (id) FROM STDIN") as cp:
            for uid in ids:
                cp.write_row((uid,))
        with c.cursor().copy(f"COPY {T} (user_id, encrypted_api_key) FROM STDIN") as cp:
            for i, uid in enumerate(ids):
                cp.write_row((uid, ring.encrypt("sk-or-v1-" + f"{i:064x}")))
        c.execute(f"VACUUM ANALYZE {T}")


def naive(dsn: str, limit: int) -> float:
    """What a first script would do: one SELECT and one UPDATE per row, each autocommitted."""
    ring = Keyring(NEW, [OLD])
    with db.connect(dsn) as c:
        t0 = time.perf_counter()
        last = "00000000-0000-0000-0000-000000000000"
        for _ in range(limit):
            row = c.execute(
                f"SELECT t.user_id::text, t.encrypted_api_key FROM {T} t WHERE t.user_id > %s::uuid ORDER BY t.user_id LIMIT 1",
                (last,),
            ).fetchone()
            if row is None:
                break
            last, token = row
            plaintext = ring.decrypt(token, Context(last))
            c.execute(f"UPDATE {T} SET encrypted_api_key = %s WHERE user_id = %s", (ring.encrypt(plaintext), last))
        return limit / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--naive-rows", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=2000)
    args = p.parse_args()
    with throwaway_server() as server:
        dsn = server.ensure_database("rotation")
        seed(dsn, args.rows)
        with db.connect(dsn) as c:
            t0 = time.perf_counter()
            c.execute(f"UPDATE {T} SET encrypted_api_key = encrypted_api_key")
            ceiling = args.rows / (time.perf_counter() - t0)
            c.execute(f"VACUUM {T}")
        with db.connect(dsn) as c, db.connect(dsn) as w:
            t0 = time.perf_counter()
            report = Rotator(c, Keyring(NEW, [OLD]), batch_size=args.batch_size, write_conn=w).run(apply=True)
            ours = report.rotated / (time.perf_counter() - t0)
            assert report.rotated == args.rows and not report.undecryptable
        naive_dsn = server.ensure_database("rotation_naive")
        seed(naive_dsn, args.naive_rows)
        slow = naive(naive_dsn, args.naive_rows)
    print(f"rows: {args.rows:,} (naive loop on {args.naive_rows:,}), batch size {args.batch_size}")
    print(f"SQL-only ceiling (one UPDATE)      {ceiling:>10,.0f} rows/s")
    print(
        f"rotate_keys (verified, CAS)        {ours:>10,.0f} rows/s   {ours / ceiling:6.1%} of ceiling (target >= 50%)"
    )
    print(
        f"naive row-by-row loop              {slow:>10,.0f} rows/s   ours is {ours / slow:5.1f}x faster (target >= 10x)"
    )


if __name__ == "__main__":
    main()
