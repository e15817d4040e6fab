"""The owner on record: which Pulumi stack deployed this database, kept in the database itself.

One row names the owning stack (project, stack, and a deployment id that stack keeps in its
state, so two stacks of the same name in two backends are still two owners). A second table says
which resource of that stack holds each migration. Both are written in the same transaction as
the ledger row they describe, so a kill -9 never leaves the database claimed without the work,
or the work without its claim.

Why a holder per migration: a stack whose database identity changes (host, port, database,
target) replaces its migration resources, and Pulumi deletes the old resource after creating the
new one. When the "new" database is the same one, the old resource must not revert what the new
one now holds: its delete sees that another resource holds the row and changes nothing.

`migrate.py` and `make deploy` never claim or release a database: their ledger rows carry no
holder, and the owning stack's next `pulumi up` takes them in (the database is the stack's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ..errors import Refused
from ..private import PRIVATE_SCHEMA, SCHEMA_DDL
from .files import Direction, Migration
from .ledger import LEDGER

OWNER_TABLE = f"{PRIVATE_SCHEMA}.stack_owner"
HOLDS_TABLE = f"{PRIVATE_SCHEMA}.stack_holds"
_OWNER = sql.Identifier(*OWNER_TABLE.split("."))
_HOLDS = sql.Identifier(*HOLDS_TABLE.split("."))

# One multi-statement query: one implicit transaction. A holder row goes with its ledger row
# (ON DELETE CASCADE), so `migrate.py down` never leaves a stale claim behind.
_DDL = SCHEMA_DDL + sql.SQL(
    """
    CREATE TABLE IF NOT EXISTS {owner} (
      singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      project    text NOT NULL,
      stack      text NOT NULL,
      deployment text NOT NULL,
      claimed_at timestamptz NOT NULL DEFAULT now(),
      claimed_by text NOT NULL
    );
    REVOKE ALL ON {owner} FROM PUBLIC;
    CREATE TABLE IF NOT EXISTS {holds} (
      version  text PRIMARY KEY REFERENCES {ledger} (version) ON DELETE CASCADE,
      resource text NOT NULL
    );
    REVOKE ALL ON {holds} FROM PUBLIC;
    """
).format(owner=_OWNER, holds=_HOLDS, ledger=LEDGER)


@dataclass(frozen=True)
class Owner:
    """The stack a Pulumi run speaks for. `take_over_from` names, exactly, the deployment id of
    an owner this stack may replace: never a pattern, so it cannot take over anything else."""

    project: str
    stack: str
    deployment: str
    take_over_from: str = ""

    @property
    def label(self) -> str:
        return f"{self.project}/{self.stack}"


@dataclass(frozen=True)
class Recorded:
    project: str
    stack: str
    deployment: str
    claimed_at: datetime
    claimed_by: str

    def describe(self) -> str:
        return (
            f"Pulumi stack {self.project}/{self.stack} (deployment {self.deployment}, since "
            f"{self.claimed_at:%Y-%m-%d %H:%M} UTC, by {self.claimed_by})"
        )


def _exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def recorded(conn: psycopg.Connection, *, for_update: bool = False) -> Recorded | None:
    if not _exists(conn, OWNER_TABLE):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT project, stack, deployment, claimed_at AT TIME ZONE 'UTC', claimed_by FROM {}"
            + (" FOR UPDATE" if for_update else "")
        ).format(_OWNER)
    ).fetchone()
    return Recorded(*row) if row else None


def holders(conn: psycopg.Connection) -> dict[str, str]:
    if not _exists(conn, HOLDS_TABLE):
        return {}
    return dict(conn.execute(sql.SQL("SELECT version, resource FROM {}").format(_HOLDS)).fetchall())


def foreign(owner: Owner, found: Recorded | None) -> str | None:
    """Why `owner` may not deploy to a database recorded as `found`'s, or None when it may."""
    if found is None or found.deployment == owner.deployment or found.deployment == owner.take_over_from:
        return None
    return (
        f"this database is deployed by {found.describe()}, not by this stack ({owner.label}); a stack never takes "
        "over another's database silently. If that stack is gone for good, or this stack replaces it, take over "
        f"explicitly: pulumi config set takeOverFrom {found.deployment}"
    )


def claim(conn: psycopg.Connection, owner: Owner, version: str, resource: str, claimed_by: str) -> None:
    """Inside the caller's transaction: record `owner` as the database's (refusing another's) and
    `resource` as the holder of `version`'s ledger row."""
    if not (_exists(conn, OWNER_TABLE) and _exists(conn, HOLDS_TABLE)):
        # Once only: its REVOKEs rewrite catalog rows, and a session rewriting the same ones (a key
        # rotation's schema check) would fail one of the two with "tuple concurrently updated".
        conn.execute(_DDL)
    found = recorded(conn, for_update=True)
    reason = foreign(owner, found)
    if reason:
        raise Refused(f"nothing changed: {reason}")
    if found is None:
        conn.execute(
            sql.SQL("INSERT INTO {} (project, stack, deployment, claimed_by) VALUES (%s, %s, %s, %s)").format(_OWNER),
            (owner.project, owner.stack, owner.deployment, claimed_by),
        )
    elif (found.project, found.stack, found.deployment) != (owner.project, owner.stack, owner.deployment):
        # A takeover, or this stack renamed: the row names who holds it now.
        conn.execute(
            sql.SQL(
                "UPDATE {} SET project = %s, stack = %s, deployment = %s, claimed_at = now(), claimed_by = %s"
            ).format(_OWNER),
            (owner.project, owner.stack, owner.deployment, claimed_by),
        )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (version, resource) VALUES (%s, %s) ON CONFLICT (version) DO UPDATE SET resource = EXCLUDED.resource"
        ).format(_HOLDS),
        (version, resource),
    )


def require_owned(conn: psycopg.Connection, owner: Owner, what: str) -> None:
    """Inside the caller's transaction: refuse unless the database is `owner`'s (or unowned, as a
    database deployed before owners were recorded is)."""
    found = recorded(conn, for_update=True)
    if found is not None and found.deployment != owner.deployment:
        raise Refused(
            f"{what} refused, nothing changed: this database is now deployed by {found.describe()}, not by this "
            f"stack ({owner.label}), so this stack reverts nothing there. To drop this stack's state without touching "
            f"the database: pulumi stack rm --force {owner.stack}"
        )


def release_if_empty(conn: psycopg.Connection) -> None:
    """Inside the revert's transaction: once no migration is recorded, the database is nobody's."""
    if not _exists(conn, OWNER_TABLE):
        return
    conn.execute(sql.SQL("DELETE FROM {} WHERE NOT EXISTS (SELECT 1 FROM {})").format(_OWNER, LEDGER))


@dataclass(frozen=True)
class StackRecorder:
    """The engine's Recorder for one Pulumi migration resource: its claim goes into the ledger's
    transaction, and a revert refuses on a database another stack now owns."""

    owner: Owner
    resource: str
    claimed_by: str

    def before(self, conn: psycopg.Connection, m: Migration, direction: Direction) -> None:
        if direction == Direction.UP:
            reason = foreign(self.owner, recorded(conn, for_update=True))
            if reason:
                raise Refused(f"{m.label} not applied, nothing changed: {reason}")
        else:
            require_owned(conn, self.owner, f"{m.label} down")

    def after(self, conn: psycopg.Connection, m: Migration, direction: Direction) -> None:
        if direction == Direction.UP:
            claim(conn, self.owner, m.version, self.resource, self.claimed_by)
        else:
            release_if_empty(conn)
