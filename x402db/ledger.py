"""The migration ledger: what is deployed, with the checksum of the file that deployed it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from . import PRIVATE_SCHEMA

TABLE = sql.Identifier(PRIVATE_SCHEMA, "schema_migrations")

_DDL = sql.SQL(
    """
    CREATE SCHEMA IF NOT EXISTS {schema};
    REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
    CREATE TABLE IF NOT EXISTS {table} (
      version      text PRIMARY KEY,
      name         text NOT NULL,
      checksum     text NOT NULL CHECK (checksum ~ '^[0-9a-f]{{64}}$'),
      kind         text NOT NULL DEFAULT 'applied' CHECK (kind IN ('applied', 'adopted')),
      target       text NOT NULL,
      applied_at   timestamptz NOT NULL DEFAULT now(),
      applied_by   text NOT NULL,
      execution_ms integer NOT NULL
    );
    REVOKE ALL ON {table} FROM PUBLIC;
    """
).format(schema=sql.Identifier(PRIVATE_SCHEMA), table=TABLE)


@dataclass(frozen=True)
class Entry:
    version: str
    name: str
    checksum: str
    kind: str
    target: str
    applied_at: datetime
    applied_by: str
    execution_ms: int


def ensure(conn: psycopg.Connection) -> None:
    conn.execute(_DDL)


def exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{PRIVATE_SCHEMA}.schema_migrations",)).fetchone()
    return bool(row[0])


def entries(conn: psycopg.Connection) -> dict[str, Entry]:
    if not exists(conn):
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT version, name, checksum, kind, target, applied_at, applied_by, execution_ms"
            " FROM {} ORDER BY version"
        ).format(TABLE)
    ).fetchall()
    return {r[0]: Entry(*r) for r in rows}


def record(conn, *, version, name, checksum, kind, target, applied_by, execution_ms) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (version, name, checksum, kind, target, applied_by, execution_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        ).format(TABLE),
        (version, name, checksum, kind, target, applied_by, execution_ms),
    )


def forget(conn, version: str) -> None:
    conn.execute(sql.SQL("DELETE FROM {} WHERE version = %s").format(TABLE), (version,))
