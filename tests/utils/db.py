"""Databases on the suite's servers: make, drop, deploy, dump. The servers themselves are the
fixtures of tests/fix_db.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from x402db import access, db
from x402db.local.server import LocalServer, embedded_bindir, system_bindir
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.settings import Settings
from x402db.migrate.target import detect

from .paths import FIXTURES

SERVERS = ["pg18", "pg15"]
# Two application-table shapes, so that no code can pass by matching one of them.
APP_SHAPES = ["shape_a", "shape_b"]
# Supabase's bootstrap superuser; `postgres` is an ordinary role there, as in production.
SUPERUSER = "supabase_admin"
# The suite's clusters live minutes, on loopback, and hold nothing: their one password is stored
# with fewer SCRAM iterations. Every connection still authenticates by scram-sha-256, the same
# exchange; the 4096 iterations PostgreSQL picks price a brute force on a stolen verifier, and
# cost about 6 ms of CPU per connection (client and server) over the suite's ~12,000 connections.
# Not fewer than 1000: lib/pq, the Go driver of Pulumi's provider, refuses a count of under four digits.
SCRAM_ITERATIONS = 1000

__all__ = [
    "APP_SHAPES",
    "FIXTURES",
    "SERVERS",
    "SUPERUSER",
    "admin_dsn",
    "bindir",
    "create_postgres_role",
    "deploy",
    "drop_database",
    "new_database",
    "new_supabase_database",
    "pg_dump_schema",
    "scram_verifier",
    "start_server",
]


def bindir(label: str) -> Path | None:
    """The binaries of server `label` (one of SERVERS, or pg17 for the tests that ask for it), or
    None when it is not installed."""
    if label == "pg17":
        from . import pg17

        return pg17.bindir()
    return embedded_bindir() if label == "pg18" else system_bindir()


def start_server(label: str, binaries: Path) -> LocalServer:
    """A fresh test cluster of `label` (bootstrapped by Supabase's superuser, with its `postgres`
    role), started on a free port; the caller stops it and removes `server.base`."""
    # Not under pytest's 0700 tmp root: as root, the server runs as the postgres OS user.
    base = Path(tempfile.mkdtemp(prefix=f"x402db-{label}-"))
    os.chmod(base, 0o755)
    server = LocalServer(binaries, base, fast=True, superuser=SUPERUSER)
    server.start()
    create_postgres_role(server)
    return server


def new_database(server: LocalServer) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    return server.ensure_database(name)


def drop_database(server: LocalServer, dsn: str) -> None:
    name = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_postgres_role(server: LocalServer) -> None:
    """Supabase's `postgres`, once per cluster: not a superuser, but CREATEROLE, CREATEDB,
    REPLICATION, BYPASSRLS, with the cluster's password (the server's passfile names every user)."""
    password = getattr(server, "password", None)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE postgres NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS LOGIN")
        if password:
            for role in (server.superuser, "postgres"):
                verifier = scram_verifier(password, SCRAM_ITERATIONS)
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
        conn.execute("""ALTER ROLE postgres SET search_path = "$user", public, extensions""")


def scram_verifier(password: str, iterations: int) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802, RFC 7677), for an ASCII
    password (which SASLprep leaves as it is). PostgreSQL takes it as given, iterations included."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server_key).decode()}"


def new_supabase_database(server: LocalServer, shape: str = "shape_a") -> str:
    """A database built the way Supabase builds one, before migration 005, with the application's
    tables in the given shape. Returns a DSN that connects as the non-superuser `postgres`."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.ensure_database(name, owner="postgres")
    with psycopg.connect(server.dsn(name), autocommit=True) as conn:  # as supabase_admin
        conn.execute((FIXTURES / "supabase_platform.sql").read_text())
    dsn = server.dsn(name, user="postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / f"app_{shape}.sql").read_text())
    return dsn


def admin_dsn(server: LocalServer, dsn: str) -> str:
    """The same database, as the cluster's superuser (for setup a test needs and Supabase forbids)."""
    return server.dsn(str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]))


def deploy(dsn: str, target: str | None = None, settings: Settings | None = None) -> None:
    with db.connect(dsn) as conn:
        Engine(conn, migrations.load(), detect(conn, target), settings).up()
        access.apply(conn)


def pg_dump_schema(server: LocalServer, dsn: str, *options: str) -> str:
    out = subprocess.run(
        [str(server.bindir / "pg_dump"), "--schema-only", "--no-owner", *options, "--dbname", dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # pg_dump >= 17.6 prints a random \restrict token per run.
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))
