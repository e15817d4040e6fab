"""The migration ledger: what is deployed, with the checksums of the files that deployed it.

A row's `state` is committed in the same transaction as the work it describes, so the ledger
never claims more or less than the database holds, whenever the run is killed:

    steps-pending  up's transactional part (and the grants) committed; its no-transaction steps
                   (CREATE INDEX CONCURRENTLY, a foreign key added once its index is there,
                   VALIDATE) have not all finished. `up` resumes them.
    applied        everything of the up is done.
    reverting      down's transactional part (the drops) committed; its no-transaction steps have
                   not all finished. `down` resumes them. No row: nothing of it is applied.

`down_checksum` is the SHA-256 of the down file at apply time (NULL on rows written before it
was recorded): the down holds the data-loss guards, so an edited down is refused like drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import psycopg
from psycopg import sql

from ..private import PRIVATE_SCHEMA, SCHEMA_DDL

LEDGER_TABLE = f"{PRIVATE_SCHEMA}.schema_migrations"
LEDGER = sql.Identifier(*LEDGER_TABLE.split("."))


class State(StrEnum):
    """A ledger row's `state` column. The values are stored in the table (its CHECK lists them)
    and printed by `status --json`: never change one."""

    APPLIED = "applied"
    STEPS_PENDING = "steps-pending"
    REVERTING = "reverting"


# What each ledger state means for the operator, and the command that converges it.
HINTS: dict[str, str] = {
    State.STEPS_PENDING: "committed, but its no-transaction steps (index builds, foreign keys added after them, VALIDATE) did not all "
    "finish; run up again (or pulumi up) to finish them",
    State.REVERTING: "its down's drops are committed, but the down's no-transaction steps did not all finish; run down "
    "again (or make revert / pulumi destroy) to finish them",
}

# One multi-statement query with the schema's: one implicit transaction.
_DDL = SCHEMA_DDL + sql.SQL(
    """
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
).format(table=LEDGER)

# One multi-statement query: one implicit transaction, so the upgrade is all or nothing.
_EVOLVE = sql.SQL(
    """
    -- Evolved in place: a ledger written by an earlier bundle gains the columns, its rows keep
    -- state 'applied' (they were recorded only once complete) and no down checksum.
    ALTER TABLE {table}
      ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT {applied},
      ADD COLUMN IF NOT EXISTS down_checksum text;
    DO $$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {regclass}::regclass AND conname = 'schema_migrations_state_check') THEN
        ALTER TABLE {table} ADD CONSTRAINT schema_migrations_state_check
          CHECK (state IN ({states}));
      END IF;
      IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = {regclass}::regclass AND conname = 'schema_migrations_down_checksum_check') THEN
        ALTER TABLE {table} ADD CONSTRAINT schema_migrations_down_checksum_check
          CHECK (down_checksum ~ '^[0-9a-f]{{64}}$');
      END IF;
    END
    $$;
    """
).format(
    table=LEDGER,
    regclass=sql.Literal(LEDGER_TABLE),
    applied=sql.Literal(State.APPLIED),
    states=sql.SQL(", ").join(sql.Literal(s) for s in State),
)


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
    state: str = State.APPLIED  # as read: a State value, since the table's CHECK allows no other
    down_checksum: str | None = None


def ensure(conn: psycopg.Connection) -> None:
    conn.execute(_DDL)
    if not _evolved(conn):
        conn.execute(_EVOLVE)


def exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (LEDGER_TABLE,)).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    return bool(row[0])


def _evolved(conn: psycopg.Connection) -> bool:
    # Reading must not write: `status` on a ledger an older bundle wrote reads it as it is.
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'state' AND NOT attisdropped)",
        (LEDGER_TABLE,),
    ).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    return bool(row[0])


def entries(conn: psycopg.Connection) -> dict[str, Entry]:
    if not exists(conn):
        return {}
    extra = "state, down_checksum" if _evolved(conn) else f"'{State.APPLIED}', NULL::text"
    rows = conn.execute(
        sql.SQL(
            "SELECT version, name, checksum, kind, target, applied_at, applied_by, execution_ms, "
            + extra
            + " FROM {} ORDER BY version"
        ).format(LEDGER)
    ).fetchall()
    return {r[0]: Entry(*r) for r in rows}


def record(
    conn: psycopg.Connection,
    *,
    version: str,
    name: str,
    checksum: str,
    kind: str,
    target: str,
    applied_by: str,
    execution_ms: int,
    state: State = State.APPLIED,
    down_checksum: str | None = None,
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (version, name, checksum, kind, target, applied_by, execution_ms, state, down_checksum)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(LEDGER),
        (version, name, checksum, kind, target, applied_by, execution_ms, state, down_checksum),
    )


def set_state(conn: psycopg.Connection, version: str, state: State, execution_ms: int | None = None) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET state = %s, execution_ms = coalesce(%s, execution_ms) WHERE version = %s").format(
            LEDGER
        ),
        (state, execution_ms, version),
    )


def record_down_checksum(
    conn: psycopg.Connection, version: str, down_checksum: str, replacing: str | None = None
) -> None:
    """Set the down checksum of a row that still holds `replacing` (None: a row written before down
    checksums were recorded); a row someone else changed meanwhile is left as it is."""
    conn.execute(
        sql.SQL("UPDATE {} SET down_checksum = %s WHERE version = %s AND down_checksum IS NOT DISTINCT FROM %s").format(
            LEDGER
        ),
        (down_checksum, version, replacing),
    )


def forget(conn: psycopg.Connection, version: str) -> None:
    conn.execute(sql.SQL("DELETE FROM {} WHERE version = %s").format(LEDGER), (version,))
