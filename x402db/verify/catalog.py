"""Read-only catalog checks: migration 005's objects exist exactly as the bundle defines them.

They name 005 because they state the product's promises about the keys table in words an
operator can act on (no policy reaches PUBLIC, the key format is documented, a grant's reason);
that every migration left what its SQL makes is judged apart, derived from the SQL
(verify/expected), so a check missing here still fails there.

Verdicts must not depend on who connects or on their search_path: objects are compared as
catalog facts (oids, attnums, confdeltype, polcmd, role oids, tgtype bits), and the few texts
still rendered (policy and index predicates, CHECK lists, messages) are rendered under a fixed
search_path set for the read-only transaction, where every name outside pg_catalog is qualified.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.abc import Params, QueryNoTemplate

from .. import access
from ..access import INTEGRATIONS, MODELS, RESOURCES
from ..migrate import files as migrations
from ..migrate import ledger
from .checks import Checklist

RESOURCE_TYPES = {"external", "proxy", "prompt", "static", "prompt_template", "openrouter_instant"}
COLUMNS = {  # name: (type, not null, default)
    "user_id": ("uuid", True, None),
    "encrypted_api_key": ("text", True, None),
    "is_valid": ("boolean", True, "true"),
    "last_verified_at": ("timestamp with time zone", False, None),
    "is_enabled": ("boolean", True, "true"),
    "created_at": ("timestamp with time zone", True, "now()"),
    "updated_at": ("timestamp with time zone", True, "now()"),
}
OWN = "((selectauth.uid()asuid)=user_id)"
POLICIES = {  # name: (permissive, roles, cmd, using, with check), expressions without spaces
    "Users can manage their own OpenRouter integration": ("PERMISSIVE", ["authenticated"], "ALL", OWN, OWN),
    "Service role full access": ("PERMISSIVE", ["service_role"], "ALL", "true", "true"),
}
INDEXES = {  # name: (table, key columns, predicate)
    "idx_openrouter_integrations_user_enabled": (INTEGRATIONS, ("user_id", "is_enabled"), None),
    "idx_x402_resources_openrouter_model": (RESOURCES, ("openrouter_model_id",), "(openrouter_model_id IS NOT NULL)"),
}
TRIGGER = "update_openrouter_integration_updated_at"
COMMENTED = ["encrypted_api_key", "user_id", "is_valid", "last_verified_at", "is_enabled", "created_at", "updated_at"]


def _squash(expr: str | None) -> str | None:
    return None if expr is None else re.sub(r"\s+", "", expr).lower()


def _one(conn: psycopg.Connection, query: QueryNoTemplate, params: Params = ()) -> tuple[Any, ...] | None:
    return conn.execute(query, params).fetchone()


def _row(conn: psycopg.Connection, query: QueryNoTemplate, params: Params = ()) -> tuple[Any, ...]:
    """The row of a query that returns one here: a SELECT of expressions, or the catalog row of
    a table check_tables found."""
    row = _one(conn, query, params)
    assert row is not None
    return row


def _value(conn: psycopg.Connection, query: QueryNoTemplate, params: Params = ()) -> Any:
    return _row(conn, query, params)[0]


def _oid(conn: psycopg.Connection, name: str) -> int:
    return _value(conn, "SELECT %s::regclass::oid", (name,))


def check_tables(conn: psycopg.Connection, c: Checklist) -> bool:
    present = _row(
        conn,
        "SELECT to_regclass(%s), to_regclass(%s), to_regclass('auth.users'), to_regclass(%s)",
        (INTEGRATIONS, RESOURCES, MODELS),
    )
    names = [INTEGRATIONS, RESOURCES, "auth.users", MODELS]
    missing = [n for n, v in zip(names, present, strict=True) if v is None]
    return c.add("tables.present", not missing, f"missing: {', '.join(missing)}")


def check_columns(conn: psycopg.Connection, c: Checklist) -> None:
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
        (INTEGRATIONS,),
    ).fetchall()
    actual = {r[0]: (r[1], r[2], r[3]) for r in rows}
    problems = [f"missing column {n}" for n in COLUMNS if n not in actual]
    problems += [f"unexpected column {n}" for n in actual if n not in COLUMNS]
    for name, (typ, notnull, default) in COLUMNS.items():
        if name in actual:
            a_typ, a_nn, a_def = actual[name]
            if a_typ != typ:
                problems.append(f"{name} is {a_typ}, expected {typ}")
            if a_nn != notnull:
                problems.append(
                    f"{name} is {'NOT NULL' if a_nn else 'nullable'}, expected {'NOT NULL' if notnull else 'nullable'}"
                )
            if a_def != default:
                problems.append(f"{name} default is {a_def}, expected {default}")
    c.add("integrations.columns", not problems, "; ".join(problems))


@dataclass(frozen=True)
class Constraint:
    """A constraint as catalog facts: column names by attnum, the referenced table by oid."""

    name: str
    kind: str  # contype: p, f, c, u, n (PG 18 records NOT NULL too), x, t
    columns: tuple[str, ...]
    ref_oid: int
    ref_columns: tuple[str, ...]
    on_delete: str  # confdeltype: a no action, r restrict, c cascade, n set null, d set default
    validated: bool
    definition: str  # rendered under the catalog transaction's fixed search_path, for messages

    def shown(self) -> str:
        return self.definition + ("" if self.validated else " NOT VALID")


def _constraints(conn: psycopg.Connection, table: str) -> list[Constraint]:
    rows = conn.execute(
        """SELECT c.conname, c.contype,
                  ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
                  c.confrelid::oid::bigint,
                  ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
                  c.confdeltype, c.convalidated, pg_get_constraintdef(c.oid)
           FROM pg_constraint c WHERE c.conrelid = %s::regclass ORDER BY c.conname""",
        (table,),
    ).fetchall()
    return [Constraint(r[0], r[1], tuple(r[2]), r[3], tuple(r[4]), r[5], r[6], r[7]) for r in rows]


def _fk_check(
    c: Checklist, name: str, fks: list[Constraint], ref_oid: int, ref_cols: tuple[str, ...], on_delete: str, want: str
) -> None:
    ok = (
        len(fks) == 1
        and fks[0].ref_oid == ref_oid
        and fks[0].ref_columns == ref_cols
        and fks[0].on_delete == on_delete
        and fks[0].validated
    )
    c.add(name, ok, f"expected one validated FK {want}, found {[f.shown() for f in fks] or 'none'}")


def check_keys(conn: psycopg.Connection, c: Checklist) -> None:
    cons = _constraints(conn, INTEGRATIONS)
    pks = [k for k in cons if k.kind == "p"]
    c.add(
        "integrations.primary_key",
        [k.columns for k in pks] == [("user_id",)],
        f"primary key is {[k.definition for k in pks] or 'missing'}, expected (user_id)",
    )
    fks = [k for k in cons if k.kind == "f" and "user_id" in k.columns]
    _fk_check(
        c,
        "integrations.fk_auth_users_cascade",
        fks,
        _oid(conn, "auth.users"),
        ("id",),
        "c",
        "user_id -> auth.users(id) ON DELETE CASCADE",
    )


POLCMD = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def check_rls_and_policies(conn: psycopg.Connection, c: Checklist) -> None:
    enabled = _value(conn, "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (INTEGRATIONS,))
    c.add("integrations.rls_enabled", enabled, "row level security is DISABLED: every granted role sees every key")
    # Roles by oid (0 is PUBLIC); expressions rendered under the fixed search_path, so that
    # auth.uid() is always shown qualified whatever the caller's path.
    rows = conn.execute(
        """SELECT p.polname, CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                  ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END FROM unnest(p.polroles) r),
                  p.polcmd::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
           FROM pg_policy p WHERE p.polrelid = %s::regclass""",
        (INTEGRATIONS,),
    ).fetchall()
    actual = {r[0]: (r[1], sorted(r[2]), POLCMD.get(r[3], r[3]), _squash(r[4]), _squash(r[5])) for r in rows}
    for name, want in POLICIES.items():
        got = actual.get(name)
        c.add(
            f"policy.{name}",
            got == (want[0], sorted(want[1]), want[2], want[3], want[4]),
            "missing" if got is None else f"is {got}, expected {want}",
        )
    extra = [f"{n} ({v[0].lower()}, to {','.join(v[1])}, using {v[3]})" for n, v in actual.items() if n not in POLICIES]
    c.add("policy.no_extra", not extra, f"unexpected policies: {'; '.join(extra)}")
    public = [n for n, v in actual.items() if "public" in v[1]]
    c.add("policy.none_for_public", not public, f"policies that apply to PUBLIC (every role): {', '.join(public)}")


# pg_trigger.tgtype bits (src/include/catalog/pg_trigger.h)
TG_ROW, TG_BEFORE, TG_INSERT, TG_DELETE, TG_UPDATE, TG_TRUNCATE, TG_INSTEAD = 1, 2, 4, 8, 16, 32, 64


def check_trigger(conn: psycopg.Connection, c: Checklist) -> None:
    row = _one(
        conn,
        """SELECT t.tgenabled, t.tgtype, t.tgattr::int2[], p.prosrc, n.nspname, p.proname, p.proconfig
                  FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE t.tgrelid = %s::regclass AND t.tgname = %s AND NOT t.tgisinternal""",
        (INTEGRATIONS, TRIGGER),
    )
    if row is None:
        c.add("integrations.updated_at_trigger", False, f"trigger {TRIGGER} is missing")
        return
    enabled, tgtype, columns, body, schema, function, config = row
    problems = []
    if (
        tgtype & (TG_ROW | TG_BEFORE | TG_INSERT | TG_DELETE | TG_UPDATE | TG_TRUNCATE | TG_INSTEAD)
        != TG_ROW | TG_BEFORE | TG_UPDATE
        or columns
    ):
        problems.append(
            f"fires on tgtype={tgtype}{' for some columns only' if columns else ''}, expected BEFORE UPDATE FOR EACH ROW"
        )
    if (schema, function) != ("public", "update_openrouter_integration_updated_at"):
        problems.append(f"calls {schema}.{function}, expected public.update_openrouter_integration_updated_at")
    if enabled == "D":
        problems.append("trigger is disabled")
    if not re.search(r"NEW\.updated_at\s*:?=\s*now\(\)", body or "", re.I):
        problems.append("function does not set NEW.updated_at := now()")
    # 005 pins the function's search_path (pg_proc.proconfig), so a caller's objects cannot
    # shadow now(); Supabase's advisor reports its absence (function_search_path_mutable).
    paths = [s for s in config or [] if s.split("=", 1)[0].lower() == "search_path"]
    if paths != ['search_path=""']:
        problems.append(
            f"function has {'SET ' + paths[0] if paths else 'no SET search_path'}, expected SET search_path = '' "
            "(run up's CREATE OR REPLACE FUNCTION again, or ALTER FUNCTION ... SET search_path = '')"
        )
    c.add("integrations.updated_at_trigger", not problems, "; ".join(problems))


def check_indexes(conn: psycopg.Connection, c: Checklist) -> None:
    for name, (table, columns, predicate) in INDEXES.items():
        row = _one(
            conn,
            """SELECT i.indrelid::oid::bigint, am.amname::text, i.indisvalid, i.indexprs IS NULL,
                                   ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
                                   pg_get_expr(i.indpred, i.indrelid), pg_get_indexdef(i.indexrelid)
                            FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_namespace n ON n.oid = x.relnamespace
                            JOIN pg_am am ON am.oid = x.relam
                            WHERE n.nspname = 'public' AND x.relname = %s""",
            (name,),
        )
        if row is None:
            c.add(f"index.{name}", False, "missing")
            continue
        rel, am, valid, plain, cols, pred, definition = row
        ok = (
            rel == _oid(conn, table)
            and am == "btree"
            and plain
            and tuple(cols) == columns
            and _squash(pred) == _squash(predicate)
        )
        want = f"btree ({', '.join(columns)}){' WHERE ' + predicate if predicate else ''} on {table}"
        c.add(
            f"index.{name}",
            ok and valid,
            f"is {definition!r}{'' if valid else ' (INVALID: an interrupted concurrent build)'}, expected {want}",
        )


def check_comments(conn: psycopg.Connection, c: Checklist) -> None:
    rows: dict[str, str | None] = dict(
        conn.execute(
            """SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
            (INTEGRATIONS,),
        ).fetchall()
    )
    table_comment = _value(conn, "SELECT obj_description(%s::regclass, 'pg_class')", (INTEGRATIONS,))
    problems = [] if table_comment else ["table comment missing"]
    problems += [f"no comment on {col}" for col in COMMENTED if not rows.get(col)]
    if "iv_hex:ciphertext_hex" not in (rows.get("encrypted_api_key") or ""):
        problems.append("encrypted_api_key comment does not document iv_hex:ciphertext_hex")
    res: dict[str, str | None] = dict(
        conn.execute(
            """SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a
           WHERE a.attrelid = %s::regclass AND a.attname IN ('openrouter_model_id', 'openrouter_config')""",
            (RESOURCES,),
        ).fetchall()
    )
    if "modelId" not in (res.get("openrouter_config") or "") or "systemPrompt" not in (
        res.get("openrouter_config") or ""
    ):
        problems.append("openrouter_config comment does not document {modelId, systemPrompt, params}")
    if not res.get("openrouter_model_id"):
        problems.append("no comment on x402_resources.openrouter_model_id")
    c.add("comments", not problems, "; ".join(problems))


def check_resources(conn: psycopg.Connection, c: Checklist) -> None:
    cols: dict[str, str] = dict(
        conn.execute(
            """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = %s::regclass AND attname IN ('openrouter_model_id', 'openrouter_config') AND NOT attisdropped""",
            (RESOURCES,),
        ).fetchall()
    )
    c.add(
        "resources.openrouter_model_id",
        cols.get("openrouter_model_id") == "uuid",
        f"openrouter_model_id is {cols.get('openrouter_model_id') or 'missing'}, expected uuid",
    )
    c.add(
        "resources.openrouter_config",
        cols.get("openrouter_config") == "jsonb",
        f"openrouter_config is {cols.get('openrouter_config') or 'missing'}, expected jsonb",
    )
    cons = _constraints(conn, RESOURCES)
    fks = [k for k in cons if k.kind == "f" and "openrouter_model_id" in k.columns]
    _fk_check(
        c,
        "resources.fk_ai_models_set_null",
        fks,
        _oid(conn, MODELS),
        ("id",),
        "n",
        f"openrouter_model_id -> {MODELS}(id) ON DELETE SET NULL",
    )
    check = next((k for k in cons if k.name == "x402_resources_resource_type_check" and k.kind == "c"), None)
    if check is None:
        c.add("resources.resource_type_check", False, "constraint x402_resources_resource_type_check is missing")
        return
    allowed = set(re.findall(r"'([^']*)'", check.definition))
    problems = []
    if allowed != RESOURCE_TYPES or check.columns != ("resource_type",):
        missing, extra = RESOURCE_TYPES - allowed, allowed - RESOURCE_TYPES
        problems.append(
            f"allows {sorted(allowed)}"
            + (f", missing {sorted(missing)}" if missing else "")
            + (f", extra {sorted(extra)}" if extra else "")
            + ("" if check.columns == ("resource_type",) else f", on columns {list(check.columns)}")
        )
    if not check.validated:
        problems.append("constraint is NOT VALID: existing rows were never checked")
    other = [k.name for k in cons if k.kind == "c" and "resource_type" in k.columns and k is not check]
    if other:
        problems.append(f"other resource_type checks also apply: {', '.join(other)}")
    c.add("resources.resource_type_check", not problems, "; ".join(problems))


def check_grants(conn: psycopg.Connection, c: Checklist) -> None:
    every = access.table_privileges(conn)
    for g in access.TABLE_GRANTS:
        held = access.held_privileges(conn, g)
        want = access.resolved(g.privileges, every)
        c.add(
            f"grant.{g.role}",
            held == set(want),
            f"{g.role} holds {sorted(held) or 'nothing'} on {g.table}, expected {', '.join(want) or 'nothing'}",
        )
    # Effective privileges, so a grant to PUBLIC or through a membership is caught too.
    leaked = [p for p in every if _value(conn, "SELECT has_table_privilege('anon', %s, %s)", (INTEGRATIONS, p))]
    c.add("grant.anon_effective", not leaked, f"anon can {', '.join(leaked)} on {INTEGRATIONS}")
    for usage in access.SCHEMA_USAGE:
        ok = _value(conn, "SELECT has_schema_privilege(%s, %s, 'USAGE')", (usage.role, usage.schema))
        c.add(f"grant.usage_{usage.schema}_{usage.role}", ok, f"{usage.role} lacks USAGE on schema {usage.schema}")


def check_roles(conn: psycopg.Connection, c: Checklist) -> None:
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT rolname, rolcanlogin, rolbypassrls FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role', 'authenticator')"
        )
    }
    problems = [
        f"role {r} missing" for r in ("anon", "authenticated", "service_role", "authenticator") if r not in rows
    ]
    problems += [f"{r} can log in" for r in ("anon", "authenticated", "service_role") if r in rows and rows[r][0]]
    problems += [f"{r} bypasses RLS" for r in ("anon", "authenticated") if r in rows and rows[r][1]]
    if "service_role" in rows and not rows["service_role"][1]:
        problems.append("service_role lacks BYPASSRLS")
    if "authenticator" in rows:
        members = {
            r[0]
            for r in conn.execute(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'authenticator'"
            )
        }
        problems += [
            f"authenticator is not a member of {r}"
            for r in ("anon", "authenticated", "service_role")
            if r not in members
        ]
    c.add("platform.roles", not problems, "; ".join(problems))


def check_auth_uid(conn: psycopg.Connection, c: Checklist) -> None:
    """auth.uid() as PostgREST drives it; only set_config, so it is safe in a read-only run."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    cases = [
        ("claims", {"request.jwt.claims": f'{{"sub":"{a}","role":"authenticated"}}'}, a),
        ("legacy claim wins", {"request.jwt.claim.sub": b, "request.jwt.claims": f'{{"sub":"{a}"}}'}, b),
        ("empty legacy claim", {"request.jwt.claim.sub": "", "request.jwt.claims": f'{{"sub":"{a}"}}'}, a),
        ("no claims", {}, None),
    ]
    problems = []
    for label, settings, want in cases:
        try:
            with conn.transaction(force_rollback=True):
                for k in ("request.jwt.claim.sub", "request.jwt.claims"):
                    conn.execute("SELECT set_config(%s, %s, true)", (k, settings.get(k, "")))
                got = _value(conn, "SELECT auth.uid()::text")
        except psycopg.Error as exc:
            got = f"error: {exc.diag.message_primary}"
        if got != want:
            problems.append(f"{label}: returned {got}, expected {want}")
    c.add("platform.auth_uid", not problems, "; ".join(problems))


def check_ledger(conn: psycopg.Connection, c: Checklist) -> None:
    # 005 is the product's migration: the behaviour checks that follow need it applied.
    entry = ledger.entries(conn).get("005")
    shipped = migrations.find(migrations.load(), "005")
    if entry is None:
        c.add("ledger.005", False, "migration 005 is not recorded as applied in the ledger")
    elif not shipped.matches(entry.checksum):
        c.add(
            "ledger.005",
            False,
            f"ledger checksum {entry.checksum[:12]} does not match the shipped file {shipped.checksum[:12]} (drift)",
        )
    else:
        # A half-finished run commits its ledger row with the work it did: say which half.
        hint = ledger.HINTS.get(entry.state, f"unknown ledger state {entry.state!r}")
        c.add("ledger.005", entry.state == ledger.State.APPLIED, f"migration 005 is {entry.state}: {hint}")


def run(conn: psycopg.Connection, c: Checklist) -> None:
    """Run inside a (read-only) transaction: the fixed search_path ends with it."""
    conn.execute("SET LOCAL search_path = pg_catalog")
    if not check_tables(conn, c):
        return
    for check in (
        check_columns,
        check_keys,
        check_rls_and_policies,
        check_trigger,
        check_indexes,
        check_comments,
        check_resources,
        check_grants,
        check_roles,
        check_auth_uid,
        check_ledger,
    ):
        check(conn, c)
