"""The pulumi-postgresql provider's own statements (x402db/iac/provider_sql.py, transcribed from its
upstream source) for every resource the program declares, run for real as the Supabase
fixture's non-superuser `postgres` on PostgreSQL 15 and 18, in the order `pulumi up` and
`pulumi destroy` run them; the resulting catalog is compared with the access model that smoke
checks. Where the server refuses a statement, the preflight must refuse first, changing nothing.

Kept beside the real engine: the preflight runs this transcription, so it must match the
provider; test_pulumi_engine.py judges the provider's own behaviour on the same servers."""

from __future__ import annotations

import psycopg
import pytest

from tests.utils.db import admin_dsn, drop_database, new_supabase_database
from x402db import access
from x402db.iac import declared
from x402db.iac import provider_sql as p
from x402db.iac.preflight import preflight
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect

BACKEND = "x402_backend"


@pytest.fixture
def supa(server):
    dsn = new_supabase_database(server, "shape_a")
    yield dsn
    drop_database(server, dsn)
    with psycopg.connect(server.dsn(), autocommit=True) as admin:  # roles are cluster-wide
        admin.execute(f"DROP ROLE IF EXISTS {BACKEND}, x402_foreign_owner")


def major(conn) -> int:
    return conn.info.server_version // 10000


def connect(dsn):
    conn = psycopg.connect(dsn, autocommit=True)
    assert conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
        "postgres",
        False,
    )
    return conn


def memberships(conn) -> set[tuple]:
    """Every role membership in the cluster, with its options: withRolesGranted must leave none behind."""
    return set(
        conn.execute(
            "SELECT roleid::regrole::text, member::regrole::text, admin_option FROM pg_auth_members"
        ).fetchall()
    )


def table_acl(conn, role: str) -> set[str]:
    return access.held_privileges(conn, access.TableGrant(role, "public", access.TABLE, ()))


def migrate_up(conn):
    Engine(conn, migrations.load(), detect(conn, None)).up()


def test_migration_then_the_providers_grants_give_the_access_model(supa):
    # The provider's Grant revokes only the privileges it lists; the model holds because 005
    # applies the access model's grants in its own transaction.
    with connect(supa) as conn:
        migrate_up(conn)  # what SqlMigration's create runs; the Grants come after it
        s = p.Session(conn)
        for g in declared.grants(conn.info.dbname):
            p.grant_create(s, g)
        assert access.diff(conn) == [], [g.key for g in access.diff(conn)]


def test_grants_create_update_delete_as_supabase_postgres(supa):
    with connect(supa) as conn:
        before = memberships(conn)
        migrate_up(conn)
        s = p.Session(conn)
        for g in declared.grants(conn.info.dbname):
            p.grant_create(s, g)
        assert access.diff(conn) == []
        assert table_acl(conn, "anon") == set()
        assert {"SELECT", "INSERT", "UPDATE", "DELETE"} <= table_acl(conn, "authenticated")
        for u in access.SCHEMA_USAGE:
            assert conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (u.role, u.schema)).fetchone()[0]
        # Update: the provider revokes the previous privileges and grants the new ones.
        authenticated = next(
            g for g in declared.grants(conn.info.dbname) if g.role == "authenticated" and g.object_type == "table"
        )
        with conn.transaction():
            conn.execute("REVOKE ALL ON public.user_openrouter_integrations FROM authenticated")
            conn.execute("GRANT SELECT ON public.user_openrouter_integrations TO authenticated")
        p.grant_create(s, authenticated, previous=p.GrantArgs(**{**authenticated.__dict__, "privileges": ("SELECT",)}))
        assert access.diff(conn) == []
        assert memberships(conn) == before
        # Destroy: every grant is retained (forgotten by the state, never revoked), so nothing is
        # revoked before the migration's down, which drops the table and its grants with it.
        assert all(g.retain_on_delete for g in declared.grants(conn.info.dbname))
        # The provider's own delete (what a grant removed from the program runs) revokes only the
        # listed privileges: the program lists every one the server has (MAINTAIN on 17+).
        service = next(
            g for g in declared.grants(conn.info.dbname) if g.role == "service_role" and g.object_type == "table"
        )
        p.grant_delete(s, declared.spelled_out(service, access.table_privileges(conn)))
        assert table_acl(conn, "service_role") == set()
        assert conn.execute("SELECT has_schema_privilege('authenticated', 'public', 'USAGE')").fetchone()[0]
        assert memberships(conn) == before
        Engine(conn, migrations.load(), detect(conn, None)).down()
        assert conn.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
        assert (
            'REVOKE SELECT,INSERT,UPDATE,DELETE ON TABLE "public"."user_openrouter_integrations" FROM "authenticated"'
            in s.log
        )


def test_backend_role_lifecycle_or_refusal(supa):
    with connect(supa) as conn:
        before = memberships(conn)
        s = p.Session(conn)
        role = declared.backend_role(BACKEND, password="first-Pa55")
        if major(conn) >= 16:
            # A NOSUPERUSER CREATEROLE member of service_role without ADMIN OPTION: refused, and
            # the provider's transaction leaves nothing behind.
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="service_role"):
                p.role_create(s, role)
            assert s.log[-1] == 'GRANT "service_role" TO "x402_backend"'
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BACKEND,)).fetchone() is None
            assert memberships(conn) == before
            return
        p.role_create(s, role)
        assert "first-Pa55" not in " ".join(s.log)
        row = conn.execute(
            "SELECT rolsuper, rolinherit, rolcanlogin, rolcreaterole, rolbypassrls, rolconnlimit FROM pg_roles WHERE rolname = %s",
            (BACKEND,),
        ).fetchone()
        assert row == (False, True, True, False, False, -1)
        assert conn.execute("SELECT pg_has_role(%s, 'service_role', 'USAGE')", (BACKEND,)).fetchone()[0]
        # Update (a password rotation): revokeRoles + grantRoles keep the membership.
        p.role_update(s, role, declared.backend_role(BACKEND, password="second-Pa55"))
        assert conn.execute("SELECT pg_has_role(%s, 'service_role', 'USAGE')", (BACKEND,)).fetchone()[0]
        # Delete: REASSIGN OWNED / DROP OWNED under a temporary membership, then DROP ROLE.
        p.role_delete(s, role)
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BACKEND,)).fetchone() is None
        assert memberships(conn) == before


def test_a_separate_grant_role_is_lost_on_the_roles_next_update(supa):
    """Why the program uses Role.roles: the upstream GrantRole and the Role's update fight."""
    with connect(supa) as conn:
        s = p.Session(conn)
        bare = p.RoleArgs(BACKEND, password="first-Pa55", login=True)
        p.role_create(s, bare)
        member = p.GrantRoleArgs(BACKEND, "service_role")
        if major(conn) >= 16:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                p.grant_role_create(s, member)
            assert s.log[-1] == 'REVOKE "service_role" FROM "x402_backend"'  # the first statement already fails
            return
        p.grant_role_create(s, member)
        assert conn.execute("SELECT pg_has_role(%s, 'service_role', 'USAGE')", (BACKEND,)).fetchone()[0]
        p.role_update(s, bare, p.RoleArgs(BACKEND, password="second-Pa55", login=True))
        assert not conn.execute("SELECT pg_has_role(%s, 'service_role', 'USAGE')", (BACKEND,)).fetchone()[0]
        p.grant_role_delete(s, member)
        p.role_delete(s, bare)


@pytest.mark.parametrize("backend", [None, BACKEND])
def test_preflight_refuses_exactly_what_the_provider_would_fail_on(supa, backend):
    with connect(supa) as conn:
        before = memberships(conn)
        version = major(conn)
    failure = preflight(supa, psycopg.conninfo.conninfo_to_dict(supa)["dbname"], backend)
    with connect(supa) as conn:
        assert memberships(conn) == before
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (BACKEND,)).fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
    if backend and version >= 16:
        assert failure == (
            f'preflight refused, nothing was changed: on PostgreSQL {version} the provider\'s `GRANT "service_role" TO "x402_backend"` '
            'fails as postgres (permission denied to grant role "service_role"); since PostgreSQL 16 only a role holding ADMIN OPTION '
            "on service_role may grant or revoke it, and postgres does not: leave backendRole unset (`pulumi config rm backendRole`), "
            "or have a superuser run `GRANT service_role TO postgres WITH ADMIN OPTION` first, then run pulumi up again."
        )
    else:
        assert failure is None
        if backend:  # and the real run then succeeds, as the preflight said
            with connect(supa) as conn:
                p.role_create(p.Session(conn), declared.backend_role(BACKEND, password="x-Pa55"))


def test_preflight_sees_a_table_owner_the_provider_cannot_borrow(server, supa):
    """getRolesToGrant makes postgres a temporary member of every owner of a table in public;
    a table owned by a role postgres may not grant (PG16+) would fail the Grants after the
    migration ran. The preflight must stop it first; on 15 it must pass and the Grants work."""
    with psycopg.connect(admin_dsn(server, supa), autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS x402_foreign_owner")
        admin.execute("CREATE ROLE x402_foreign_owner NOLOGIN")
        admin.execute("CREATE TABLE public.foreign_owned (id int)")
        admin.execute("ALTER TABLE public.foreign_owned OWNER TO x402_foreign_owner")
    try:
        dbname = psycopg.conninfo.conninfo_to_dict(supa)["dbname"]
        failure = preflight(supa, dbname, None)
        with connect(supa) as conn:
            if major(conn) >= 16:
                assert (
                    failure
                    and '`GRANT "x402_foreign_owner" TO "postgres"`' in failure
                    and "nothing was changed" in failure
                )
                migrate_up(conn)
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege
                ):  # what pulumi up would hit after the migration
                    p.grant_create(p.Session(conn), declared.grants(dbname)[-1])
            else:
                assert failure is None
                migrate_up(conn)
                before = memberships(conn)
                s = p.Session(conn)
                for g in declared.grants(dbname):
                    p.grant_create(s, g)
                assert 'GRANT "x402_foreign_owner" TO "postgres"' in s.log and memberships(conn) == before
    finally:
        drop_database(server, supa)


def test_preflight_through_pulumis_dynamic_provider_host(supa, host, server):
    """The Preflight resource the program registers, checked by the real `python -m pulumi.dynamic`
    host over gRPC as `pulumi preview` does: a failure on 16+, none on 15, nothing changed."""
    from tests.utils.dynamic_host import Host, unwrap
    from tests.utils.pulumi_mocks import run_program

    params = psycopg.conninfo.conninfo_to_dict(supa)
    report = run_program(
        {
            "target": "supabase",
            "host": params["host"],
            "port": str(params["port"]),
            "database": params["dbname"],
            "username": params["user"],
            "sslmode": "disable",
            "password": params.get("password") or server.password,
            "backendRole": BACKEND,
            "backendRolePassword": "x-Pa55",
        }
    )
    registered = next(r["inputs"] for r in report["resources"] if r["type"].endswith("x402:Preflight"))
    inputs = {k: unwrap(v) for k, v in registered.items()}
    with connect(supa) as conn:
        before, version = memberships(conn), major(conn)
    _, failures = Host(host).check(inputs)
    with connect(supa) as conn:
        assert memberships(conn) == before
    if version >= 16:
        assert len(failures) == 1 and failures[0].reason.startswith("preflight refused, nothing was changed")
        # What the CLI prints (pulumi/pulumi step_generator.go issueCheckFailures): for a failure
        # on a property, "property <p> value <the registered input> has a problem: <reason>",
        # and a secret input is printed in plaintext there (resource.Secret has no String()).
        printed = " ".join(f"{unwrap(registered[f.property]) if f.property else ''} {f.reason}" for f in failures)
        assert "ADMIN OPTION on service_role" in printed
        for secret in ("x-Pa55", "unused-by-trust", inputs["dsn"]):
            assert secret not in printed
    else:
        assert failures == []
