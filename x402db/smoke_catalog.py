"""Read-only catalog checks: migration 005's objects exist exactly as the bundle defines them."""
from __future__ import annotations

import re
import uuid

import psycopg

from . import access, ledger, migrations
from .checks import Checklist

T = "public.user_openrouter_integrations"
R = "public.x402_resources"
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
INDEXES = {
    "idx_openrouter_integrations_user_enabled": (T, "USING btree (user_id, is_enabled)"),
    "idx_x402_resources_openrouter_model": (R, "USING btree (openrouter_model_id) WHERE (openrouter_model_id IS NOT NULL)"),
}
TRIGGER = "update_openrouter_integration_updated_at"
COMMENTED = ["encrypted_api_key", "user_id", "is_valid", "last_verified_at", "is_enabled", "created_at", "updated_at"]


def _squash(expr: str | None) -> str | None:
    return None if expr is None else re.sub(r"\s+", "", expr).lower()


def _one(conn, query, params=()):
    return conn.execute(query, params).fetchone()


def check_tables(conn: psycopg.Connection, c: Checklist) -> bool:
    present = _one(conn, "SELECT to_regclass(%s), to_regclass(%s), to_regclass('auth.users'), to_regclass('public.ai_models')", (T, R))
    names = [T, R, "auth.users", "public.ai_models"]
    missing = [n for n, v in zip(names, present) if v is None]
    return c.add("tables.present", not missing, f"missing: {', '.join(missing)}")


def check_columns(conn, c: Checklist) -> None:
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""", (T,)).fetchall()
    actual = {r[0]: (r[1], r[2], r[3]) for r in rows}
    problems = [f"missing column {n}" for n in COLUMNS if n not in actual]
    problems += [f"unexpected column {n}" for n in actual if n not in COLUMNS]
    for name, (typ, notnull, default) in COLUMNS.items():
        if name in actual:
            a_typ, a_nn, a_def = actual[name]
            if a_typ != typ:
                problems.append(f"{name} is {a_typ}, expected {typ}")
            if a_nn != notnull:
                problems.append(f"{name} is {'NOT NULL' if a_nn else 'nullable'}, expected {'NOT NULL' if notnull else 'nullable'}")
            if a_def != default:
                problems.append(f"{name} default is {a_def}, expected {default}")
    c.add("integrations.columns", not problems, "; ".join(problems))


def _constraints(conn, table: str) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid), convalidated, confdeltype FROM pg_constraint WHERE conrelid = %s::regclass",
        (table,)).fetchall()
    return {r[0]: r[1:] for r in rows}


def check_keys(conn, c: Checklist) -> None:
    cons = _constraints(conn, T)
    pks = [v for v in cons.values() if v[0] == "p"]
    c.add("integrations.primary_key", [p[1] for p in pks] == ["PRIMARY KEY (user_id)"], f"primary key is {[p[1] for p in pks] or 'missing'}, expected (user_id)")
    fks = [v for v in cons.values() if v[0] == "f" and "(user_id)" in v[1]]
    ok = len(fks) == 1 and "REFERENCES auth.users(id)" in fks[0][1] and fks[0][3] == "c" and fks[0][2]
    c.add("integrations.fk_auth_users_cascade", ok,
          f"expected one validated FK user_id -> auth.users(id) ON DELETE CASCADE, found {[f[1] + ('' if f[2] else ' NOT VALID') for f in fks] or 'none'}")


def check_rls_and_policies(conn, c: Checklist) -> None:
    enabled = _one(conn, "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (T,))[0]
    c.add("integrations.rls_enabled", enabled, "row level security is DISABLED: every granted role sees every key")
    rows = conn.execute(
        "SELECT policyname, permissive, roles::text[], cmd, qual, with_check FROM pg_policies WHERE schemaname = 'public' AND tablename = 'user_openrouter_integrations'").fetchall()
    actual = {r[0]: (r[1], sorted(r[2]), r[3], _squash(r[4]), _squash(r[5])) for r in rows}
    for name, want in POLICIES.items():
        got = actual.get(name)
        c.add(f"policy.{name}", got == (want[0], sorted(want[1]), want[2], want[3], want[4]),
              "missing" if got is None else f"is {got}, expected {want}")
    extra = [f"{n} ({v[0].lower()}, to {','.join(v[1])}, using {v[3]})" for n, v in actual.items() if n not in POLICIES]
    c.add("policy.no_extra", not extra, f"unexpected policies: {'; '.join(extra)}")
    public = [n for n, v in actual.items() if "public" in v[1]]
    c.add("policy.none_for_public", not public, f"policies that apply to PUBLIC (every role): {', '.join(public)}")


def check_trigger(conn, c: Checklist) -> None:
    row = _one(conn,
               """SELECT t.tgenabled, pg_get_triggerdef(t.oid), p.prosrc, n.nspname || '.' || p.proname
                  FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE t.tgrelid = %s::regclass AND t.tgname = %s AND NOT t.tgisinternal""", (T, TRIGGER))
    if row is None:
        c.add("integrations.updated_at_trigger", False, f"trigger {TRIGGER} is missing")
        return
    enabled, definition, body, function = row
    want = f"BEFORE UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION "
    problems = [] if want in definition else [f"definition is {definition!r}, expected {want}..."]
    if function != "public.update_openrouter_integration_updated_at":
        problems.append(f"calls {function}, expected public.update_openrouter_integration_updated_at")
    if enabled == "D":
        problems.append("trigger is disabled")
    if not re.search(r"NEW\.updated_at\s*:?=\s*now\(\)", body or "", re.I):
        problems.append("function does not set NEW.updated_at := now()")
    c.add("integrations.updated_at_trigger", not problems, "; ".join(problems))


def check_indexes(conn, c: Checklist) -> None:
    for name, (table, tail) in INDEXES.items():
        row = _one(conn, """SELECT pg_get_indexdef(i.indexrelid), i.indisvalid, i.indrelid::regclass::text FROM pg_index i
                            JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_namespace n ON n.oid = x.relnamespace
                            WHERE n.nspname = 'public' AND x.relname = %s""", (name,))
        if row is None:
            c.add(f"index.{name}", False, "missing")
            continue
        ok = row[0].endswith(tail) and row[1] and row[2] == table.removeprefix("public.")
        c.add(f"index.{name}", ok, f"is {row[0]!r}{'' if row[1] else ' (INVALID: an interrupted concurrent build)'}, expected ... {tail} on {table}")


def check_comments(conn, c: Checklist) -> None:
    rows = dict(conn.execute(
        """SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""", (T,)).fetchall())
    table_comment = _one(conn, "SELECT obj_description(%s::regclass, 'pg_class')", (T,))[0]
    problems = [] if table_comment else ["table comment missing"]
    problems += [f"no comment on {col}" for col in COMMENTED if not rows.get(col)]
    if "iv_hex:ciphertext_hex" not in (rows.get("encrypted_api_key") or ""):
        problems.append("encrypted_api_key comment does not document iv_hex:ciphertext_hex")
    res = dict(conn.execute(
        """SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a
           WHERE a.attrelid = %s::regclass AND a.attname IN ('openrouter_model_id', 'openrouter_config')""", (R,)).fetchall())
    if "modelId" not in (res.get("openrouter_config") or "") or "systemPrompt" not in (res.get("openrouter_config") or ""):
        problems.append("openrouter_config comment does not document {modelId, systemPrompt, params}")
    if not res.get("openrouter_model_id"):
        problems.append("no comment on x402_resources.openrouter_model_id")
    c.add("comments", not problems, "; ".join(problems))


def check_resources(conn, c: Checklist) -> None:
    cols = dict(conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = %s::regclass AND attname IN ('openrouter_model_id', 'openrouter_config') AND NOT attisdropped""", (R,)).fetchall())
    c.add("resources.openrouter_model_id", cols.get("openrouter_model_id") == "uuid", f"openrouter_model_id is {cols.get('openrouter_model_id') or 'missing'}, expected uuid")
    c.add("resources.openrouter_config", cols.get("openrouter_config") == "jsonb", f"openrouter_config is {cols.get('openrouter_config') or 'missing'}, expected jsonb")
    cons = _constraints(conn, R)
    fks = [v for v in cons.values() if v[0] == "f" and "(openrouter_model_id)" in v[1]]
    ok = len(fks) == 1 and "REFERENCES ai_models(id)" in fks[0][1] and fks[0][3] == "n" and fks[0][2]
    c.add("resources.fk_ai_models_set_null", ok,
          f"expected one validated FK openrouter_model_id -> ai_models(id) ON DELETE SET NULL, found {[f[1] + ('' if f[2] else ' NOT VALID') for f in fks] or 'none'}")
    check = cons.get("x402_resources_resource_type_check")
    if check is None:
        c.add("resources.resource_type_check", False, "constraint x402_resources_resource_type_check is missing")
        return
    allowed = set(re.findall(r"'([^']*)'", check[1]))
    problems = []
    if allowed != RESOURCE_TYPES:
        missing, extra = RESOURCE_TYPES - allowed, allowed - RESOURCE_TYPES
        problems.append(f"allows {sorted(allowed)}" + (f", missing {sorted(missing)}" if missing else "") + (f", extra {sorted(extra)}" if extra else ""))
    if not check[2]:
        problems.append("constraint is NOT VALID: existing rows were never checked")
    other = [n for n, v in cons.items() if v[0] == "c" and "resource_type" in v[1] and n != "x402_resources_resource_type_check"]
    if other:
        problems.append(f"other resource_type checks also apply: {', '.join(other)}")
    c.add("resources.resource_type_check", not problems, "; ".join(problems))


def check_grants(conn, c: Checklist) -> None:
    for g in access.TABLE_GRANTS:
        held = access.held_privileges(conn, g)
        want = ", ".join(g.privileges) or "nothing"
        c.add(f"grant.{g.role}", access.satisfied(held, g), f"{g.role} holds {sorted(held) or 'nothing'} on {g.table}, expected {'at least ' if g.at_least else ''}{want}")
    # Effective privileges, so a grant to PUBLIC or through a membership is caught too.
    leaked = [p for p in access.CORE_TABLE_PRIVILEGES if _one(conn, "SELECT has_table_privilege('anon', %s, %s)", (T, p))[0]]
    c.add("grant.anon_effective", not leaked, f"anon can {', '.join(leaked)} on {T}")
    for usage in access.SCHEMA_USAGE:
        ok = _one(conn, "SELECT has_schema_privilege(%s, %s, 'USAGE')", (usage.role, usage.schema))[0]
        c.add(f"grant.usage_{usage.schema}_{usage.role}", ok, f"{usage.role} lacks USAGE on schema {usage.schema}")


def check_roles(conn, c: Checklist) -> None:
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT rolname, rolcanlogin, rolbypassrls FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role', 'authenticator')")}
    problems = [f"role {r} missing" for r in ("anon", "authenticated", "service_role", "authenticator") if r not in rows]
    problems += [f"{r} can log in" for r in ("anon", "authenticated", "service_role") if r in rows and rows[r][0]]
    problems += [f"{r} bypasses RLS" for r in ("anon", "authenticated") if r in rows and rows[r][1]]
    if "service_role" in rows and not rows["service_role"][1]:
        problems.append("service_role lacks BYPASSRLS")
    if "authenticator" in rows:
        members = {r[0] for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'authenticator'")}
        problems += [f"authenticator is not a member of {r}" for r in ("anon", "authenticated", "service_role") if r not in members]
    c.add("platform.roles", not problems, "; ".join(problems))


def check_auth_uid(conn, c: Checklist) -> None:
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
                got = conn.execute("SELECT auth.uid()::text").fetchone()[0]
        except psycopg.Error as exc:
            got = f"error: {exc.diag.message_primary}"
        if got != want:
            problems.append(f"{label}: returned {got}, expected {want}")
    c.add("platform.auth_uid", not problems, "; ".join(problems))


def check_ledger(conn, c: Checklist) -> None:
    entry = ledger.entries(conn).get("005")
    shipped = migrations.find(migrations.load(), "005")
    if entry is None:
        c.add("ledger.005", False, "migration 005 is not recorded as applied in the ledger")
    else:
        c.add("ledger.005", entry.checksum == shipped.checksum,
              f"ledger checksum {entry.checksum[:12]} does not match the shipped file {shipped.checksum[:12]} (drift)")


def run(conn: psycopg.Connection, c: Checklist) -> None:
    if not check_tables(conn, c):
        return
    for check in (check_columns, check_keys, check_rls_and_policies, check_trigger, check_indexes,
                  check_comments, check_resources, check_grants, check_roles, check_auth_uid, check_ledger):
        check(conn, c)
