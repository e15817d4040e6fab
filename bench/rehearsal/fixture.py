"""The database the rehearsal runs on: built the way Supabase builds one (the suite's own
fixtures), then grown to the requested volume.

The application's tables have columns the bundle never defined, so rows are cloned from a
template row the fixture holds: the catalog says which columns are keys (fresh values) and which
reference auth.users (a chosen user); every other value is the template's, converted by the
server (jsonb_populate_record), so no type is known here."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from tests.utils.db import new_supabase_database
from x402db.access import MODELS, RESOURCES
from x402db.local.server import LocalServer
from x402db.verify.rows import Table, describe

USERS = "auth.users"


@dataclass(frozen=True)
class Volume:
    resources: int
    models: int
    users: int


@dataclass
class Cloner:
    """INSERT statements that copy a template row with fresh keys."""

    table: Table
    template: dict[str, Any]
    tag: str  # keeps text keys unique across runs of the same statement

    @classmethod
    def of(cls, conn: psycopg.Connection, qualified: str) -> Cloner:
        table = describe(conn, qualified)
        row = conn.execute(sql.SQL("SELECT row_to_json(t)::jsonb FROM {} t LIMIT 1").format(table.ident)).fetchone()
        if row is None:
            raise SystemExit(f"{qualified} has no row to clone; the fixture should have given it some")
        return cls(table, row[0], secrets.token_hex(3))

    def _keys(self) -> set[str]:
        return {c for unique in self.table.unique_sets for c in unique}

    def _expr(self, col: str, users: sql.Composable, serial: sql.Composable) -> sql.Composable:
        c = self.table.columns[col]
        ident = sql.Identifier(col)
        if col in self.table.user_links():
            return users
        if col in self._keys():
            if c.typname == "uuid":
                return sql.SQL("gen_random_uuid()")
            if c.category == "S":
                return sql.SQL("t.{} || {} || {}").format(ident, sql.Literal(f"-{self.tag}-"), serial)
        return sql.SQL("t.{}").format(ident)

    def insert(
        self,
        users: sql.Composable,
        serial: sql.Composable,
        source: sql.Composable,
        extra: dict[str, sql.Composable],
        template: sql.Composable | None = None,
    ) -> sql.Composed:
        """INSERT ... SELECT over `source` (a FROM item giving `serial`), with `extra` columns set;
        the template is inlined unless given (as a placeholder, for a statement run with params)."""
        cols = [c for c, col in self.table.columns.items() if col.writable and c in self.template and c not in extra]
        exprs = [self._expr(c, users, serial) for c in cols] + list(extra.values())
        return sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT {exprs} FROM jsonb_populate_record(NULL::{t}, {tpl}) t, {source} RETURNING id"
        ).format(
            t=self.table.ident,
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in [*cols, *extra]),
            exprs=sql.SQL(", ").join(exprs),
            tpl=template if template is not None else sql.Literal(json.dumps(self.template)),
            source=source,
        )

    def plain_column(self) -> str:
        """A column that is no key, no user link and no CHECKed type: what an update may rewrite."""
        skip = self._keys() | set(self.table.user_links()) | {"id", "resource_type"}
        for name, col in self.table.columns.items():
            if col.writable and name not in skip and name in self.template:
                return name
        raise SystemExit(f"{self.table.qualified} has no column an update could rewrite")


def build(server: LocalServer, volume: Volume, shape: str = "shape_a") -> str:
    """A Supabase-built database before 005, grown to `volume`; the DSN connects as postgres."""
    dsn = new_supabase_database(server, shape)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        missing = volume.users - _count(conn, USERS)
        if missing > 0:
            conn.execute(
                "INSERT INTO auth.users (id, aud, role, email, created_at) "
                "SELECT gen_random_uuid(), 'authenticated', 'authenticated', 'rehearsal-' || g || '@example.invalid', now() "
                "FROM generate_series(1, %s) g",
                (missing,),
            )
        user_ids = [r[0] for r in conn.execute("SELECT id FROM auth.users ORDER BY id")]
        users = sql.SQL("({}::uuid[])[1 + g % {}]").format(sql.Literal(user_ids), sql.Literal(len(user_ids)))
        for table, target in ((MODELS, volume.models), (RESOURCES, volume.resources)):
            cloner = Cloner.of(conn, table)
            left = target - _count(conn, table)
            while left > 0:  # in chunks, so that a 1M build shows progress and holds no huge transaction
                n = min(left, 200_000)
                series = sql.SQL("generate_series({}, {}) g").format(sql.Literal(left - n + 1), sql.Literal(left))
                conn.execute(cloner.insert(users, sql.SQL("g"), series, {}))
                left -= n
        for table in (USERS, MODELS, RESOURCES):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(*table.split("."))))
    return dsn


def _count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))).fetchone()
    assert row is not None
    return int(row[0])
