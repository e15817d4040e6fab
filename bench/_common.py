"""Shared by the benchmarks: a throwaway embedded server and a writer that times its inserts."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The benches run as scripts from bench/: the repository root goes on the path before anything of
# ours is imported, hence the imports below the statement (noqa: E402).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from x402db import db  # noqa: E402
from x402db.local.server import LocalServer, embedded_bindir  # noqa: E402
from x402db.migrate import files as migrations  # noqa: E402
from x402db.migrate.engine import Engine  # noqa: E402
from x402db.migrate.settings import Settings  # noqa: E402
from x402db.migrate.target import detect  # noqa: E402


@contextmanager
def throwaway_server(bindir: Path | None = None, superuser: str = "postgres") -> Iterator[LocalServer]:
    base = Path(tempfile.mkdtemp(prefix="x402db-bench-"))
    base.chmod(0o755)
    server = LocalServer(bindir or embedded_bindir(), base, superuser=superuser)
    server.start()
    os.environ["PGPASSFILE"] = str(server.passfile)  # the server asks for its password; libpq reads it here
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def value(conn: psycopg.Connection, query: str) -> Any:
    """The first column of a statement's one row (the benches make sure there is one)."""
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def baseline_with_rows(server: LocalServer, name: str, rows: int) -> str:
    """A database at migration 001 whose x402_resources holds `rows` rows."""
    dsn = server.ensure_database(name)
    with db.connect(dsn) as conn:
        Engine(conn, migrations.load(), detect(conn)).up(to="001")
        uid = value(conn, "INSERT INTO auth.users (email) VALUES ('bench@example.invalid') RETURNING id")
        conn.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) "
            "SELECT %s, (ARRAY['external','proxy','prompt','static','prompt_template'])[1 + g %% 5], 'r' || g "
            "FROM generate_series(1, %s) g",
            (uid, rows),
        )
        conn.execute("VACUUM ANALYZE public.x402_resources")
    return dsn


class Writer(threading.Thread):
    """Inserts into x402_resources one autocommit row at a time and records each latency."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.uid = value(self.conn, "SELECT id FROM auth.users LIMIT 1")
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            t0 = time.perf_counter()
            self.conn.execute(
                "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'proxy', 'w')",
                (self.uid,),
            )
            self.samples.append((t0, time.perf_counter() - t0))

    def stop(self) -> None:
        self.stop_flag.set()
        self.join()
        self.conn.close()

    def worst_ms(self, since: float = 0.0, until: float = float("inf")) -> float:
        window = [d for t, d in self.samples if since <= t <= until]
        return max(window) * 1000 if window else float("nan")


def engine(dsn: str, **settings: Any) -> Engine:
    conn = db.connect(dsn)
    return Engine(conn, migrations.load(), detect(conn), Settings(**settings))
