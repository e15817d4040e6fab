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

from ..migrate import ledger, sqlparse
from ..migrate.files import Migration
from .checks import Checklist


def _first_line(sql: str) -> str:
    return " ".join(sql.split())[:60]


def run(conn: psycopg.Connection, c: Checklist, migrations: list[Migration]) -> None:
    applied = ledger.entries(conn)
    for m in migrations:
        if m.version not in applied or not m.verify_text.strip():
            continue
        statements = sqlparse.statements(m.verify_text, f"{m.label}.verify.sql")
        with conn.transaction(force_rollback=True):
            # A verify file must never wait behind the application's locks, nor run long.
            conn.execute("SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '10s'")
            for n, statement in enumerate(statements, 1):
                name = f"verify.{m.version}.{n}"
                try:
                    with conn.transaction():
                        conn.execute(statement.sql.encode())
                except psycopg.Error as exc:
                    reason = exc.diag.message_primary or type(exc).__name__
                    c.add(name, False, f"{m.version}: {reason} (statement {n}: {_first_line(statement.sql)})")
                else:
                    c.add(name, True, success=f"{m.version}: {_first_line(statement.sql)}")
