#!/usr/bin/env python3
"""How long `pulumi preview` takes behind another session's lock, next to an unblocked one.

On one deployed database (a throwaway embedded PostgreSQL 18, target postgres): the wall time of
`pulumi preview` while a second session holds ACCESS EXCLUSIVE on the keys table in an open
transaction (it must stop with the sentence naming that session, never wait), against the same
preview with no lock held, each the median of N runs. Before the bound it waited as long as the
holder's transaction stayed open (still waiting after 45 s when it was stopped).
Usage: bench_blocked_preview.py [--runs N]   (needs `make pulumi-tools`; PULUMI_BIN or it runs it)
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import psycopg
from _common import throwaway_server

from x402db import ROOT

# The real-CLI harness lives in tests/, which a script in bench/ cannot import until the root is on
# the path (noqa: E402).
sys.path.insert(0, str(ROOT))
from tests.utils.real_pulumi import Project, Result, find_tools  # noqa: E402

KEYS_TABLE = "public.user_openrouter_integrations"
GIVE_UP_S = 120  # a preview that waits this long has no bound at all


def timed(fn: Callable[[], Result], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    tools, reason = find_tools()
    if tools is None:
        raise SystemExit(f"bench_blocked_preview: {reason}")
    with throwaway_server() as server:
        server.ensure_database("bench_blocked")
        project = Project(tools)
        try:
            project.init(
                "bench",
                {
                    "target": "postgres",
                    "host": "127.0.0.1",
                    "port": str(server.port()),
                    "database": "bench_blocked",
                    "username": server.superuser,
                    "sslmode": "disable",
                    "protect": "false",
                    "superuser": "true",
                },
                server.password,
            )
            project.run("up", "--yes", "--skip-preview").ok()
            free = timed(lambda: project.run("preview", "--expect-no-changes").ok(), runs)

            def blocked_preview() -> Result:
                r = project.run("preview", timeout=GIVE_UP_S)
                if r.returncode == 0 or "run it again when that session ends" not in r.output:
                    raise SystemExit(
                        f"bench_blocked_preview: preview behind the lock did not stop as it must:\n{r.output}"
                    )
                return r

            with psycopg.connect(server.url("bench_blocked")) as holder:  # the transaction stays open
                holder.execute(f"LOCK TABLE {KEYS_TABLE} IN ACCESS EXCLUSIVE MODE")
                blocked = timed(blocked_preview, runs)
                holder.rollback()
        finally:
            project.cleanup()
    print(f"pulumi preview, median of {runs} runs, one deployed database (PostgreSQL 18, target postgres)")
    print(f"  no lock held                          {free:7.2f} s   1.0x (baseline)")
    print(f"  behind ACCESS EXCLUSIVE on keys table {blocked:7.2f} s   {blocked / free:4.1f}x (stops, never waits)")


if __name__ == "__main__":
    main()
