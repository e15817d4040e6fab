"""The backend's half of the contract: the statements its supabase-js calls become, replayed as
`service_role` the way PostgREST runs them, inside the smoke's rolled-back transaction.

The x402-jobs backend (service-role key, so PostgREST as service_role):
- GET config / execution: .select("is_enabled, encrypted_api_key").eq("user_id", id).single()
- PUT with a key:  .upsert({user_id, encrypted_api_key[, is_enabled]}, {onConflict: "user_id"})
- PUT toggle only: .upsert({user_id, is_enabled}, {onConflict: "user_id"}) -- a known hazard
- DELETE: count x402_resources of the user with type openrouter_instant, then .delete().eq(...)

PostgREST turns an upsert into INSERT ... SELECT ... FROM json_populate_recordset(...) ON
CONFLICT (user_id) DO UPDATE SET <each payload column> = EXCLUDED.<column>; only the payload's
columns are named. PostgreSQL checks NOT NULL on the proposed row before it looks for the
conflict, so the toggle-only upsert is refused by encrypted_api_key NOT NULL even when the
row exists. 005 keeps that NOT NULL (phase 11 requires it); the check reports `warn` with the
backend's fix, and reports honestly whatever else it finds.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Params, QueryNoTemplate

from .. import access
from .context import SmokeRun
from .postgrest import acting_as
from .rows import CannotMakeRow

# The tables as identifiers, for sql.SQL.format.
_INTEGRATIONS = sql.Identifier(*access.INTEGRATIONS.split("."))
_RESOURCES = sql.Identifier(*access.RESOURCES.split("."))
# PostgREST's search_path on Supabase: the exposed schema, then db-extra-search-path.
POSTGREST_SEARCH_PATH = "public, extensions"
CHECKS = (
    "contract.upsert_with_key",
    "contract.select_by_user",
    "contract.toggle_upsert",
    "contract.toggle_by_update",
    "contract.affected_resources_count",
    "contract.delete",
)
TOGGLE_FIX = (
    "the backend's toggle-only upsert ({user_id, is_enabled}, onConflict user_id) is refused: PostgreSQL checks "
    "encrypted_api_key NOT NULL on the proposed row before ON CONFLICT; backend fix: when no key is sent, use "
    '.update({is_enabled}).eq("user_id", userId)'
)


def upsert(payload: dict[str, Any]) -> tuple[sql.Composed, tuple]:
    """The statement PostgREST runs for .upsert(payload, {onConflict: "user_id"})."""
    cols = [sql.Identifier(k) for k in payload]
    query = sql.SQL(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{t}, %s::json) _"
        " ON CONFLICT (user_id) DO UPDATE SET {sets}"
    ).format(
        t=_INTEGRATIONS,
        cols=sql.SQL(", ").join(cols),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=c) for c in cols),
    )
    return query, (json.dumps([payload]),)


def count_query(link: str, user: str) -> tuple[sql.Composed, tuple]:
    """The statement PostgREST runs for select("*", {count: "exact", head: true}).eq(link, user)
    .eq("resource_type", "openrouter_instant") (Statements.hs mainRead with db-max-rows set, as
    on Supabase): a HEAD still builds the read of x402_resources.*, so it needs SELECT on every
    column, not only on the filtered ones; the count comes from a separate SELECT 1."""
    where = sql.SQL("{r}.{link} = %s AND {r}.resource_type = %s").format(r=_RESOURCES, link=sql.Identifier(link))
    query = sql.SQL(
        "WITH pgrst_source AS (SELECT {r}.* FROM {r} WHERE {w}), pgrst_source_count AS (SELECT 1 FROM {r} WHERE {w})"
        " SELECT (SELECT pg_catalog.count(*) FROM pgrst_source_count) AS total_result_set,"
        " pg_catalog.count(_postgrest_t) AS page_total FROM (SELECT * FROM pgrst_source) _postgrest_t"
    ).format(r=_RESOURCES, w=where)
    return query, (user, "openrouter_instant", user, "openrouter_instant")


def _run(conn: psycopg.Connection, query: QueryNoTemplate, params: Params = ()) -> tuple[psycopg.Cursor | None, str]:
    """(cursor, "") or (None, "SQLSTATE: message") for a statement that may be refused."""
    try:
        with conn.transaction():
            return conn.execute(query, params), ""
    except psycopg.Error as exc:
        return None, f"{exc.sqlstate}: {exc.diag.message_primary}"


def _row(conn: psycopg.Connection, user: str) -> list[tuple[Any, ...]]:
    """The user's row as the connecting role sees it (not as the role under test)."""
    return conn.execute(
        sql.SQL("SELECT encrypted_api_key, is_enabled FROM {} WHERE user_id = %s").format(_INTEGRATIONS), (user,)
    ).fetchall()


def _user_link(ctx: SmokeRun) -> tuple[str | None, str]:
    links = ctx.rows.table(access.RESOURCES).user_links()
    if len(links) == 1:
        return links[0], ""
    if "user_id" in links:
        return "user_id", ""
    if not links:
        return (
            None,
            "x402_resources has no column referencing auth.users(id), so the backend's count by user cannot be replayed",
        )
    return (
        None,
        f"x402_resources references auth.users(id) through several columns ({', '.join(links)}); which one the backend counts by is unknown",
    )


def run(ctx: SmokeRun) -> None:
    conn, c, user = ctx.conn, ctx.checks, ctx.users["d"]
    k1, k2 = f"smoke-{uuid.uuid4().hex}", f"smoke-{uuid.uuid4().hex}"
    link, link_reason = _user_link(ctx)
    resource_reason = ""
    if link:
        try:
            ctx.make_resource(user, None)
        except CannotMakeRow as exc:
            resource_reason = str(exc)

    with acting_as(conn, "service_role", search_path=POSTGREST_SEARCH_PATH):
        # PUT with a key: the first call inserts, the second updates through ON CONFLICT.
        first = _run(conn, *upsert({"user_id": user, "encrypted_api_key": k1, "is_enabled": True}))[1]
        after_first = _row(conn, user)
        second = _run(conn, *upsert({"user_id": user, "encrypted_api_key": k2}))[1]
        after_second = _row(conn, user)
    problems = (
        [f"insert: {first}"]
        if first
        else ([] if after_first == [(k1, True)] else ["insert: the row was not stored as sent"])
    )
    problems += (
        [f"update through ON CONFLICT: {second}"]
        if second
        else (
            []
            if after_second == [(k2, True)]
            else ["update through ON CONFLICT: the row does not hold the new key with is_enabled kept"]
        )
    )
    c.add("contract.upsert_with_key", not problems, "; ".join(problems))
    if not after_second:  # so that the other replays still have a row to act on
        conn.execute(
            sql.SQL("INSERT INTO {} (user_id, encrypted_api_key) VALUES (%s, %s)").format(_INTEGRATIONS), (user, k2)
        )
    stored = _row(conn, user)

    with acting_as(conn, "service_role", search_path=POSTGREST_SEARCH_PATH):
        cur, err = _run(
            conn,
            sql.SQL("SELECT is_enabled, encrypted_api_key FROM {} WHERE user_id = %s").format(_INTEGRATIONS),
            (user,),
        )
        seen = [(key, enabled) for enabled, key in cur.fetchall()] if cur else []
    c.add(
        "contract.select_by_user",
        cur is not None and seen == stored and len(stored) == 1,
        err
        or f"the select returned {len(seen)} rows{'' if len(seen) != 1 else ' that differ from the stored row'}, .single() needs exactly the stored one",
    )

    with acting_as(conn, "service_role", search_path=POSTGREST_SEARCH_PATH):
        cur, err = _run(conn, *upsert({"user_id": user, "is_enabled": False}))
    after = _row(conn, user)
    if err.startswith("23502") and "encrypted_api_key" in err and after == stored:
        c.warn("contract.toggle_upsert", TOGGLE_FIX)
    elif err:
        c.add(
            "contract.toggle_upsert",
            False,
            f"the toggle-only upsert failed otherwise than the known NOT NULL hazard: {err}",
        )
    else:
        kept = len(after) == 1 and after[0][0] == stored[0][0] and after[0][1] is False
        c.add(
            "contract.toggle_upsert",
            kept,
            "the toggle-only upsert was accepted but did not keep the key while switching is_enabled off",
            "the toggle-only upsert was accepted (encrypted_api_key took no NULL in the proposed row); the key was kept",
        )

    with acting_as(conn, "service_role", search_path=POSTGREST_SEARCH_PATH):
        # The fix: PostgREST's PATCH for .update({is_enabled}).eq("user_id", userId).
        cur, err = _run(
            conn, sql.SQL("UPDATE {} SET is_enabled = %s WHERE user_id = %s").format(_INTEGRATIONS), (False, user)
        )
    after = _row(conn, user)
    updated = cur.rowcount if cur else None
    c.add(
        "contract.toggle_by_update",
        not err and updated == 1 and after == [(stored[0][0], False)],
        err
        or f"the update affected {updated} rows; the row {'kept' if after and after[0][0] == stored[0][0] else 'lost'} its key",
    )

    if link is None:
        c.skip("contract.affected_resources_count", link_reason)
    else:
        with acting_as(conn, "service_role", search_path=POSTGREST_SEARCH_PATH):
            cur, err = _run(conn, *count_query(link, user))
            row = cur.fetchone() if cur else None  # an aggregate: one row when it ran
            count = row[0] if row else None
        if err or not resource_reason:
            c.add(
                "contract.affected_resources_count",
                not err and count == 1,
                err
                or f"counted {count} openrouter_instant resources of the user by {link}, expected the 1 made for the check",
            )
        else:
            c.skip(
                "contract.affected_resources_count",
                f"the count by {link} ran, but no resource could be made to count: {resource_reason}",
            )

    with acting_as(conn, "service_role", search_path=POSTGREST_SEARCH_PATH):
        cur, err = _run(conn, sql.SQL("DELETE FROM {} WHERE user_id = %s").format(_INTEGRATIONS), (user,))
    left = _row(conn, user)
    deleted = cur.rowcount if cur else None
    c.add(
        "contract.delete",
        not err and deleted == 1 and not left,
        err or f"the delete affected {deleted} rows and {len(left)} remain",
    )
