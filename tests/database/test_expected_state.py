"""Every applied migration verified from its own SQL: a freshly deployed database has no
difference from what the migrations derive, on both targets and both server versions, and each
kind of drift made by hand is reported on one line naming the migration and the object."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.utils.db import admin_dsn, deploy, drop_database, new_database, new_supabase_database
from tests.utils.drifts import DRIFTS, KEYS, ON_SUPABASE, USERS_POLICY
from tests.utils.paths import FIXTURES
from x402db import SQL_DIR, access, db
from x402db.local.scratch import EmbeddedScratch
from x402db.local.server import LocalServer, system_bindir
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect
from x402db.verify.checks import Checklist
from x402db.verify.expected import cache, checks
from x402db.verify.expected.compare import differences, owners
from x402db.verify.expected.derive import derive


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("expected-cache")


@pytest.fixture(scope="session")
def expectation(cache_dir):
    """Derived once per session on the embedded server (18), as in production, and judged against
    both 15 and 18: the facts must not depend on the server's version."""
    return derive(EmbeddedScratch(), cache_dir=cache_dir)


def found(dsn: str, expected, **kw) -> list[str]:
    with db.connect(dsn) as conn:
        return [str(d) for d in differences(conn, expected, **kw)]


def applied_by(dsn: str) -> str:
    with db.connect(dsn) as conn:
        return (
            conn.execute("SELECT applied_by FROM x402_private.schema_migrations WHERE version = '005'")
            .fetchone()[0]
            .split(" (")[0]
        )


def test_a_fresh_deploy_has_no_difference(deployed_any, expectation):
    assert found(deployed_any, expectation) == []


def test_the_expectation_is_the_same_derived_on_15_and_18(expectation, tmp_path):
    bindir = system_bindir()
    if bindir is None:
        pytest.skip("the system PostgreSQL server is not installed")
    other = derive(EmbeddedScratch(bindir), cache_dir=tmp_path)
    assert other.server_major != expectation.server_major
    assert other.as_json()["migrations"] == expectation.as_json()["migrations"]


def _drift(server, dsn: str, statement: str) -> None:
    with psycopg.connect(admin_dsn(server, dsn), autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.parametrize("label, statement, line", DRIFTS, ids=[d[0] for d in DRIFTS])
def test_each_drift_is_reported_on_postgres(server, deployed_db, expectation, label, statement, line):
    _drift(server, deployed_db, statement)
    want = line.format(owner=applied_by(deployed_db))
    lines = found(deployed_db, expectation)
    assert any(x.startswith(want) for x in lines), lines


@pytest.mark.parametrize(
    "label, statement, line",
    [d for d in DRIFTS if d[0] in ON_SUPABASE],
    ids=sorted(ON_SUPABASE, key=[d[0] for d in DRIFTS].index),
)
def test_each_drift_is_reported_on_supabase(server, supabase_db, expectation, label, statement, line):
    deploy(supabase_db)
    assert found(supabase_db, expectation) == []
    _drift(server, supabase_db, statement)
    want = line.format(owner="postgres")
    lines = found(supabase_db, expectation)
    assert any(x.startswith(want) for x in lines), lines
    # Only 005 ran there (000 and 001 target postgres): nothing else is judged.
    assert {x.split(":")[0] for x in lines} == {"005"}


def test_the_verdict_does_not_depend_on_who_connects_or_their_search_path(server, supabase_db, expectation):
    deploy(supabase_db)
    _drift(
        server,
        supabase_db,
        f"ALTER TABLE {KEYS} OWNER TO authenticated; ALTER POLICY {USERS_POLICY} ON {KEYS} USING (true)",
    )
    as_admin = found(admin_dsn(server, supabase_db), expectation)
    with db.connect(supabase_db) as conn:  # Supabase's postgres: no superuser, its own search_path
        conn.execute("SET search_path = auth, extensions, public")
        as_postgres = [str(d) for d in differences(conn, expectation)]
    assert as_admin == as_postgres and len(as_admin) >= 2


def test_an_app_table_is_judged_only_by_what_005_added(server, supabase_db, expectation):
    """x402_resources on Supabase has columns, policies and grants the bundle never wrote; a change
    to them is not 005's, a change to what 005 added is."""
    deploy(supabase_db)
    _drift(
        server,
        supabase_db,
        "ALTER TABLE public.x402_resources ADD COLUMN extra text; GRANT SELECT ON public.x402_resources TO anon;"
        " ALTER TABLE public.x402_resources ALTER COLUMN resource_type DROP NOT NULL",
    )
    assert found(supabase_db, expectation) == []
    _drift(server, supabase_db, "ALTER TABLE public.x402_resources ALTER COLUMN openrouter_config TYPE json")
    assert found(supabase_db, expectation) == [
        "005: column public.x402_resources.openrouter_config: type is json, expected jsonb"
    ]


def test_a_grant_to_a_role_named_foreign_is_left_to_its_owner(server, deployed_db, expectation):
    _drift(server, deployed_db, f"CREATE ROLE x402_backend_probe; GRANT SELECT ON {KEYS} TO x402_backend_probe")
    try:
        assert found(deployed_db, expectation) == [
            f"005: table_acl {KEYS} to x402_backend_probe: unexpected, found [SELECT]"
        ]
        assert found(deployed_db, expectation, foreign_grantees={"x402_backend_probe"}) == []
    finally:
        _drift(server, deployed_db, f"REVOKE ALL ON {KEYS} FROM x402_backend_probe; DROP ROLE x402_backend_probe")


def test_a_role_the_bundle_created_is_judged_on_postgres(server, expectation):
    """Roles are cluster-wide, so on a cluster of its own: 000 creates (and records) them there."""
    base = Path(tempfile.mkdtemp(prefix="x402db-roles-"))
    os.chmod(base, 0o755)
    own = LocalServer(server.bindir, base, fast=True)
    try:
        own.start()
        dsn = own.url("postgres")
        deploy(dsn)
        assert found(dsn, expectation) == []
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER ROLE authenticated BYPASSRLS")
        assert found(dsn, expectation) == ["000: role authenticated: bypassrls is true, expected false"]
    finally:
        own.delete()


# ---- a later migration moves the expectation ----------------------------------------------


@pytest.fixture(scope="module")
def sql_with_006(tmp_path_factory) -> Path:
    """The shipped sql/ plus the test-only 006, in a directory of their own."""
    where = tmp_path_factory.mktemp("sql-006")
    for f in SQL_DIR.glob("*.sql"):
        shutil.copy(f, where / f.name)
    for f in (FIXTURES / "migrations").glob("006_*.sql"):
        shutil.copy(f, where / f.name)
    return where


def _deploy_from(dsn: str, sql_dir: Path, to: str | None = None) -> None:
    with db.connect(dsn) as conn:
        Engine(conn, migrations.load(sql_dir), detect(conn)).up(to=to)
        access.apply(conn)


def test_a_later_migration_takes_over_what_it_changes(server, sql_with_006, cache_dir):
    expected = derive(EmbeddedScratch(), migrations.load(sql_with_006), cache_dir=cache_dir)
    dsn = new_database(server)
    try:
        _deploy_from(dsn, sql_with_006)
        with db.connect(dsn) as conn:
            owned = owners(expected, ledger.entries(conn))
        assert owned[("table", "public.openrouter_usage")][0] == "006"
        assert owned[("column", f"{KEYS}.label")][0] == "006"
        assert owned[("table", KEYS)][0] == "006"  # its comment changed
        assert owned[("column", f"{KEYS}.encrypted_api_key")][0] == "005"
        assert found(dsn, expected) == []
        _drift(
            server,
            dsn,
            f"COMMENT ON TABLE {KEYS} IS 'changed'; ALTER TABLE public.openrouter_usage DISABLE ROW LEVEL SECURITY;"
            f" ALTER TABLE {KEYS} ALTER COLUMN label SET NOT NULL; ALTER TABLE {KEYS} OWNER TO authenticated",
        )
        lines = found(dsn, expected)
        for want in (
            f"006: table {KEYS}: comment is changed, expected Per-user OpenRouter integration, with a label",
            f"006: table {KEYS}: owner is authenticated",
            "006: table public.openrouter_usage: row security is false, expected true",
            f"006: column {KEYS}.label: not null is true, expected false",
        ):
            assert any(x.startswith(want) for x in lines), (want, lines)
    finally:
        drop_database(server, dsn)


def test_a_database_at_005_is_judged_by_005_when_006_exists(server, sql_with_006, cache_dir):
    expected = derive(EmbeddedScratch(), migrations.load(sql_with_006), cache_dir=cache_dir)
    dsn = new_database(server)
    try:
        _deploy_from(dsn, sql_with_006, to="005")
        assert found(dsn, expected) == []
    finally:
        drop_database(server, dsn)


def test_on_supabase_006_is_judged_too(server, sql_with_006, cache_dir):
    expected = derive(EmbeddedScratch(), migrations.load(sql_with_006), cache_dir=cache_dir)
    dsn = new_supabase_database(server, "shape_b")
    try:
        _deploy_from(dsn, sql_with_006)
        assert found(dsn, expected) == []
        _drift(server, dsn, "GRANT SELECT ON public.openrouter_usage TO anon")
        assert found(dsn, expected) == ["006: table_acl public.openrouter_usage to anon: unexpected, found [SELECT]"]
    finally:
        drop_database(server, dsn)


# ---- the cache ----------------------------------------------------------------------------


def test_the_cache_serves_the_same_files_and_misses_on_a_change(tmp_path):
    shipped = migrations.load()
    first = derive(EmbeddedScratch(), shipped, cache_dir=tmp_path)
    again = derive(EmbeddedScratch(), shipped, cache_dir=tmp_path)
    assert (first.source, again.source) == ("derived", "cache")
    assert again.as_json() == first.as_json() and again.key == first.key

    edited = tmp_path / "sql"
    shutil.copytree(SQL_DIR, edited)
    down = edited / "005_add_openrouter_integration.down.sql"
    down.write_text(down.read_text() + "\n-- edited\n")
    changed = derive(EmbeddedScratch(), migrations.load(edited), cache_dir=tmp_path)
    assert changed.source == "derived" and changed.key != first.key


def test_a_half_written_cache_file_is_ignored(tmp_path):
    shipped = migrations.load()
    first = derive(EmbeddedScratch(), shipped, cache_dir=tmp_path)
    path = cache.path(first.key, tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    second = derive(EmbeddedScratch(), shipped, cache_dir=tmp_path)
    assert second.source == "derived" and second.as_json() == first.as_json()
    assert derive(EmbeddedScratch(), shipped, cache_dir=tmp_path).source == "cache"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_smoke_checks_name_each_judged_migration(server, deployed_any, expectation):

    c = Checklist()
    with db.connect(deployed_any) as conn:
        checks.run(conn, c, expectation)
    names = [k.name for k in c.checks]
    on_postgres = names == ["expected.000", "expected.001", "expected.005"]
    assert on_postgres or names == ["expected.005"], names
    assert all(k.passed for k in c.checks)
    _drift(server, deployed_any, f"ALTER TABLE {KEYS} DISABLE ROW LEVEL SECURITY")
    c = Checklist()
    with db.connect(deployed_any) as conn:
        checks.run(conn, c, expectation)
    assert [k.name for k in c.checks if k.failed] == ["expected.005"]


def test_two_derivations_at_once_both_leave_a_whole_file(tmp_path):
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: derive(EmbeddedScratch(), cache_dir=tmp_path), range(2))
    assert a.key == b.key and a.as_json() == b.as_json()
    assert [p.name for p in tmp_path.iterdir()] == [f"{a.key}.json"]
    assert derive(EmbeddedScratch(), cache_dir=tmp_path).source == "cache"
