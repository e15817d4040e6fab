"""Which platform the database is: Supabase (auth and API roles provided) or plain PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ..errors import UsageError
from . import ledger

TARGETS = ("supabase", "postgres")
API_ROLES = ("anon", "authenticated", "service_role")
COMPAT_VERSION = "000"


@dataclass(frozen=True)
class Target:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def detect(conn: psycopg.Connection, requested: str | None = None) -> Target:
    row = conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    has_auth = row[0]
    roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(API_ROLES),))}
    ours = COMPAT_VERSION in ledger.entries(conn)
    if requested:
        if requested not in TARGETS:
            raise UsageError(f"unknown target {requested!r}; use one of {', '.join(TARGETS)}")
        if requested == "supabase" and ours:
            raise UsageError(
                "target supabase requested, but this database got its auth layer from our compat migration; it is a plain PostgreSQL target"
            )
        if requested == "supabase" and not (has_auth and roles == set(API_ROLES)):
            raise UsageError(
                "target supabase requested, but auth.users or the anon/authenticated/service_role roles are missing"
            )
        return Target(requested, "requested")
    if ours:
        return Target("postgres", "detected: compat layer recorded in the ledger")
    if has_auth and roles == set(API_ROLES):
        return Target("supabase", "detected: auth schema and API roles present")
    return Target("postgres", "detected: no Supabase auth schema or API roles")
