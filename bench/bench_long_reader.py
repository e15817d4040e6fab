#!/usr/bin/env python3
"""A long reader holds a lock on x402_resources for 10 s while migration 005 runs.

Writers must never stall longer than lock_timeout + 50 ms (our DDL gives up its place in the
lock queue after lock_timeout instead of blocking everyone behind it), and the migration either
retries to success after the reader ends or gives up leaving the schema unchanged.
"""

import threading
import time

from _common import Writer, baseline_with_rows, engine, throwaway_server, value

from x402db import db
from x402db.errors import BundleError
from x402db.local.server import LocalServer

LOCK_TIMEOUT_MS = 200
READER_S = 10.0


def run(server: LocalServer, name: str, retries: int) -> None:
    dsn = baseline_with_rows(server, name, 100_000)
    reader = db.connect(dsn, autocommit=False)
    reader.execute("SELECT count(*) FROM public.x402_resources")  # ACCESS SHARE held until rollback
    writer = Writer(dsn)
    writer.start()
    timer = threading.Timer(READER_S, reader.rollback)
    timer.start()
    e = engine(dsn, lock_timeout=f"{LOCK_TIMEOUT_MS}ms", retries=retries, backoff_s=1.0)
    t0 = time.perf_counter()
    try:
        e.up()
        outcome = f"applied after {time.perf_counter() - t0:.1f}s"
    except BundleError as exc:
        outcome = f"gave up after {time.perf_counter() - t0:.1f}s: {str(exc)[:60]}..."
    applied = value(e.conn, "SELECT to_regclass('public.user_openrouter_integrations') IS NOT NULL")
    time.sleep(0.3)
    writer.stop()
    worst = writer.worst_ms()
    limit = LOCK_TIMEOUT_MS + 50
    print(
        f"retries={retries:<2} writer worst stall {worst:6.1f} ms (limit {limit} ms: {'ok' if worst <= limit else 'EXCEEDED'}); "
        f"migration {outcome}; schema {'migrated' if applied else 'unchanged'}"
    )
    e.conn.close()
    timer.cancel()
    timer.join()
    reader.close()


def main() -> None:
    with throwaway_server() as server:
        run(server, "patient", retries=6)  # 1+2+4+8 s of backoff outlasts the 10 s reader
        run(server, "impatient", retries=2)  # gives up while the reader still holds the lock


if __name__ == "__main__":
    main()
