"""What an attack on the derived comparison found, each kept as a test: options and rules on what
a migration made (a view's security_invoker), the grant option, a poisoned or foreign cache file,
a migration that cannot be derived or was adopted (said, never silent), and a verify file that
tries to leave the rolled-back transaction or lift its bounds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.utils.db import admin_dsn, drop_database, new_database, new_supabase_database
from x402db import SQL_DIR, access, db
from x402db.errors import UsageError
from x402db.local.scratch import EmbeddedScratch
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect
from x402db.verify.checks import Checklist
from x402db.verify.expected import cache, checks
from x402db.verify.expected.compare import differences
from x402db.verify.expected.derive import derive

KEYS = "public.user_openrouter_integrations"
VIEWS_UP = f"""CREATE VIEW public.integration_status WITH (security_invoker = true, security_barrier = true) AS
  SELECT user_id, is_enabled FROM {KEYS};
REVOKE ALL ON public.integration_status FROM anon;
CREATE SEQUENCE public.status_seq INCREMENT BY 1 MAXVALUE 1000;
CREATE TABLE public.status_log (id bigint PRIMARY KEY DEFAULT nextval('public.status_seq'));
ALTER SEQUENCE public.status_seq OWNED BY public.status_log.id;
REVOKE ALL ON public.status_log FROM anon;
ALTER TABLE public.status_log ENABLE ROW LEVEL SECURITY;
"""
VIEWS_DOWN = (
    "DROP VIEW public.integration_status;\nDROP TABLE public.status_log;\nDROP SEQUENCE IF EXISTS public.status_seq;\n"
)


def _sql_with(tmp_path: Path, name: str, up: str, down: str) -> Path:
    where = tmp_path / "sql"
    shutil.copytree(SQL_DIR, where)
    (where / f"{name}.up.sql").write_text(up)
    (where / f"{name}.down.sql").write_text(down)
    return where


def _deploy(dsn: str, sql_dir: Path) -> None:
    with db.connect(dsn) as conn:
        Engine(conn, migrations.load(sql_dir), detect(conn)).up()
        access.apply(conn)


def _found(dsn: str, expected) -> list[str]:
    with db.connect(dsn) as conn:
        return [str(d) for d in differences(conn, expected)]


def _as_admin(server, dsn: str, statement: str) -> None:
    with psycopg.connect(admin_dsn(server, dsn), autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    "statement, line",
    [
        (
            "ALTER VIEW public.integration_status SET (security_invoker = false)",
            "006: view public.integration_status: options is [security_barrier=true, security_invoker=false]",
        ),
        (
            "ALTER VIEW public.integration_status RESET (security_barrier)",
            "006: view public.integration_status: options",
        ),
        (
            "CREATE RULE quiet AS ON INSERT TO public.status_log DO INSTEAD NOTHING",
            "006: rule public.status_log.quiet: unexpected",
        ),
        ("ALTER SEQUENCE public.status_seq OWNED BY NONE", "006: sequence public.status_seq: owned by is none"),
        ("ALTER SEQUENCE public.status_seq INCREMENT BY 1000 CYCLE", "006: sequence public.status_seq: cycle is true"),
        ("ALTER TABLE public.status_log SET UNLOGGED", "006: table public.status_log: persistence is unlogged"),
    ],
)
def test_options_rules_and_sequences_of_what_a_migration_made_are_judged(server, tmp_path, statement, line):
    sql_dir = _sql_with(tmp_path, "006_views", VIEWS_UP, VIEWS_DOWN)
    expected = derive(EmbeddedScratch(), migrations.load(sql_dir), cache_dir=tmp_path / "cache")
    dsn = new_database(server)
    try:
        _deploy(dsn, sql_dir)
        assert _found(dsn, expected) == []
        _as_admin(server, dsn, statement)
        lines = _found(dsn, expected)
        assert any(x.startswith(line) for x in lines), lines
    finally:
        drop_database(server, dsn)


def test_the_grant_option_on_an_at_least_grant_is_judged(server, deployed_db, tmp_path):
    expected = derive(EmbeddedScratch(), cache_dir=tmp_path)
    _as_admin(server, deployed_db, f"GRANT ALL ON {KEYS} TO service_role WITH GRANT OPTION")
    lines = _found(deployed_db, expected)
    assert any(x.startswith(f"005: table_acl {KEYS} to service_role: grantable is ") for x in lines), lines


def test_a_cache_file_another_user_could_write_is_never_believed(server, deployed_db, tmp_path):
    """A poisoned expectation (005 owning nothing) would make every drift pass: it is derived anew."""
    shared = tmp_path / "shared"
    shared.mkdir()
    first = derive(EmbeddedScratch(), cache_dir=shared)
    poisoned = {**first.as_json(), "migrations": []}
    cache.store(first.key, poisoned, shared)
    assert derive(EmbeddedScratch(), cache_dir=shared).source == "cache"  # ours, in our 0700 directory
    shared.chmod(0o1777)  # a directory anyone may write to, as a shared CI cache can be
    again = derive(EmbeddedScratch(), cache_dir=shared)
    assert again.source == "derived" and again.migrations, "a file in a world-writable directory was believed"
    _as_admin(server, deployed_db, f"GRANT SELECT (encrypted_api_key) ON {KEYS} TO anon")
    assert any("column_acl" in x for x in _found(deployed_db, again))
    if os.geteuid() == 0:
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        cache.store(first.key, poisoned, private)
        os.chown(cache.path(first.key, private), 65534, 65534)  # written by another user (nobody)
        assert derive(EmbeddedScratch(), cache_dir=private).source == "derived"


def test_an_unwritable_cache_costs_a_derivation_never_the_verdict(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    expected = derive(EmbeddedScratch(), cache_dir=blocked / "cache")
    assert expected.source == "derived" and expected.migrations


SUPABASE_ONLY_UP = f"""-- x402:targets: supabase
CREATE POLICY "authenticated reads own status" ON {KEYS} FOR SELECT TO authenticated
  USING ((SELECT auth.uid()) = user_id);
"""
SUPABASE_ONLY_DOWN = f'DROP POLICY "authenticated reads own status" ON {KEYS};\n'


def test_a_migration_that_cannot_be_derived_is_said_and_blocks_no_deploy(server, tmp_path):
    sql_dir = _sql_with(tmp_path, "006_supabase_only", SUPABASE_ONLY_UP, SUPABASE_ONLY_DOWN)
    expected = derive(EmbeddedScratch(), migrations.load(sql_dir), cache_dir=tmp_path / "cache")
    dsn = new_supabase_database(server, "shape_a")
    try:
        _deploy(dsn, sql_dir)
        c = Checklist()
        with db.connect(dsn) as conn:
            checks.run(conn, c, expected)
        statuses = {(k.name, k.status) for k in c.checks}
        assert ("expected.005", "passed") in statuses and ("expected.006", "skipped") in statuses, c.checks
        assert not any(k.failed for k in c.checks), c.checks
        assert "cannot be derived" in next(k.detail for k in c.checks if k.name == "expected.006")
    finally:
        drop_database(server, dsn)


def test_an_adopted_migration_is_said_not_judged(server, deployed_db, tmp_path):
    expected = derive(EmbeddedScratch(), cache_dir=tmp_path)
    _as_admin(server, deployed_db, "UPDATE x402_private.schema_migrations SET kind = 'adopted' WHERE version = '005'")
    c = Checklist()
    with db.connect(deployed_db) as conn:
        checks.run(conn, c, expected)
    skipped = [k for k in c.checks if k.name == "expected.005"]
    assert [k.status for k in skipped] == ["skipped"] and "adopted" in skipped[0].detail, c.checks


def test_a_verify_file_that_controls_the_transaction_is_refused(tmp_path):
    sql_dir = _sql_with(tmp_path, "006_v", "SELECT 1;\n", "SELECT 1;\n")
    (sql_dir / "006_v.verify.sql").write_text("CREATE TABLE public.leaked (x int);\nCOMMIT;\n")
    with pytest.raises(UsageError, match="COMMIT would end the transaction smoke rolls back"):
        migrations.load(sql_dir)


CHILD = """
import sys, time
from x402db.local.scratch import EmbeddedScratch
with EmbeddedScratch().database() as dsn:
    print(dsn, flush=True)
    time.sleep(600)
"""


def test_a_killed_derivation_leaves_a_server_that_the_next_one_stops_and_deletes():
    import signal
    import subprocess
    import sys

    from x402db.local.scratch import PREFIX, sweep_abandoned

    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        dsn = child.stdout.readline().strip()
        assert dsn.startswith("postgresql://"), dsn
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        with psycopg.connect(dsn, connect_timeout=5) as conn:  # kill -9: nothing stopped the server
            assert conn.execute("SELECT 1").fetchone() == (1,)
        passfile = dict(p.split("=", 1) for p in dsn.split("?", 1)[1].split("&"))["passfile"]
        base = next(p for p in Path(passfile).parents if p.name.startswith(PREFIX))
        sweep_abandoned()
        assert not base.exists()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=3).close()
    finally:
        child.kill()
