"""The private schema: where our bookkeeping lives (the migration ledger, the rotation audit),
never in `public`, which the Data API exposes. Nobody but its owner has any privilege on it."""

from __future__ import annotations

import psycopg
from psycopg import sql

PRIVATE_SCHEMA = "x402_private"

SCHEMA_DDL = sql.SQL(
    """
    CREATE SCHEMA IF NOT EXISTS {schema};
    REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
    """
).format(schema=sql.Identifier(PRIVATE_SCHEMA))


def ensure(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_DDL)
