"""The one order in which a migration takes its table locks: the order the application's own
foreign keys imply, a referenced table before the tables that reference it.

The application locks in that order: a DELETE on a referenced table (ai_models) locks it, then
its ON DELETE action locks the referencing table (x402_resources). A migration that holds the
referencing table and then asks for the referenced one, as dropping or adding a foreign key
does, closes a cycle with such a delete: a deadlock (40P01) that PostgreSQL resolves by killing
one side. So the engine takes, up front and in this order, the tables a script names in
`-- x402:lock` and the referenced tables of the foreign keys it adds or drops; a no-transaction
step that adds or drops one runs in a transaction of its own that takes them first. The order is
read from pg_constraint at run time, never written per file, so a table shape the bundle did
not write is ordered by its own keys.

SHARE ROW EXCLUSIVE is what the guards need (no writer between their count and the DROP), and it
is enough for the order: it conflicts with every writer's ROW EXCLUSIVE, so an application
statement that already holds one of these tables makes the migration wait while it holds
nothing the statement needs next. It does not conflict with the ROW SHARE a foreign key check
takes on the referenced table, so an INSERT into the referencing table that started first (it
locks the referencing table first) finishes too. The DDL's ACCESS EXCLUSIVE that follows then
waits only for readers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

from . import sqlparse
from .files import Script

MODE = "SHARE ROW EXCLUSIVE"


def _oids(conn: psycopg.Connection, tables: Iterable[str]) -> list[int]:
    """The tables that exist, in the order given, each once."""
    out: list[int] = []
    for name in tables:
        row = conn.execute("SELECT pg_catalog.to_regclass(%s)::oid", (name,)).fetchone()
        if row and row[0] is not None and row[0] not in out:
            out.append(row[0])
    return out


# LOCK TABLE in this mode takes one of these privileges; the foreign key's own DDL does not. A
# referenced table the role may not lock (a platform's table) is left to the DDL, as before.
_MAY_LOCK = "pg_catalog.has_table_privilege(c.confrelid, 'UPDATE, DELETE, TRUNCATE')"


def _referenced(conn: psycopg.Connection, use: sqlparse.ForeignKeyUse) -> list[int]:
    """The tables referenced by the foreign keys a drop may remove; for an add, the table itself."""
    if use.added:
        rows = conn.execute(
            "SELECT c.confrelid::oid FROM (SELECT pg_catalog.to_regclass(%s) AS confrelid) c"
            f" WHERE c.confrelid IS NOT NULL AND {_MAY_LOCK}",
            (use.table,),
        ).fetchall()
        return [r[0] for r in rows]
    rows = conn.execute(
        "SELECT DISTINCT c.confrelid::oid FROM pg_catalog.pg_constraint c"
        f" WHERE c.contype = 'f' AND c.conrelid = pg_catalog.to_regclass(%s) AND c.confrelid <> c.conrelid AND {_MAY_LOCK}"
        " AND (%s::text IS NULL OR c.conname = %s)"
        " AND (%s::text IS NULL OR EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.conrelid"
        "      AND a.attname = %s AND a.attnum = ANY (c.conkey)))",
        (use.table, use.constraint, use.constraint, use.column, use.column),
    ).fetchall()
    return [r[0] for r in rows]


def _sorted(conn: psycopg.Connection, oids: list[int]) -> list[int]:
    """Topological order by foreign keys (transitively, through tables not in the list), ties
    in the order given."""
    refs: dict[int, set[int]] = {}
    for conrelid, confrelid in conn.execute(
        "SELECT conrelid::oid, confrelid::oid FROM pg_catalog.pg_constraint"
        " WHERE contype = 'f' AND conrelid <> confrelid"
    ):
        refs.setdefault(conrelid, set()).add(confrelid)

    def reach(start: int) -> set[int]:
        seen: set[int] = set()
        todo = [start]
        while todo:
            for nxt in refs.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reaches = {t: reach(t) for t in oids}
    # t waits for u when t references u and u does not reference t back. Tables on a cycle of
    # foreign keys (two referencing each other; a self-reference is no edge at all) have no
    # order the keys imply: they keep the order given, which is stable from run to run.
    before = {t: {u for u in oids if u != t and u in reaches[t] and t not in reaches[u]} for t in oids}
    out: list[int] = []
    left = list(oids)
    while left:
        ready = next((t for t in left if not (before[t] & set(left))), left[0])
        out.append(ready)
        left.remove(ready)
    return out


def order(conn: psycopg.Connection, tables: Sequence[str]) -> list[tuple[str, str]]:
    """The existing tables among `tables` as (schema, table), referenced tables first."""
    return _names(conn, _sorted(conn, _oids(conn, tables)))


def _names(conn: psycopg.Connection, oids: list[int]) -> list[tuple[str, str]]:
    out = []
    for oid in oids:
        row = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
            (oid,),
        ).fetchone()
        if row:
            out.append((row[0], row[1]))
    return out


def tables_to_lock(conn: psycopg.Connection, script: Script) -> list[tuple[str, str]]:
    """What the engine locks before a script's transactional statements, in the order it locks
    them: the `-- x402:lock` tables and the referenced tables of the foreign keys it adds or
    drops, referenced tables first."""
    return _ordered(conn, script.lock_tables, script.transactional)


def step_tables_to_lock(conn: psycopg.Connection, step: str) -> list[tuple[str, str]]:
    """What the engine locks before a no-transaction step that adds or drops a foreign key, in
    the same order, inside the step's own transaction. Empty for any other step (a concurrent
    index build among them, which cannot run in a transaction)."""
    return _ordered(conn, (), step)


def _ordered(conn: psycopg.Connection, named: Sequence[str], text: str) -> list[tuple[str, str]]:
    oids = _oids(conn, named)
    for stmt in sqlparse.statements(text):
        for use in sqlparse.foreign_key_uses(stmt):
            oids.extend(o for o in _referenced(conn, use) if o not in oids)
    return _names(conn, _sorted(conn, oids))


def lock(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> None:
    """Lock the tables in the order given (tables_to_lock's), inside the caller's transaction."""
    for schema, table in tables:
        conn.execute(sql.SQL("LOCK TABLE {} IN " + MODE + " MODE").format(sql.Identifier(schema, table)))
