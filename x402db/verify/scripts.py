"""A migration's own verify file (`sql/NNN_name.verify.sql`): behaviour its author can state in
SQL, run by full smoke for every applied migration that ships one.

The file runs in one transaction that is always rolled back, statement by statement, each in a
savepoint: a statement that runs is a passed check, one that raises is a failed check whose
detail is the exception's primary message (the author's words in a RAISE), and the statements
after it still run. Settings a statement makes with set_config(..., true), such as the role and
JWT claims PostgREST sets, stay in force for the statements after it, as in a psql session.
"""

from __future__ import annotations

import psycopg
from psycopg import pq

from ..errors import BundleError
from ..migrate import ledger, sqlparse
from ..migrate.files import Migration
from .checks import Checklist

# A verify file never waits behind the application's locks, nor runs long.
_BOUNDS = b"SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '10s'"


def _first_line(sql: str) -> str:
    return " ".join(sql.split())[:60]


def run(conn: psycopg.Connection, c: Checklist, migrations: list[Migration]) -> None:
    applied = ledger.entries(conn)
    for m in migrations:
        if m.version not in applied or not m.verify_text.strip():
            continue
        statements = sqlparse.statements(m.verify_text, f"{m.label}.verify.sql")
        with conn.transaction(force_rollback=True):
            for n, statement in enumerate(statements, 1):
                name = f"verify.{m.version}.{n}"
                if sqlparse.controls_transaction(statement):  # load() refuses these; never run one
                    raise BundleError(f"{m.label}.verify.sql: statement {n} controls the transaction; not run")
                # Before every statement: an earlier one may have lifted the bounds (SET, set_config).
                conn.execute(_BOUNDS)
                try:
                    with conn.transaction():
                        conn.execute(statement.sql.encode())
                except psycopg.Error as exc:
                    reason = exc.diag.message_primary or type(exc).__name__
                    c.add(name, False, f"{m.version}: {reason} (statement {n}: {_first_line(statement.sql)})")
                else:
                    c.add(name, True, success=f"{m.version}: {_first_line(statement.sql)}")
                if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
                    # Whatever ended the transaction, nothing after it may run outside one.
                    raise BundleError(f"{m.label}.verify.sql: statement {n} left the rolled-back transaction")
