"""Preflight: a dynamic resource that every other resource waits for, whose `check` (run by
`pulumi preview` and again at the start of `pulumi up`, before any resource is created) tries
the exact statements pulumi-postgresql will run (iac/provider_sql.py) in one transaction that
is always rolled back. If the server would refuse one, the run stops there with one sentence
saying why and what to do, and nothing has changed: never a `pulumi up` that fails halfway.

Before the provider's statements it runs every other refusal `pulumi up` could meet, so that
none of them comes after the backend role exists: the database belongs to another stack
(migrate/owner.py), the ledger records another target, or the plan of the migrations refuses.

It also gives the stack its deployment id, the one the database records as its owner: made
once, at the stack's first check, and kept from the previous inputs ever after.

It needs the database reachable at preview time, as the provider does for refresh.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

if TYPE_CHECKING:
    import psycopg

    from ..migrate.owner import Owner


def _advice(stmt: str, user: str, version: int) -> str:
    words = stmt.split()
    membership = words[0] in ("GRANT", "REVOKE") and len(words) == 4 and words[2] in ("TO", "FROM")
    if membership and version >= 160000:
        granted = words[1].strip('"')
        return (
            f"since PostgreSQL 16 only a role holding ADMIN OPTION on {granted} may grant or revoke it, and {user} "
            f"does not: leave backendRole unset (`pulumi config rm backendRole`), or have a superuser run "
            f"`GRANT {granted} TO {user} WITH ADMIN OPTION` first"
        )
    return f"grant {user} the privilege this statement needs, or leave out the resource that runs it"


def refusal_before_any_change(conn: psycopg.Connection, target: str, owner: Owner | None) -> str | None:
    """What would stop `pulumi up` on its migrations, found before anything is created."""
    from ..errors import BundleError
    from ..migrate import files, ledger
    from ..migrate import owner as owners
    from ..migrate.engine import Engine
    from ..migrate.files import Direction
    from ..migrate.target import detect
    from ..plan.planner import Planner

    found = owners.recorded(conn)
    reason = owners.foreign(owner, found) if owner else None
    if reason:
        return f"preflight refused, nothing was changed: {reason}"
    others = sorted({e.target for e in ledger.entries(conn).values()} - {target})
    if others:
        return (
            f"preflight refused, nothing was changed: this database's ledger records migrations of target "
            f"{', '.join(others)}, and this stack says target {target}; a target is fixed once deployed. Set it back "
            f"(pulumi config set target {others[0]}), or deploy this target to another database"
        )
    try:
        engine = Engine(conn, files.load(), detect(conn, target))
        plan = Planner(engine).build(Direction.UP)
    except BundleError as exc:
        return f"preflight refused, nothing was changed: the migrations' plan cannot be made: {exc}"
    if plan.verdict == "refused":
        reasons = "; ".join(f"{m.version}_{m.name}: {r}" for m in plan.migrations for r in m.reasons)
        return f"preflight refused, nothing was changed: the migrations' plan refuses: {reasons}"
    return None


def preflight(
    dsn: str, database: str, backend_role: str | None, target: str = "", owner: Owner | None = None
) -> str | None:
    """None when every statement would succeed, else the one sentence to stop on; bounded.Blocked
    when one would wait on another session's lock."""
    import psycopg
    from psycopg import errors as pgerr

    from .. import db
    from ..errors import BundleError
    from . import declared
    from . import provider_sql as p
    from .bounded import reads

    try:
        conn = db.connect(dsn, application_name="x402db-pulumi-preflight")
    except BundleError as exc:
        return f"preflight: {exc}"
    with conn, reads(conn, "the preflight"):
        if target:
            refused = refusal_before_any_change(conn, target, owner)
            if refused:
                return refused
        s = p.Session(conn)
        version = conn.info.server_version
        user = s.one("SELECT current_user")
        try:
            with conn.transaction(force_rollback=True):
                if backend_role:
                    role = declared.backend_role(backend_role)  # no password: it changes no permission
                    if s.one("SELECT 1 FROM pg_roles WHERE rolname = %s", (backend_role,)):
                        p.role_update(s, role, role)  # re-grants its roles, as any later update does
                    else:
                        p.role_create(s, role)
                for g in declared.grants(database):
                    exists = g.object_type == "schema" or s.one(
                        "SELECT to_regclass(%s)", (f"{p.ident(g.schema)}.{p.ident(g.objects[0])}",)
                    )
                    # On plain postgres the compat migration creates the API roles: on a fresh
                    # cluster they do not exist yet, and the Grant runs only after it.
                    exists = exists and s.one("SELECT 1 FROM pg_roles WHERE rolname = %s", (g.role,))
                    if exists:
                        p.grant_create(s, g)
                    else:  # a migration creates it, owned by us: only the owners' part can fail
                        with conn.transaction():
                            p.lock_role(s, g.role)
                            p.with_roles_granted(s, p.roles_to_grant(s, g), lambda: None)
        except pgerr.LockNotAvailable:
            raise  # not a refusal: reads() names the session to wait for
        except psycopg.Error as exc:
            stmt = s.log[-1] if s.log else "?"
            reason = (exc.diag.message_primary or str(exc)).rstrip(".")
            return (
                f"preflight refused, nothing was changed: on PostgreSQL {version // 10000} the provider's `{stmt}` fails "
                f"as {user} ({reason}); {_advice(stmt, user, version)}, then run pulumi up again."
            )
    return None


def _owner(props: dict[str, Any]) -> Owner | None:
    from ..migrate.owner import Owner

    o = props.get("owner") or {}
    if not o.get("project"):
        return None
    return Owner(o["project"], o["stack"], props["deployment"], o.get("take_over_from") or "")


class PreflightProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        from .bounded import Blocked

        news = {**news, "deployment": olds.get("deployment") or news.get("deployment") or str(uuid.uuid4())}
        try:
            failure = preflight(
                news["dsn"], news["database"], news.get("backend_role") or None, news.get("target") or "", _owner(news)
            )
        except Blocked as exc:
            failure = str(exc)  # a check failure too: preview and up stop on it, nothing changed
        # No property: the CLI prints a failing property's value next to the reason, and the secret
        # dsn would be printed in plaintext there (issueCheckFailures formats it with %v).
        return CheckResult(news, [CheckFailure("", failure)] if failure else [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Nothing to change in the database, ever; only what the resources after it read from it.
        keys = ("deployment", "owner", "target")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys))

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult("preflight", props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(news)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class Preflight(Resource, module="x402", name="Preflight"):
    deployment: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["dsn"]))
        super().__init__(PreflightProvider(), name, {"deployment": None, **props}, opts)
