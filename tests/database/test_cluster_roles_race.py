"""Roles belong to the server, not to a database: a fleet that migrates several plain-PostgreSQL
tenants of one new server at once has every one of them find the API roles missing and create
them. Each must succeed, on a server of its own (the session's servers have the roles already)."""

from __future__ import annotations

import shutil
import threading

import pytest

from tests.utils.db import bindir, new_database, start_server
from x402db import db
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect

DATABASES = 4


def test_tenants_of_one_new_server_migrated_at_once_all_create_the_roles():
    binaries = bindir("pg18")
    if binaries is None:
        pytest.skip("the embedded PostgreSQL 18 is not available")
    server = start_server("pg18", binaries)
    try:
        dsns = [new_database(server) for _ in range(DATABASES)]
        barrier = threading.Barrier(DATABASES)
        errors: list[str] = []

        def migrate(dsn: str) -> None:
            try:
                with db.connect(dsn) as conn:
                    engine = Engine(conn, migrations.load(), detect(conn, "postgres"))
                    barrier.wait()
                    engine.up(to="000")
            except Exception as exc:  # collected: a thread's exception would vanish
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=migrate, args=(dsn,)) for dsn in dsns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for dsn in dsns:
            with db.connect(dsn) as conn:
                row = conn.execute("SELECT state FROM x402_private.schema_migrations WHERE version = '000'").fetchone()
                assert row == ("applied",), dsn
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
