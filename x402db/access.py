"""The access model: which API role may do what on migration 005's table, as data.

One source for three consumers: the Pulumi program turns it into pulumi_postgresql.Grant
resources, the local deploy into SQL, and the smoke verifier into checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# Every privilege a table has on the server at hand, as GRANT ALL gives it: the set grows with
# PostgreSQL (17 added MAINTAIN), so it is read from the server (table_privileges), never listed.
ALL = "ALL"


@dataclass(frozen=True)
class TableGrant:
    role: str
    schema: str
    table: str
    privileges: tuple[str, ...]  # the exact set; () is an explicit revoke of everything; (ALL,)
    why: str = ""

    @property
    def key(self) -> str:
        return f"{self.role}-{self.table}"


@dataclass(frozen=True)
class SchemaUsage:
    role: str
    schema: str
    # Never revoked on destroy: the whole API depends on it, not just this bundle.
    retain_on_delete: bool = True


# The product tables, each spelled here once. All live in `public`, the schema the Data API
# exposes; INTEGRATIONS is migration 005's own table, the other two are the application's.
INTEGRATIONS = "public.user_openrouter_integrations"
RESOURCES = "public.x402_resources"
MODELS = "public.ai_models"


def unqualified(table: str) -> str:
    return table.partition(".")[2]


TABLE = unqualified(INTEGRATIONS)
TABLE_GRANTS: tuple[TableGrant, ...] = (
    TableGrant(
        "anon",
        "public",
        TABLE,
        (),
        why="Supabase's default privileges grant every new public table to anon; revoke explicitly",
    ),
    TableGrant(
        "authenticated",
        "public",
        TABLE,
        ("SELECT", "INSERT", "UPDATE", "DELETE"),
        why="RLS restricts rows to the user's own; TRUNCATE would bypass RLS, so it is not granted",
    ),
    TableGrant(
        "service_role",
        "public",
        TABLE,
        (ALL,),
        why="the backend decrypts keys for execution",
    ),
)
SCHEMA_USAGE: tuple[SchemaUsage, ...] = (
    SchemaUsage("authenticated", "public"),
    SchemaUsage("service_role", "public"),
)


def held_privileges(conn: psycopg.Connection, g: TableGrant) -> set[str]:
    """Privileges granted directly to the role on the table (not via PUBLIC or membership)."""
    rows = conn.execute(
        """
        SELECT a.privilege_type
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
        WHERE n.nspname = %s AND c.relname = %s AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)
        """,
        (g.schema, g.table, g.role),
    ).fetchall()
    return {r[0] for r in rows}


def table_privileges(conn: psycopg.Connection) -> tuple[str, ...]:
    """Every privilege a table has on this server, in the server's order: what its owner holds
    by default (acldefault), which is what GRANT ALL gives."""
    rows = conn.execute(
        "SELECT a.privilege_type FROM pg_catalog.aclexplode(pg_catalog.acldefault('r', 10)) a WHERE a.grantee = 10"
    ).fetchall()
    return tuple(r[0] for r in rows)


def resolved(privileges: tuple[str, ...], every: tuple[str, ...]) -> tuple[str, ...]:
    """`privileges` with ALL spelled out as `every`, a server's table_privileges."""
    return every if ALL in privileges else privileges


def wanted(conn: psycopg.Connection, g: TableGrant) -> set[str]:
    return set(resolved(g.privileges, table_privileges(conn)))


def satisfied(conn: psycopg.Connection, g: TableGrant) -> bool:
    return held_privileges(conn, g) == wanted(conn, g)


def diff(conn: psycopg.Connection) -> list[TableGrant]:
    """The grants whose privileges differ from the model."""
    return [g for g in TABLE_GRANTS if not satisfied(conn, g)]


def grant_sql(g: TableGrant) -> sql.Composed:
    table = sql.Identifier(g.schema, g.table)
    role = sql.Identifier(g.role)
    stmts = [sql.SQL("REVOKE ALL ON {} FROM {}").format(table, role)]
    if ALL in g.privileges:
        stmts = [sql.SQL("GRANT ALL ON {} TO {}").format(table, role)]
    elif g.privileges:
        privs = sql.SQL(", ").join(sql.SQL(p) for p in g.privileges)
        stmts.append(sql.SQL("GRANT {} ON {} TO {}").format(privs, table, role))
    return sql.SQL("; ").join(stmts)


def _holds(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> bool:
    """The answer of a SELECT of one boolean expression (no FROM: it always returns one row)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return bool(row[0])


def _exists(conn: psycopg.Connection, g: TableGrant) -> bool:
    return _holds(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"{g.schema}.{g.table}",))


def public_holds(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether PUBLIC holds any privilege on the table."""
    return _holds(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        " WHERE c.oid = to_regclass(%s) AND a.grantee = 0)",
        (f"{schema}.{table}",),
    )


def public_by_default(conn: psycopg.Connection, schema: str) -> bool:
    """Whether a table the current role creates in the schema is granted to PUBLIC at CREATE
    (a default privilege of that role, in the schema or global)."""
    return _holds(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a"
        " WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND d.defaclobjtype = 'r'"
        " AND d.defaclnamespace IN (0, coalesce(to_regnamespace(%s), 0)) AND a.grantee = 0)",
        (sql.Identifier(schema).as_string(conn),),
    )


def revoke_public_sql(schema: str, table: str) -> sql.Composed:
    return sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(sql.Identifier(schema, table))


def model_tables() -> list[tuple[str, str]]:
    return list(dict.fromkeys((g.schema, g.table) for g in TABLE_GRANTS))


def apply_table_grants(conn: psycopg.Connection) -> list[str]:
    """Bring the grants of every access-model table that exists now to the model.

    The engine calls this inside each migration's own transaction, before COMMIT: Supabase's
    default privileges grant a new public table to anon at CREATE, so the revoke must commit
    with the CREATE or another session could see (and use) the grant in between."""
    changed = []
    for schema, table in model_tables():
        # A grant to PUBLIC reaches anon and authenticated past their own ACL entries: the
        # model grants nothing to PUBLIC on its tables, so it is revoked, not left as drift.
        if public_holds(conn, schema, table):
            conn.execute(revoke_public_sql(schema, table))
            changed.append(f"PUBLIC on {schema}.{table}: nothing")
    for g in TABLE_GRANTS:
        if _exists(conn, g) and not satisfied(conn, g):
            conn.execute(grant_sql(g))
            changed.append(f"{g.role} on {g.schema}.{g.table}: {', '.join(g.privileges) or 'nothing'}")
    return changed


def apply(conn: psycopg.Connection) -> list[str]:
    """Bring the grants to the model in one transaction; returns what changed."""
    changed = []
    with conn.transaction():
        for usage in SCHEMA_USAGE:
            has = _holds(conn, "SELECT has_schema_privilege(%s, %s, 'USAGE')", (usage.role, usage.schema))
            if not has:
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                        sql.Identifier(usage.schema), sql.Identifier(usage.role)
                    )
                )
                changed.append(f"USAGE on schema {usage.schema} to {usage.role}")
        changed += apply_table_grants(conn)
    return changed
