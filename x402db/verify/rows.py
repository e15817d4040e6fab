"""Rows in tables the bundle does not own, for the rolled-back behaviour checks.

A real project's ai_models, x402_resources and auth.users have columns 005 never defined: NOT
NULL without defaults, ids without defaults, enums, arrays, domains, foreign keys, CHECKs. So
nothing here names a column beyond the ones the caller fixes. The catalog says which columns
need a value; the server converts every value to the column's own type
(jsonb_populate_record), so enums, arrays and domains need no client-side type knowledge.

Each way of getting a row runs in its own savepoint, best first:
1. a fresh row: required columns filled by type, foreign keys from an existing referenced row;
2. a clone of an existing row: its values, with fresh keys and the caller's fixed values;
3. (opt-in) an existing row updated in place: nothing is inserted at all.
The caller's transaction is always rolled back, so none of it is ever committed; the one trace
left is a sequence value consumed by a column's default (sequences are not transactional). A
row that production holds locked is skipped (SKIP LOCKED), never waited for.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

AUTH_USERS = "auth.users"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type, for messages only
    category: str  # pg_type.typcategory of the (domain's base) type
    typname: str  # of the (domain's base) type
    enum_label: str | None
    max_length: int | None
    needs_value: bool  # NOT NULL (column or domain) and no default, not generated, not identity
    writable: bool  # not generated, not GENERATED ALWAYS AS IDENTITY
    has_default: bool


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    to_auth_users: bool


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, Column]
    foreign_keys: list[ForeignKey]
    unique_sets: list[tuple[str, ...]]  # primary key, unique constraints and unique indexes

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def user_links(self) -> list[str]:
        """Single columns that reference auth.users(id): how this table ties a row to a user."""
        return [fk.columns[0] for fk in self.foreign_keys if fk.to_auth_users and len(fk.columns) == 1]


class CannotMakeRow(Exception):
    """No way to get a row; the message says why (never holds a value from the table)."""

    def __init__(self, reason: str, defect: psycopg.Error | None = None) -> None:
        super().__init__(reason)
        self.defect = defect  # set when a constraint the bundle owns refused the row


def describe(conn: psycopg.Connection, qualified: str) -> Table:
    schema, name = qualified.split(".", 1)
    rows = conn.execute(
        """SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                  bt.typcategory::text, bt.typname::text,
                  (SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = bt.oid ORDER BY e.enumsortorder LIMIT 1),
                  CASE WHEN bt.typname IN ('varchar', 'bpchar') AND coalesce(nullif(t.typtypmod, -1), a.atttypmod) > 4
                       THEN coalesce(nullif(t.typtypmod, -1), a.atttypmod) - 4 END,
                  (a.attnotnull OR t.typnotnull), (a.atthasdef OR t.typdefault IS NOT NULL),
                  a.attidentity::text, a.attgenerated::text
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (qualified,),
    ).fetchall()
    columns = {}
    for col, typ, category, typname, label, max_length, notnull, has_default, identity, generated in rows:
        writable = generated == "" and identity != "a"
        needs = notnull and not has_default and identity == "" and generated == ""
        columns[col] = Column(
            col, typ, category, typname, label, max_length, needs, writable, has_default or identity != ""
        )
    fks = [
        ForeignKey(tuple(r[0]), r[1], r[2], tuple(r[3]), r[4])
        for r in conn.execute(
            """SELECT ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                  rn.nspname::text, r.relname::text,
                  ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
                  c.confrelid = to_regclass('auth.users') AND c.confkey = ARRAY[(SELECT attnum FROM pg_attribute
                        WHERE attrelid = c.confrelid AND attname = 'id')]
           FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
           WHERE c.conrelid = %s::regclass AND c.contype = 'f'""",
            (qualified,),
        )
    ]
    unique = [
        tuple(r[0])
        for r in conn.execute(
            """SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) k(n)
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n)
           FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique""",
            (qualified,),
        )
    ]
    return Table(schema, name, columns, fks, unique)


def fresh_value(col: Column) -> Any:
    """A JSON value the column's input function accepts; None when smoke knows no such value.
    Random where a collision could matter (unique columns)."""
    c = col.category
    if col.enum_label is not None:
        return col.enum_label
    if col.typname == "uuid":
        return str(uuid.uuid4())
    if col.typname in ("json", "jsonb"):
        return {}
    if c == "S":
        text = f"smoke-{secrets.token_hex(8)}"
        return text[: col.max_length] if col.max_length else text
    if c == "N":
        return 1 + secrets.randbelow(9)  # fits any numeric typmod with a digit before the point; "> 0"
    if c == "B":
        return True
    if c == "D":
        return "now"  # date, time, timestamp and timestamptz all read it
    if c == "T":
        return "1 minute"
    if c == "A":
        return []
    if c == "I":
        return "127.0.0.1"
    if c == "R":
        return "empty"
    if col.typname == "bytea":
        return "\\x00"
    return None


class RowMaker:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._tables: dict[str, Table] = {}

    def table(self, qualified: str) -> Table:
        if qualified not in self._tables:
            self._tables[qualified] = describe(self.conn, qualified)
        return self._tables[qualified]

    def make(
        self,
        qualified: str,
        fixed: dict[str, Any],
        *,
        user: str | None = None,
        optional: dict[str, Any] | None = None,
        returning: str | None = None,
        clone: bool = True,
        update_existing: bool = False,
        owned: tuple[str, ...] = (),
    ) -> tuple[Any, str]:
        """A row with the fixed values (and `user` in every column that references auth.users(id));
        returns (the `returning` column's value, how the row was obtained).

        `owned` names constraints the bundle defines: if one of them refuses the row, that is a
        defect to report, so CannotMakeRow carries it instead of trying further ways."""
        t = self.table(qualified)
        missing = [c for c in list(fixed) + ([returning] if returning else []) if c not in t.columns]
        if missing:
            raise CannotMakeRow(f"{qualified} has no column {', '.join(missing)}")
        fixed = dict(fixed) | {k: v for k, v in (optional or {}).items() if k in t.columns}
        if user is not None:
            fixed |= {col: user for col in t.user_links() if col not in fixed}
        reasons = []
        ways = [("a fresh row", self._fresh_values)] + (
            [("a copy of an existing row", self._cloned_values)] if clone else []
        )
        for how, values in ways:
            try:
                row = values(t, fixed)
            except CannotMakeRow as exc:
                reasons.append(f"{how}: {exc}")
                continue
            try:
                with self.conn.transaction():
                    return self._insert(t, row, returning), how
            except psycopg.Error as exc:
                if exc.diag.constraint_name in owned:
                    raise CannotMakeRow(_error(exc), defect=exc) from None
                reasons.append(f"{how}: {_error(exc)}")
        if update_existing:
            try:
                with self.conn.transaction():
                    return self._update_one(t, fixed, returning), "an existing row, updated"
            except CannotMakeRow as exc:
                reasons.append(f"an existing row: {exc}")
            except psycopg.Error as exc:
                if exc.diag.constraint_name in owned:
                    raise CannotMakeRow(_error(exc), defect=exc) from None
                reasons.append(f"an existing row: {_error(exc)}")
        raise CannotMakeRow(f"no row could be made in {qualified} ({'; '.join(reasons)})")

    def _fresh_values(self, t: Table, fixed: dict[str, Any]) -> dict[str, Any]:
        row = dict(fixed)
        for fk in t.foreign_keys:
            cols = [c for c in fk.columns if c not in row]
            if not any(t.columns[c].needs_value for c in cols):
                continue
            ref = self._referenced_row(fk)
            row |= {c: ref[r] for c, r in zip(fk.columns, fk.ref_columns, strict=True) if c in cols}
        for col in t.columns.values():
            if col.needs_value and col.name not in row:
                value = fresh_value(col)
                if value is None:
                    raise CannotMakeRow(f"no generic value for column {col.name} of type {col.type}")
                row[col.name] = value
        return row

    def _cloned_values(self, t: Table, fixed: dict[str, Any]) -> dict[str, Any]:
        found = self.conn.execute(sql.SQL("SELECT to_jsonb(r) FROM {} r LIMIT 1").format(t.ident)).fetchone()
        if found is None:
            raise CannotMakeRow(f"{t.qualified} holds no row to copy")
        row = {k: v for k, v in found[0].items() if k in t.columns and t.columns[k].writable}
        for key in t.unique_sets:
            if any(c in fixed for c in key):
                continue  # a fixed value (e.g. our own user) already makes the key new
            for c in key:
                if t.columns[c].has_default:
                    row.pop(c, None)
                elif (value := fresh_value(t.columns[c])) is not None:
                    row[c] = value
        return row | fixed

    def _referenced_row(self, fk: ForeignKey) -> dict[str, Any]:
        found = self.conn.execute(
            sql.SQL("SELECT to_jsonb(r) FROM {} r WHERE {} LIMIT 1").format(
                sql.Identifier(fk.ref_schema, fk.ref_table),
                sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in fk.ref_columns),
            )
        ).fetchone()
        if found is None:
            raise CannotMakeRow(f"{fk.ref_schema}.{fk.ref_table}, referenced by {', '.join(fk.columns)}, holds no row")
        return found[0]

    def _insert(self, t: Table, row: dict[str, Any], returning: str | None) -> Any:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in row)
        query = sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::{t}, %s::jsonb)"
        ).format(t=t.ident, cols=cols)
        if returning:
            query += sql.SQL(" RETURNING {}").format(sql.Identifier(returning))
        cur = self.conn.execute(query, (json.dumps(row, default=str),))
        return _returned(cur, t, returning)

    def _update_one(self, t: Table, fixed: dict[str, Any], returning: str | None) -> Any:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in fixed)
        query = sql.SQL(
            "UPDATE {t} SET ({cols}) = (SELECT {cols} FROM jsonb_populate_record(NULL::{t}, %s::jsonb))"
            " WHERE ctid = (SELECT ctid FROM {t} LIMIT 1 FOR UPDATE SKIP LOCKED)"
        ).format(t=t.ident, cols=cols)
        if returning:
            query += sql.SQL(" RETURNING {}").format(sql.Identifier(returning))
        cur = self.conn.execute(query, (json.dumps(fixed, default=str),))
        if cur.rowcount != 1:
            raise CannotMakeRow(f"{t.qualified} holds no row to update")
        return _returned(cur, t, returning)


def _returned(cur: psycopg.Cursor, t: Table, returning: str | None) -> Any:
    """The RETURNING value of a one-row write. No row (a BEFORE trigger can skip it) raises
    TypeError, which the behaviour checks report as their section stopping early."""
    if not returning:
        return None
    row = cur.fetchone()
    if row is None:
        raise TypeError(f"the write to {t.qualified} returned no row")
    return row[0]


def _error(exc: psycopg.Error) -> str:
    """The server's one-line message; names columns and constraints, never a row's values
    (the DETAIL line, which can, is left out)."""
    return exc.diag.message_primary or type(exc).__name__
