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
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.utils.db import SERVERS, bindir, deploy, drop_database, new_database, pg_dump_schema
from tests.utils.dynamic_host import Host, program_inputs
from tests.utils.migrations import PREVIOUS_RELEASE
from tests.utils.scripts import call_script
from x402db import ROOT, access, db
from x402db.cli import deploy as deploy_cli
from x402db.local.server import LocalServer
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect

API_ROLES = ("anon", "authenticated", "service_role", "authenticator")


@pytest.fixture(scope="module", params=SERVERS)
def bare_server(request):
    binaries = bindir(request.param)
    if binaries is None:
        pytest.skip("the system PostgreSQL server is not installed")
    base = Path(tempfile.mkdtemp(prefix=f"x402db-bare-{request.param}-"))
    os.chmod(base, 0o755)
    server = LocalServer(binaries, base, fast=True)  # superuser `postgres`, like make deploy's server
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
        owners = dict(
            c.execute(
                "SELECT relname, relowner::regrole::text FROM pg_class WHERE relname IN ('invoices', 'daily')"
            ).fetchall()
        )
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
    r = call_script("migrate.py", "down", "--to", "base", "--allow-data-loss", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    _assert_business_objects_survive(compat_db, r.stdout + r.stderr)
    # --json carries the same notes.
    deploy(compat_db)
    r = call_script("migrate.py", "down", "--to", "base", "--json", "--dsn", compat_db)
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
    outs, ids = {}, {}
    for version in ("000", "001", "005"):
        checked, failures = h.check({**inputs[version], "allow_data_loss": True})
        assert failures == []
        ids[version], outs[version] = h.create(checked)
    _business_objects(compat_db)
    for version in ("005", "001", "000"):
        h.delete(ids[version], outs[version])
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
        c.execute(
            "CREATE FUNCTION public.on_signup() RETURNS trigger LANGUAGE plpgsql"
            " AS 'BEGIN INSERT INTO public.signups VALUES (NEW.id); RETURN NEW; END'"
        )
        c.execute(
            "CREATE TRIGGER biz_on_signup AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.on_signup()"
        )
        c.execute("CREATE INDEX biz_users_email ON auth.users (email)")
        c.execute("ALTER TABLE auth.users ADD COLUMN tenant text")
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(compat_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'biz_on_signup'").fetchone()[0] == 1
        assert c.execute("SELECT to_regclass('auth.biz_users_email') IS NOT NULL").fetchone()[0]
        assert (
            c.execute(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'auth.users'::regclass AND attname = 'tenant'"
            ).fetchone()[0]
            == 1
        )
    assert "kept table auth.users" in r.stdout and "biz_on_signup" in r.stdout and "biz_users_email" in r.stdout
    assert "column tenant" in r.stdout


# ---- default privileges, and names in function bodies -----------------------------------------

LAYER_ROLES = ("anon", "authenticated", "service_role")


def _default_acls(dsn: str) -> set[tuple[str, str, str, str, str]]:
    """(defaults of role, schema or '-' for global, object type, grantee, privilege) for the API roles."""
    with psycopg.connect(dsn) as c:
        return set(
            c.execute(
                "SELECT d.defaclrole::regrole::text, d.defaclnamespace::regnamespace::text, d.defaclobjtype::text,"
                " a.grantee::regrole::text, a.privilege_type"
                " FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE a.grantee::regrole::text = ANY(%s)",
                (list(LAYER_ROLES),),
            ).fetchall()
        )


def test_the_revert_revokes_only_the_default_privileges_the_layer_granted(bare_server, compat_db):
    """The revert revoked every default privilege in public of the roles it had created (those it
    keeps too), and none of what it granted to roles it found. Now it revokes exactly what its up
    recorded as added: an entry made before it ran, by another role, or globally, stays."""
    with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
        c.execute("CREATE ROLE authenticated NOLOGIN")  # the operator's: found by the layer
        c.execute("CREATE ROLE app_owner NOLOGIN")
    try:
        with psycopg.connect(compat_db, autocommit=True) as c:
            c.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO authenticated")
        deploy(compat_db)
        with psycopg.connect(compat_db, autocommit=True) as c:
            c.execute("ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO anon")
            c.execute("ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO service_role")
        during = _default_acls(compat_db)
        assert ("postgres", "public", "r", "anon", "INSERT") in during  # the layer's own, to be revoked
        r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
        assert r.returncode == 0, r.stderr
        assert _default_acls(compat_db) == {
            ("postgres", "public", "r", "authenticated", "SELECT"),
            ("app_owner", "public", "r", "anon", "SELECT"),
            ("postgres", "-", "f", "service_role", "EXECUTE"),
        }
        out = r.stdout + r.stderr
        said = next(
            line for line in out.splitlines() if "revoked the default privileges the compat layer had added" in line
        )
        maintain = "MAINTAIN, " if "MAINTAIN" in {x[4] for x in during} else ""  # PostgreSQL 17+
        assert (
            f"; DELETE, INSERT, {maintain}REFERENCES, TRIGGER, TRUNCATE, UPDATE ON TABLES TO authenticated "
            "(defaults of role postgres in schema public);"
        ) in said, said  # not its SELECT: that was there
        # The roles those entries name are kept, and the output says why.
        assert "kept role anon: it still holds privileges on default privileges" in out, out
        assert "kept role service_role: it still holds privileges on default privileges" in out, out
        with psycopg.connect(compat_db) as c:
            roles = {
                x[0] for x in c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(API_ROLES),))
            }
            assert roles == {"anon", "authenticated", "service_role"}  # authenticator had nothing left
            # What was revoked is no longer recorded; nothing of the layer's default privileges is left to revoke.
            assert (
                c.execute("SELECT count(*) FROM x402_private.compat_objects WHERE kind = 'default_acl'").fetchone()[0]
                == 0
            )
    finally:
        with psycopg.connect(compat_db, autocommit=True) as c:
            c.execute("DROP OWNED BY app_owner")
        with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
            c.execute("DROP ROLE app_owner")


def test_objects_a_function_body_names_are_kept(compat_db):
    """PL/pgSQL and SQL string bodies record no dependency: RESTRICT dropped auth.uid() under a
    project function that calls it. The revert searches pg_proc for the names it is about to drop."""
    deploy(compat_db)
    with psycopg.connect(compat_db, autocommit=True) as c:
        c.execute(
            "CREATE FUNCTION public.my_id() RETURNS uuid LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN AUTH . Uid(); END $$"
        )
        c.execute(
            'CREATE FUNCTION public.members() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM "auth"."users" $$'
        )
        c.execute(
            "CREATE FUNCTION public.whoami() RETURNS text LANGUAGE plpgsql SET search_path = pg_temp, auth"
            " AS $$ BEGIN RETURN role(); END $$"
        )
        # Names that only look alike hold nothing.
        c.execute(
            "CREATE FUNCTION public.unrelated() RETURNS text LANGUAGE sql AS $$ SELECT 'oauth.jwt() myauth.users auth_log.x' $$"
        )
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    with psycopg.connect(compat_db, autocommit=True) as c:
        assert c.execute("SELECT public.my_id(), public.members(), public.whoami()").fetchone() == (None, 0, None)
        kept = {
            x[0]
            for x in c.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE pronamespace = 'auth'::regnamespace"
            )
        }
        assert kept == {"auth.uid()", "auth.role()"}, kept  # auth.jwt() is named only by `unrelated`'s look-alike
        assert c.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()[0]
    assert "kept function auth.uid(): the body of function public.my_id() refers to it" in out, out
    assert "kept function auth.role(): the body of function public.whoami() refers to it" in out, out
    assert "kept table auth.users: the body of function public.members() refers to it" in out, out
    assert not [line for line in out.splitlines() if "refers to it" in line and "unrelated" in line], out


def test_a_compat_objects_table_left_by_an_earlier_release_takes_the_new_kinds(compat_db):
    """The table outlives a revert: one created with the narrower CHECK must not make the up fail."""
    with psycopg.connect(compat_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS x402_private")
        c.execute(
            "CREATE TABLE x402_private.compat_objects (kind text NOT NULL CHECK (kind IN ('role', 'schema', 'table', 'function')),"
            " identity text NOT NULL, PRIMARY KEY (kind, identity))"
        )
    deploy(compat_db)
    with psycopg.connect(compat_db) as c:
        n = c.execute("SELECT count(*) FROM x402_private.compat_objects WHERE kind = 'default_acl'").fetchone()[0]
    assert n >= 3 * 3  # three object types, three API roles


def _previous_release_sql(tmp_path: Path) -> Path:
    d = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", d, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("up", "down"):
        r = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{PREVIOUS_RELEASE}:sql/000_platform_compat.{part}.sql"],
            capture_output=True,
            text=True,
        )
        if r.returncode:
            pytest.skip(f"release {PREVIOUS_RELEASE} is not in this checkout's git history")
        (d / f"000_platform_compat.{part}.sql").write_text(r.stdout)
    return d


def test_a_layer_applied_by_the_previous_release_is_reverted_by_this_one(tmp_path, compat_db):
    """The previous release recorded its own down checksum. This release's down for 000 is a newer
    one it ships: it is accepted without --accept-edited-down, keeps the default privileges it
    cannot attribute and the roles they name, and the next up records the newer down."""
    old_sql = _previous_release_sql(tmp_path)
    with db.connect(compat_db) as conn:
        Engine(conn, migrations.load(old_sql), detect(conn)).up()
        access.apply(conn)
    shipped = migrations.shipped_downs()["000"]
    with db.connect(compat_db) as conn:
        recorded = ledger.entries(conn)["000"].down_checksum
        assert recorded == migrations.checksum((old_sql / "000_platform_compat.down.sql").read_text()) in shipped[:-1]
        e = Engine(conn, migrations.load(), detect(conn))
        s = {x.version: x for x in e.status()}["000"]
        assert (s.state, s.down_edited, s.superseded is not None) == ("applied", False, True)
    r = call_script("migrate.py", "plan", "--down", "--to", "base", "--dsn", compat_db)
    assert "edited" not in r.stdout + r.stderr, r.stdout + r.stderr
    logs: list[str] = []
    with db.connect(compat_db) as conn:
        assert Engine(conn, migrations.load(), detect(conn), log=logs.append).up() == []
        assert ledger.entries(conn)["000"].down_checksum == shipped[-1]
    assert any("recorded the down checksum this bundle ships (the row had an earlier release's)" in m for m in logs), (
        logs
    )
    before = _default_acls(compat_db)
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    assert _default_acls(compat_db) == before  # not recorded by that release: not attributable, kept
    out = r.stdout + r.stderr
    assert "revoked the default privileges" not in out
    for role in LAYER_ROLES:
        assert f"kept role {role}: it still holds privileges on default privileges" in out, out
    # The default privileges themselves are said to be kept, each named, as docs/explanation/reverting.md says.
    said = next((line for line in out.splitlines() if "kept the default privileges in schema public: " in line), out)
    for role in LAYER_ROLES:
        assert f"ON TABLES TO {role} (defaults of role postgres)" in said, said
    assert "revoke them yourself: ALTER DEFAULT PRIVILEGES" in said, said
    with psycopg.connect(compat_db) as c:
        assert c.execute("SELECT to_regnamespace('auth')").fetchone()[0] is None


def _as(dsn: str, user: str, password: str) -> str:
    head, rest = dsn.split("://", 1)
    return f"{head}://{quote(user, safe='')}:{quote(password, safe='')}@{rest.split('@', 1)[1]}"


def _drop_role(server: LocalServer, dsn: str, role: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            c.execute(
                sql.SQL("REASSIGN OWNED BY {} TO postgres; DROP OWNED BY {}").format(
                    sql.Identifier(role), sql.Identifier(role)
                )
            )
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("afterwards", ["renamed", "dropped-and-re-created"])
def test_the_grantor_is_the_role_that_ran_the_up_not_its_name(bare_server, compat_db, afterwards):
    """Found by attacking the fix: the down looked the grantor up by name. Renamed, the layer's
    entries stayed and their records were dropped without a word; dropped and re-created under
    the same name, the new role's own entry was revoked as the layer's."""
    with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
        c.execute("CREATE ROLE deployer LOGIN SUPERUSER PASSWORD 'deployer-pw'")
    try:
        deploy(_as(compat_db, "deployer", "deployer-pw"))
        assert ("deployer", "public", "r", "anon", "INSERT") in _default_acls(compat_db)
        if afterwards == "renamed":
            with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
                c.execute("ALTER ROLE deployer RENAME TO deployer2")
            kept = set()
        else:
            _drop_role(bare_server, compat_db, "deployer")  # DROP OWNED takes the layer's entries with it
            with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
                c.execute("CREATE ROLE deployer NOLOGIN")
            with psycopg.connect(compat_db, autocommit=True) as c:
                c.execute(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE deployer IN SCHEMA public GRANT SELECT ON TABLES TO authenticated"
                )
            kept = {("deployer", "public", "r", "authenticated", "SELECT")}
        r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
        assert r.returncode == 0, r.stderr
        assert _default_acls(compat_db) == kept, r.stdout
        if afterwards == "renamed":
            assert "(defaults of role deployer2 in schema public)" in r.stdout, r.stdout
    finally:
        for role in ("deployer", "deployer2"):
            _drop_role(bare_server, compat_db, role)


def test_a_bare_name_on_the_databases_search_path_is_found(compat_db):
    """Found by attacking the fix: a search_path set by ALTER DATABASE (or ALTER ROLE) was not
    read, so auth.uid() was dropped from under a function calling uid()."""
    deploy(compat_db)
    dbname = psycopg.conninfo.conninfo_to_dict(compat_db)["dbname"]
    with psycopg.connect(compat_db, autocommit=True) as c:
        c.execute(sql.SQL("ALTER DATABASE {} SET search_path = public, auth").format(sql.Identifier(dbname)))
        c.execute(
            "CREATE FUNCTION public.my_id() RETURNS uuid LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN uid(); END $$"
        )
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(compat_db) as c:
        assert c.execute("SELECT public.my_id()").fetchone() == (None,)
    assert "kept function auth.uid(): the body of function public.my_id() refers to it" in r.stdout


def test_a_body_that_names_auth_dot_something_else_keeps_nothing(compat_db):
    """Found by attacking the fix: the schema itself was searched for, so a setting named
    'app.auth.tenant' kept the empty schema auth and, through its grants, every API role."""
    deploy(compat_db)
    with psycopg.connect(compat_db, autocommit=True) as c:
        c.execute(
            "CREATE FUNCTION public.tenant() RETURNS text LANGUAGE sql STABLE AS $$ SELECT current_setting('app.auth.tenant', true) $$"
        )
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(compat_db) as c:
        assert c.execute("SELECT to_regnamespace('auth')").fetchone()[0] is None, r.stdout
    # The roles the default privileges granted EXECUTE on tenant() are kept for that, and only that.
    held = [line for line in r.stdout.splitlines() if "kept role" in line]
    assert held and all(line.endswith("it still holds privileges on function tenant()") for line in held), r.stdout


GRANT_AGAIN = "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO authenticated"
REVOKE_ALL = "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated, service_role"


def _down_waiting_on_a_default_acl_row(
    compat_db: str, change: str = GRANT_AGAIN
) -> tuple[psycopg.Connection, subprocess.Popen]:
    """`down --to base` started while a second session holds, uncommitted, a change of the same
    pg_default_acl row (defaults of postgres in public); returns once the down waits on it."""
    other = psycopg.connect(compat_db)
    other.execute(change)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "migrate.py"), "down", "--to", "base", "--dsn", compat_db],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(compat_db, autocommit=True) as w:
        while not w.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%compat_objects%'"
        ).fetchone()[0]:
            assert time.monotonic() < deadline and proc.poll() is None, "the down never waited on the row"
            time.sleep(0.01)
    return other, proc


def _recorded(dsn: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn) as c:
        return set(c.execute("SELECT kind, identity FROM x402_private.compat_objects").fetchall())


@pytest.mark.parametrize("change", [GRANT_AGAIN, REVOKE_ALL], ids=["updates-the-row", "deletes-the-row"])
def test_a_second_session_committing_the_same_default_acl_row_is_retried(compat_db, change):
    """Found by attacking the fix: the other session committed while the revert waited on the row,
    and the revert failed with 'tuple concurrently updated' (or deleted), rolled back. It is retried now."""
    deploy(compat_db)
    other, proc = _down_waiting_on_a_default_acl_row(compat_db, change)
    other.commit()
    other.close()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "another session changed the same catalog row meanwhile, retrying" in out, out
    # The other session's grant came after the layer's ALL: no trace of it is left to tell it apart.
    assert _default_acls(compat_db) == set(), out


def test_kill_9_while_the_compat_revert_waits_then_the_same_command_converges(compat_db):
    deploy(compat_db)
    recorded = _recorded(compat_db)
    other, proc = _down_waiting_on_a_default_acl_row(compat_db)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with psycopg.connect(compat_db) as c:
        assert set(ledger.entries(c)) == {"000"}  # 005 and 001 committed; 000 rolled back whole
    assert _recorded(compat_db) == recorded
    other.rollback()
    other.close()
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _default_acls(compat_db) == set()
    with psycopg.connect(compat_db) as c:
        assert (
            ledger.entries(c) == {} and c.execute("SELECT count(*) FROM x402_private.compat_objects").fetchone()[0] == 0
        )
        assert c.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(API_ROLES),)).fetchone()[0] == 0


def _the_operator_replaces_a_kept_auth_uid(dsn: str) -> None:
    """A revert keeps auth.uid() (a function calls it); the operator then replaces it with a
    function of their own. Neither the next up nor the next revert may touch theirs."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE FUNCTION public.my_id() RETURNS uuid LANGUAGE plpgsql AS $$ BEGIN RETURN auth.uid(); END $$")
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", dsn)
    assert r.returncode == 0 and "kept function auth.uid()" in r.stdout, r.stdout + r.stderr
    own = "SELECT '00000000-0000-0000-0000-000000000001'::uuid"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP FUNCTION public.my_id(); DROP FUNCTION auth.uid()")
        c.execute(f"CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql AS $$ {own} $$")
    body = "SELECT prosrc FROM pg_proc WHERE oid = 'auth.uid()'::regprocedure"
    deploy(dsn)
    with psycopg.connect(dsn) as c:
        assert own in c.execute(body).fetchone()[0]
    r = call_script("migrate.py", "down", "--to", "base", "--dsn", dsn)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(dsn) as c:
        assert own in c.execute(body).fetchone()[0]


def test_an_object_the_operator_made_under_a_kept_objects_name_is_theirs(compat_db):
    """Found by attacking the default-privileges fix (older than it): a revert kept auth.uid() (a function called it),
    so its record stayed. The operator replaced it with a function of their own; the next up
    overwrote that body and the next revert dropped it, by the name the stale record held."""
    deploy(compat_db)
    _the_operator_replaces_a_kept_auth_uid(compat_db)
    with psycopg.connect(compat_db) as c:
        # What the layer made itself is gone as usual.
        assert c.execute(
            "SELECT to_regprocedure('auth.role()') IS NULL AND to_regclass('auth.users') IS NULL"
        ).fetchone()[0]


def _compat_objects_left(dsn: str) -> tuple[bool, bool, bool]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT to_regnamespace('auth') IS NOT NULL, to_regclass('auth.users') IS NOT NULL,"
            " to_regprocedure('auth.uid()') IS NOT NULL"
        ).fetchone()


def test_a_database_restored_from_a_dump_names_what_its_revert_keeps(bare_server, compat_db):
    """Found by attacking the OID records: restored, every object has a new OID, and the revert
    forgot its records without a word. It still does not drop them (they cannot be told from
    objects made again by someone else), but each is named."""
    deploy(compat_db)
    copy = new_database(bare_server)
    try:
        dump = subprocess.run(
            [str(bare_server.bindir / "pg_dump"), "-Fc", "--dbname", compat_db], capture_output=True, check=True
        ).stdout
        subprocess.run([str(bare_server.bindir / "pg_restore"), "--dbname", copy], input=dump, check=True)
        r = call_script("migrate.py", "down", "--to", "base", "--dsn", copy)
        assert r.returncode == 0, r.stderr
        assert _compat_objects_left(copy) == (True, True, True)
        for what in (
            "schema auth",
            "table auth.users",
            "function auth.uid()",
            "function auth.role()",
            "function auth.jwt()",
        ):
            assert f"kept {what}: it is not the object the compat layer created (its OID changed" in r.stdout, r.stdout
        # The original's roles are untouched: it still uses them, authenticator included.
        assert call_script("smoke.py", "--dsn", compat_db).returncode == 0
    finally:
        drop_database(bare_server, copy)


def test_the_revert_of_one_database_keeps_authenticator_while_another_uses_the_roles(bare_server, compat_db):
    """Found by attacking the fix: the first database created the roles, a second found them. The
    first one's revert kept anon, authenticated and service_role (the second holds grants to them)
    but dropped authenticator, which nothing records a dependency on: the second broke."""
    deploy(compat_db)
    second = new_database(bare_server)
    try:
        deploy(second)
        r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
        assert r.returncode == 0, r.stderr
        assert "kept role authenticator: the roles it logs in as are still used in database t_" in r.stdout, r.stdout
        smoke = call_script("smoke.py", "--dsn", second)
        assert smoke.returncode == 0, smoke.stdout
    finally:
        drop_database(bare_server, second)


def test_a_kept_object_the_previous_release_recorded_by_name_is_then_known_by_oid(tmp_path, compat_db):
    """Found by attacking the OID records: the previous release recorded by name only, so after a
    revert kept auth.uid() the operator's own function of that name was overwritten by the next
    up and dropped by the next revert. The revert that keeps it records its OID."""
    old_sql = _previous_release_sql(tmp_path)
    with db.connect(compat_db) as conn:
        Engine(conn, migrations.load(old_sql), detect(conn)).up()
        access.apply(conn)
    _the_operator_replaces_a_kept_auth_uid(compat_db)


def test_a_role_the_operator_has_since_set_up_is_kept_and_named(bare_server, compat_db):
    """Found by attacking the revert: a role the layer created was dropped, and with it what an
    operator had since given it (DROP ROLE takes memberships, settings and the password without a
    word). A membership, a setting (everywhere or in one database) or a password keeps it now."""
    deploy(compat_db)
    dbname = psycopg.conninfo.conninfo_to_dict(compat_db)["dbname"]
    with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
        c.execute("CREATE ROLE app_reader NOLOGIN")
        c.execute("GRANT app_reader TO anon")
        c.execute("ALTER ROLE authenticated SET statement_timeout = '5s'")
        c.execute(sql.SQL("ALTER ROLE service_role IN DATABASE {} SET work_mem = '8MB'").format(sql.Identifier(dbname)))
        c.execute("ALTER ROLE authenticator PASSWORD 'operator-set-pw-41'")
    try:
        r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
        assert r.returncode == 0, r.stderr
        out = r.stdout + r.stderr
        assert "operator-set-pw-41" not in out
        with psycopg.connect(compat_db) as c:
            roles = {
                x[0] for x in c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(API_ROLES),))
            }
            assert roles == set(API_ROLES), out
            assert c.execute("SELECT pg_has_role('anon', 'app_reader', 'MEMBER')").fetchone() == (True,)
            assert c.execute("SELECT to_regnamespace('auth')").fetchone()[0] is None  # the rest of the layer went
        assert "kept role anon: it still is a member of role app_reader" in out, out
        assert "kept role authenticated: it still has settings (statement_timeout) in every database" in out, out
        assert f"kept role service_role: it still has settings (work_mem) in database {dbname}" in out, out
        assert "kept role authenticator: it still has a password" in out, out
    finally:
        with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
            c.execute("DROP ROLE app_reader")  # the API roles go with compat_db


def test_a_bare_name_on_the_servers_search_path_is_found(bare_server, compat_db):
    """Found by attacking the revert: the search_path of the database and of roles was read, not the
    server's own (ALTER SYSTEM, reloaded), so auth.uid() was dropped under a function calling uid()."""
    deploy(compat_db)
    with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
        c.execute('ALTER SYSTEM SET search_path = "$user", public, auth')
        c.execute("SELECT pg_reload_conf()")
    try:
        with psycopg.connect(compat_db, autocommit=True) as c:
            c.execute(
                "CREATE FUNCTION public.my_id() RETURNS uuid LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN uid(); END $$"
            )
        r = call_script("migrate.py", "down", "--to", "base", "--dsn", compat_db)
        assert r.returncode == 0, r.stderr
        assert "kept function auth.uid(): the body of function public.my_id() refers to it" in r.stdout, r.stdout
        with psycopg.connect(compat_db) as c:
            assert c.execute("SELECT public.my_id()").fetchone() == (None,)
    finally:
        with psycopg.connect(bare_server.dsn(), autocommit=True) as c:
            c.execute("ALTER SYSTEM RESET search_path")
            c.execute("SELECT pg_reload_conf()")
