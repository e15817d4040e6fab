"""Acting as an API role exactly as PostgREST does, inside the smoke's rolled-back transaction.

PostgREST runs each request in a transaction that starts with set_config('role', ..., true),
set_config('request.jwt.claims', <the JWT's claims>, true) and set_config('search_path',
<exposed schemas>, true); RLS and auth.uid() read nothing else. The legacy
request.jwt.claim.sub is never set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq
from psycopg.abc import Params, QueryNoTemplate


@contextmanager
def acting_as(
    conn: psycopg.Connection, role: str, sub: str | None = None, search_path: str | None = None
) -> Iterator[None]:
    claims = {"role": role} | ({"sub": sub} if sub else {})
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    saved = row[0]
    if search_path is not None:
        conn.execute("SELECT set_config('search_path', %s, true)", (search_path,))
    conn.execute(
        "SELECT set_config('request.jwt.claims', %s, true), set_config('role', %s, true)", (json.dumps(claims), role)
    )
    try:
        yield
    finally:
        # After an error the enclosing savepoint's rollback restores all three settings; a
        # statement here would only hide that error behind "transaction is aborted".
        if conn.info.transaction_status != pq.TransactionStatus.INERROR:
            conn.execute("RESET ROLE")
            conn.execute(
                "SELECT set_config('request.jwt.claims', '', true), set_config('search_path', %s, true)", (saved,)
            )


def attempt(conn: psycopg.Connection, query: QueryNoTemplate, params: Params = ()) -> tuple[int | None, str | None]:
    """(rows affected, None) or (None, SQLSTATE) for a statement that may be refused."""
    try:
        with conn.transaction():
            cur = conn.execute(query, params)
            return cur.rowcount, None
    except psycopg.Error as exc:
        return None, exc.sqlstate
