"""Reverting the platform compat layer (000) on target postgres drops only what it created.

Roles are cluster-wide, so these tests run on a cluster of their own (one per server version)
where no other test's database holds the API roles: there the compat layer really creates
them, and its revert has to decide whether it may drop them. A business table owned by
service_role (1,000 rows) and a table in another schema owned by authenticated must survive
every revert path, with --allow-data-loss given, and the output must name them."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from x402db import db
from x402db.cli import deploy as deploy_cli
from x402db.migrate import ledger, files as migrations
from x402db.migrate.engine import Engine
from x402db.local.server import LocalServer
from x402db.migrate.target import detect

from .conftest import SERVERS, _bindir, deploy, pg_dump_schema, run_script
from .test_pulumi_dynamic_host import Host, host, program_inputs  # noqa: F401 (host is a fixture)

API_ROLES = ("anon", "authenticated", "service_role", "authenticator")


@pytest.fixture(scope="module", params=SERVERS)
def bare_server(request):
    bindir = _bindir(request.param)
    if bindir is None:
        pytest.skip("the system PostgreSQL server is not installed")
    base = Path(tempfile.mkdtemp(prefix=f"x402db-bare-{request.param}-"))
    os.chmod(base, 0o755)
    server = LocalServer(bindir, base, fast=True)  # superuser `postgres`, like make deploy's server
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def compat_db(bare_server):
    """A plain database where the compat layer will create the API roles itself."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = bare_server.ensure_database(name)
    yield dsn
    with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in API_ROLES:  # the next test starts from a cluster without them
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _business_objects(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.invoices (id int PRIMARY KEY, total numeric NOT NULL)")
        c.execute("INSERT INTO public.invoices SELECT g, g * 1.5 FROM generate_series(1, 1000) g")
        c.execute("ALTER TABLE public.invoices OWNER TO service_role")
        c.execute("CREATE SCHEMA reporting")
        c.execute("CREATE TABLE reporting.daily (day date PRIMARY KEY)")
        c.execute("INSERT INTO reporting.daily VALUES ('2024-01-01')")
        c.execute("ALTER TABLE reporting.daily OWNER TO authenticated")


def _assert_business_objects_survive(dsn: str, output: str | None) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM public.invoices").fetchone()[0] == 1000
        assert c.execute("SELECT count(*) FROM reporting.daily").fetchone()[0] == 1
        owners = dict(c.execute("SELECT relname, relowner::regrole::text FROM pg_class WHERE relname IN ('invoices', 'daily')").fetchall())
        assert owners == {"invoices": "service_role", "daily": "authenticated"}
        roles = {r[0] for r in c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(API_ROLES),))}
        # The roles that own business objects, or hold grants on them (the default privileges gave
        # anon ALL on invoices), are kept; authenticator, created for nothing else, is gone.
        assert roles == {"anon", "service_role", "authenticated"}
        # The compat layer's own objects are gone, and the ledger says so.
        assert c.execute("SELECT to_regnamespace('auth')").fetchone()[0] is None
        assert ledger.entries(c) == {}
    if output is None:  # Pulumi's delete has no output channel for the names
        return
    assert "kept role service_role" in output and "table invoices" in output
    assert "kept role authenticated" in output and "table reporting.daily" in output
    assert "kept role anon: it still holds privileges on table invoices" in output


def test_migrate_down_to_base_keeps_business_objects_and_names_them(compat_db):
    deploy(compat_db)
    _business_objects(compat_db)
    r = run_script("migrate.py", "down", "--to", "base", "--allow-data-loss", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    _assert_business_objects_survive(compat_db, r.stdout + r.stderr)
    # --json carries the same notes.
    deploy(compat_db)
    r = run_script("migrate.py", "down", "--to", "base", "--json", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    notes = [n for c in json.loads(r.stdout)["changes"] for n in c["notes"]]
    assert any("kept role service_role" in n and "invoices" in n for n in notes)


def test_make_revert_keeps_business_objects(monkeypatch, capsys, bare_server, compat_db):
    deploy(compat_db)
    _business_objects(compat_db)
    # scripts/local_db.py revert, pointed at this cluster instead of the user's .local/ server.
    monkeypatch.setattr(deploy_cli, "local_server", lambda: bare_server)
    monkeypatch.setattr(deploy_cli, "LOCAL_DB", psycopg.conninfo.conninfo_to_dict(compat_db)["dbname"])
    assert deploy_cli.local_main(["revert", "--allow-data-loss"]) == 0
    out = capsys.readouterr()
    assert "reverted: 005_add_openrouter_integration, 001_baseline, 000_platform_compat" in out.out
    _assert_business_objects_survive(compat_db, out.out + out.err)


def test_pulumi_delete_of_compat_keeps_business_objects(host, compat_db):
    h = Host(host)
    inputs = program_inputs(compat_db)
    outs = {}
    for version in ("000", "001", "005"):
        checked, failures = h.check({**inputs[version], "allow_data_loss": True})
        assert failures == []
        _, outs[version] = h.create(checked)
    _business_objects(compat_db)
    for version in ("005", "001", "000"):
        h.delete(version, outs[version])
    _assert_business_objects_survive(compat_db, None)


def test_clean_revert_restores_the_empty_schema_and_drops_the_roles(bare_server, compat_db):
    before = pg_dump_schema(bare_server, compat_db)
    deploy(compat_db)
    with db.connect(compat_db) as conn:
        e = Engine(conn, migrations.load(), detect(conn))
        e.down(to="base")
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(API_ROLES),))}
        assert roles == set()
        conn.execute("DROP SCHEMA x402_private CASCADE")  # the bookkeeping schema stays by design
    assert pg_dump_schema(bare_server, compat_db) == before


def test_roles_found_existing_are_never_dropped(bare_server, compat_db):
    with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
        c.execute("CREATE ROLE anon NOLOGIN")
    deploy(compat_db)
    with db.connect(compat_db) as conn:
        Engine(conn, migrations.load(), detect(conn)).down(to="base")
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'anon'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'service_role'").fetchone()[0] == 0


def test_business_objects_on_the_compat_auth_users_are_never_dropped(compat_db):
    # The compat layer created auth.users, but a trigger, an index and a column the project hung
    # on it are the project's. DROP TABLE ... RESTRICT drops them silently (they depend on the
    # table automatically), and with no row in auth.users no guard asks for --allow-data-loss.
    deploy(compat_db)
    with psycopg.connect(compat_db, autocommit=True) as c:
        c.execute("CREATE TABLE public.signups (id uuid)")
        c.execute("CREATE FUNCTION public.on_signup() RETURNS trigger LANGUAGE plpgsql"
                  " AS 'BEGIN INSERT INTO public.signups VALUES (NEW.id); RETURN NEW; END'")
        c.execute("CREATE TRIGGER biz_on_signup AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.on_signup()")
        c.execute("CREATE INDEX biz_users_email ON auth.users (email)")
        c.execute("ALTER TABLE auth.users ADD COLUMN tenant text")
    r = run_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(compat_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'biz_on_signup'").fetchone()[0] == 1
        assert c.execute("SELECT to_regclass('auth.biz_users_email') IS NOT NULL").fetchone()[0]
        assert c.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'auth.users'::regclass AND attname = 'tenant'").fetchone()[0] == 1
    assert "kept table auth.users" in r.stdout and "biz_on_signup" in r.stdout and "biz_users_email" in r.stdout
    assert "column tenant" in r.stdout
