"""The SQL that pulumi-postgresql runs for a Role, a Grant and a GrantRole, statement for statement:
a transcription of the provider's upstream and nothing of ours (what we declare is iac/declared.py).

Transcribed from the provider's upstream, cyrilgdn/terraform-provider-postgresql at ff936b9
(v1.26.0+3, the `upstream` submodule of pulumi/pulumi-postgresql 3.18): postgresql/
resource_postgresql_role.go, resource_postgresql_grant.go, resource_postgresql_grant_role.go and
helpers.go (pgLockRole, withRolesGranted, getRolesToGrant). Each operation is one transaction, as
there. The preflight (iac/preflight.py) tries these statements in a transaction that is always
rolled back, before `pulumi up` changes anything, so that a statement the server would refuse is
refused first. The real provider plugin (`make pulumi-tools`) is the judge of its own behaviour
in the tests; they also run this transcription against real servers, to keep it matching.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import psycopg


def ident(name: str) -> str:
    """pq.QuoteIdentifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """pqQuoteLiteral, inside the quotes the provider adds."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class RoleArgs:
    name: str
    password: str | None = None
    login: bool = False
    inherit: bool = True
    superuser: bool = False
    create_database: bool = False
    create_role: bool = False
    replication: bool = False
    bypass_row_level_security: bool = False
    connection_limit: int = -1
    valid_until: str = "infinity"
    roles: tuple[str, ...] = ()
    search_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantArgs:
    database: str
    role: str
    schema: str
    object_type: str  # table or schema: the kinds the program declares
    privileges: tuple[str, ...]
    objects: tuple[str, ...] = ()
    with_grant_option: bool = False
    retain_on_delete: bool = False  # a Pulumi option, not a provider argument: destroy never revokes it


@dataclass(frozen=True)
class GrantRoleArgs:
    role: str
    grant_role: str
    with_admin_option: bool = False


@dataclass
class Session:
    """A connection driven the way the provider drives it; `log` keeps every statement run,
    passwords masked."""

    conn: psycopg.Connection
    log: list[str] = field(default_factory=list)

    def run(self, stmt: str, params: tuple = (), shown: str | None = None) -> list[tuple]:
        self.log.append(shown or stmt)
        cur = self.conn.execute(stmt, params or None)
        return cur.fetchall() if cur.description else []

    def one(self, query: str, params: tuple = ()) -> Any:
        rows = self.conn.execute(query, params).fetchall()
        return rows[0][0] if rows else None

    def transaction(self) -> AbstractContextManager[psycopg.Transaction]:
        return self.conn.transaction()


# ---- helpers.go ---------------------------------------------------------------------------------


def lock_role(s: Session, role: str) -> None:
    s.run("SET statement_timeout = 0")
    s.run("SELECT pg_advisory_xact_lock(oid::bigint) FROM pg_roles WHERE rolname = %s", (role,))
    s.run(
        "SELECT pg_advisory_xact_lock(member::bigint) FROM pg_auth_members JOIN pg_roles ON roleid = pg_roles.oid WHERE rolname = %s",
        (role,),
    )


def _is_member(s: Session, role: str, member: str) -> bool:
    has_set = s.one(
        "SELECT 1 FROM information_schema.columns WHERE table_name='pg_auth_members' AND column_name = 'set_option'"
    )
    q = "SELECT 1 FROM pg_auth_members WHERE pg_get_userbyid(roleid) = %s AND pg_get_userbyid(member) = %s"
    return s.one(q + (" AND set_option" if has_set else ""), (role, member)) is not None


def _grant_membership(s: Session, role: str, member: str) -> bool:
    if member == role or _is_member(s, role, member):
        return False
    s.run(f"GRANT {ident(role)} TO {ident(member)}")
    return True


def _revoke_membership(s: Session, role: str, member: str) -> bool:
    if member == role or not _is_member(s, role, member):
        return False
    s.run(f"REVOKE {ident(role)} FROM {ident(member)}")
    return True


def _is_superuser(s: Session, role: str) -> bool:
    return bool(s.one("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)))


def with_roles_granted(s: Session, roles: list[str], fn: Callable[[], None]) -> None:
    """Temporarily make the connecting role a member of each owner, so that a non-superuser
    can change privileges on objects it does not own."""
    if not roles:
        return fn()
    current = s.one("SELECT CURRENT_USER")
    if _is_superuser(s, current):
        return fn()
    granted, revoked = [], []
    for role in roles:
        if _is_superuser(s, role):
            continue
        if _revoke_membership(s, current, role):
            revoked.append(role)
        if _grant_membership(s, role, current):
            granted.append(role)
    fn()
    for role in granted:
        _revoke_membership(s, role, current)
    for role in revoked:
        if s.one("SELECT 1 FROM pg_roles WHERE rolname=%s", (role,)):
            _grant_membership(s, current, role)


def roles_to_grant(s: Session, g: GrantArgs) -> list[str]:
    """getRolesToGrant: the owners of every table in the schema, and the schema's owner."""
    owners: list[str] = []
    if g.object_type != "schema":
        owners = [
            r[0] for r in s.conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s", (g.schema,))
        ]
    schema_owner = s.one(
        "SELECT rolname FROM pg_namespace JOIN pg_roles ON nspowner = pg_roles.oid WHERE nspname = %s", (g.schema,)
    )
    if schema_owner not in owners:
        owners.append(schema_owner)
    db_owner = s.one(
        "SELECT rolname FROM pg_database JOIN pg_roles ON datdba = pg_roles.oid WHERE datname = current_database()"
    )
    return [db_owner if o == "pg_database_owner" else o for o in owners]


# ---- resource_postgresql_role.go ----------------------------------------------------------------


def _role_options(a: RoleArgs) -> list[str]:
    opts = []
    if a.password:
        opts += ["PASSWORD NULL"] if a.password.upper() == "NULL" else ["ENCRYPTED", f"PASSWORD {literal(a.password)}"]
    opts.append(
        "VALID UNTIL 'infinity'"
        if a.valid_until.lower() in ("", "infinity")
        else f"VALID UNTIL {literal(a.valid_until)}"
    )
    opts.append(f"CONNECTION LIMIT {a.connection_limit}")
    for value, on, off in (
        (a.superuser, "SUPERUSER", "NOSUPERUSER"),
        (a.create_database, "CREATEDB", "NOCREATEDB"),
        (a.create_role, "CREATEROLE", "NOCREATEROLE"),
        (a.inherit, "INHERIT", "NOINHERIT"),
        (a.login, "LOGIN", "NOLOGIN"),
        (a.bypass_row_level_security, "BYPASSRLS", "NOBYPASSRLS"),
        (a.replication, "REPLICATION", "NOREPLICATION"),
    ):
        opts.append(on if value else off)
    return opts


def _masked(stmt: str, password: str | None) -> str:
    return stmt.replace(literal(password), "'***'") if password else stmt


def _grant_roles(s: Session, a: RoleArgs) -> None:
    for r in a.roles:
        s.run(f"GRANT {ident(r)} TO {ident(a.name)}")


def _alter_search_path(s: Session, a: RoleArgs) -> None:
    path = ", ".join(ident(p) for p in a.search_path) if a.search_path else "DEFAULT"
    s.run(f"ALTER ROLE {ident(a.name)} SET search_path TO {path}")


def role_create(s: Session, a: RoleArgs) -> None:
    stmt = f"CREATE ROLE {ident(a.name)} WITH " + " ".join(_role_options(a))
    with s.transaction():
        s.run(stmt, shown=_masked(stmt, a.password))
        _grant_roles(s, a)
        _alter_search_path(s, a)


def role_update(s: Session, old: RoleArgs, new: RoleArgs) -> None:
    with s.transaction():
        lock_role(s, old.name)
        if new.name != old.name:
            s.run(f"ALTER ROLE {ident(old.name)} RENAME TO {ident(new.name)}")
        if (new.password != old.password or new.name != old.name) and new.password:
            stmt = f"ALTER ROLE {ident(new.name)} PASSWORD {literal(new.password)}"
            s.run(stmt, shown=_masked(stmt, new.password))
        for attr, on, off in (
            ("bypass_row_level_security", "BYPASSRLS", "NOBYPASSRLS"),
            ("connection_limit", None, None),
            ("create_database", "CREATEDB", "NOCREATEDB"),
            ("create_role", "CREATEROLE", "NOCREATEROLE"),
            ("inherit", "INHERIT", "NOINHERIT"),
            ("login", "LOGIN", "NOLOGIN"),
            ("replication", "REPLICATION", "NOREPLICATION"),
            ("superuser", "SUPERUSER", "NOSUPERUSER"),
        ):
            if getattr(old, attr) == getattr(new, attr):
                continue
            if attr == "connection_limit":
                s.run(f"ALTER ROLE {ident(new.name)} CONNECTION LIMIT {new.connection_limit}")
            else:
                s.run(f"ALTER ROLE {ident(new.name)} WITH {on if getattr(new, attr) else off}")
        if new.valid_until != old.valid_until and new.valid_until:
            s.run(
                f"ALTER ROLE {ident(new.name)} VALID UNTIL {literal('infinity' if new.valid_until.lower() == 'infinity' else new.valid_until)}"
            )
        # revokeRoles: every role it is a member of, whoever granted it; then grantRoles.
        member_of = [
            r[0]
            for r in s.conn.execute(
                "SELECT pg_get_userbyid(roleid) FROM pg_catalog.pg_auth_members members "
                "JOIN pg_catalog.pg_roles ON members.member = pg_roles.oid WHERE rolname = %s",
                (new.name,),
            )
        ]
        for r in member_of:
            s.run(f"REVOKE {ident(r)} FROM {ident(new.name)}")
        _grant_roles(s, new)
        _alter_search_path(s, new)


def role_delete(s: Session, a: RoleArgs) -> None:
    with s.transaction():
        lock_role(s, a.name)
        user = s.one("SELECT session_user")  # the provider's configured username

        def reassign_and_drop_owned():
            s.run(f"REASSIGN OWNED BY {ident(a.name)} TO {ident(user)}")
            s.run(f"DROP OWNED BY {ident(a.name)}")

        with_roles_granted(s, [a.name], reassign_and_drop_owned)
        s.run(f"DROP ROLE {ident(a.name)}")


# ---- resource_postgresql_grant.go ---------------------------------------------------------------


def _objects(g: GrantArgs) -> str:
    return ",".join(f"{ident(g.schema)}.{ident(o)}" for o in g.objects)


def grant_sql(g: GrantArgs) -> str | None:
    if not g.privileges:
        return None  # grantRolePrivileges: nothing to grant
    privs = ",".join(g.privileges)
    if g.object_type == "schema":
        q = f"GRANT {privs} ON SCHEMA {ident(g.schema)} TO {ident(g.role)}"
    elif g.objects:
        q = f"GRANT {privs} ON {g.object_type.upper()} {_objects(g)} TO {ident(g.role)}"
    else:
        q = f"GRANT {privs} ON ALL {g.object_type.upper()}S IN SCHEMA {ident(g.schema)} TO {ident(g.role)}"
    return q + (" WITH GRANT OPTION" if g.with_grant_option else "")


def revoke_sql(g: GrantArgs) -> str:
    if g.object_type == "schema":
        return f"REVOKE ALL PRIVILEGES ON SCHEMA {ident(g.schema)} FROM {ident(g.role)}"
    kind = g.object_type.upper()
    if not g.objects:
        return f"REVOKE ALL PRIVILEGES ON ALL {kind}S IN SCHEMA {ident(g.schema)} FROM {ident(g.role)}"
    if g.privileges:  # only the listed privileges, "to avoid messing with column level grants"
        return f"REVOKE {','.join(g.privileges)} ON {kind} {_objects(g)} FROM {ident(g.role)}"
    return f"REVOKE ALL PRIVILEGES ON {kind} {_objects(g)} FROM {ident(g.role)}"


def grant_create(s: Session, g: GrantArgs, previous: GrantArgs | None = None) -> None:
    """Create, or Update with the prior state in `previous` (usePrevious)."""
    with s.transaction():
        lock_role(s, g.role)

        def revoke_then_grant():
            s.run(revoke_sql(previous or g))
            if (q := grant_sql(g)) is not None:
                s.run(q)

        with_roles_granted(s, roles_to_grant(s, g), revoke_then_grant)


def grant_delete(s: Session, g: GrantArgs) -> None:
    with s.transaction():
        lock_role(s, g.role)

        def revoke():
            s.run(revoke_sql(g))

        with_roles_granted(s, roles_to_grant(s, g), revoke)


# ---- resource_postgresql_grant_role.go ----------------------------------------------------------


def grant_role_create(s: Session, a: GrantRoleArgs) -> None:
    with s.transaction():
        s.run(f"REVOKE {ident(a.grant_role)} FROM {ident(a.role)}")
        s.run(f"GRANT {ident(a.grant_role)} TO {ident(a.role)}" + (" WITH ADMIN OPTION" if a.with_admin_option else ""))


def grant_role_delete(s: Session, a: GrantRoleArgs) -> None:
    with s.transaction():
        s.run(f"REVOKE {ident(a.grant_role)} FROM {ident(a.role)}")
