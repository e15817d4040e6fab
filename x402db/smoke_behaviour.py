"""Behaviour checks inside one transaction that is always rolled back.

Roles are assumed exactly as PostgREST does it: set_config('role', ..., true) and a
request.jwt.claims JSON carrying sub and role; the legacy request.jwt.claim.sub is never set.
"""
from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from typing import Iterator

import psycopg

from .checks import Checklist
from .crypto import Keyring

T = "public.user_openrouter_integrations"
FAKE_KEY = "sk-or-v1-" + "0123456789abcdef" * 4


class _Users:
    def __init__(self) -> None:
        self.a, self.b, self.c = (str(uuid.uuid4()) for _ in range(3))


@contextmanager
def acting_as(conn: psycopg.Connection, role: str, sub: str | None = None) -> Iterator[None]:
    claims = {"role": role} | ({"sub": sub} if sub else {})
    conn.execute("SELECT set_config('request.jwt.claims', %s, true), set_config('role', %s, true)", (json.dumps(claims), role))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")
        conn.execute("SELECT set_config('request.jwt.claims', '', true)")


def _attempt(conn: psycopg.Connection, query: str, params=()) -> tuple[int | None, str | None]:
    """(rows affected, None) or (None, SQLSTATE) for a statement that may be refused."""
    try:
        with conn.transaction():
            cur = conn.execute(query, params)
            return cur.rowcount, None
    except psycopg.Error as exc:
        return None, exc.sqlstate


def _snapshot(conn, user_id: str):
    return conn.execute(f"SELECT encrypted_api_key, updated_at, is_enabled FROM {T} WHERE user_id = %s", (user_id,)).fetchone()


def _setup(conn, u: _Users) -> str:
    conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s), (%s, %s), (%s, %s)",
                 (u.a, f"smoke-a-{u.a[:8]}@example.invalid", u.b, f"smoke-b-{u.b[:8]}@example.invalid", u.c, f"smoke-c-{u.c[:8]}@example.invalid"))
    model = conn.execute("INSERT INTO public.ai_models (id, slug, display_name) VALUES (gen_random_uuid(), %s, 'Smoke model') RETURNING id",
                         (f"smoke/{uuid.uuid4()}",)).fetchone()[0]
    return str(model)


def _rls(conn, c: Checklist, u: _Users) -> None:
    with acting_as(conn, "authenticated", u.a):
        n, err = _attempt(conn, f"INSERT INTO {T} (user_id, encrypted_api_key) VALUES (%s, 'a-cipher')", (u.a,))
        c.add("rls.insert_own", n == 1, f"user A could not insert their own row ({err})")
        n, err = _attempt(conn, f"INSERT INTO {T} (user_id, encrypted_api_key) VALUES (%s, 'forged')", (u.c,))
        c.add("rls.insert_other_denied", err == "42501", f"inserting a row for user C as user A was not refused (rows={n}, sqlstate={err})")
    with acting_as(conn, "authenticated", u.b):
        n, err = _attempt(conn, f"INSERT INTO {T} (user_id, encrypted_api_key, updated_at) VALUES (%s, 'b-cipher', '2000-01-01')", (u.b,))
        c.add("rls.insert_own_b", n == 1, f"user B could not insert their own row ({err})")
    # Seed as owner whatever RLS refused, so that the remaining checks still run.
    conn.execute(f"INSERT INTO {T} (user_id, encrypted_api_key, updated_at) VALUES (%s, 'a-cipher', now()), (%s, 'b-cipher', '2000-01-01')"
                 " ON CONFLICT (user_id) DO NOTHING", (u.a, u.b))
    b_before = _snapshot(conn, u.b)
    with acting_as(conn, "authenticated", u.a):
        seen = [str(r[0]) for r in conn.execute(f"SELECT user_id FROM {T} WHERE user_id IN (%s, %s)", (u.a, u.b))]
        c.add("rls.select_own_only", seen == [u.a], f"user A sees {len(seen)} of the two rows: {'includes B' if u.b in seen else 'not their own'}")
        n, err = _attempt(conn, f"UPDATE {T} SET encrypted_api_key = 'a-cipher-2' WHERE user_id = %s", (u.a,))
        c.add("rls.update_own", n == 1, f"user A could not update their own row (rows={n}, sqlstate={err})")
        n, err = _attempt(conn, f"UPDATE {T} SET encrypted_api_key = 'hijack' WHERE user_id = %s", (u.b,))
        c.add("rls.update_other_invisible", n == 0, f"user A's update of B's row affected {n} rows (sqlstate={err})")
        n, err = _attempt(conn, f"UPDATE {T} SET user_id = %s WHERE user_id = %s", (u.c, u.a))
        c.add("rls.update_to_other_denied", err == "42501", f"moving user A's row to user C was not refused by WITH CHECK (rows={n}, sqlstate={err})")
        n, err = _attempt(conn, f"DELETE FROM {T} WHERE user_id = %s", (u.b,))
        c.add("rls.delete_other_invisible", n == 0, f"user A's delete of B's row affected {n} rows (sqlstate={err})")
        n, err = _attempt(conn, f"DELETE FROM {T} WHERE user_id = %s AND false", (u.a,))
    c.add("rls.other_row_unchanged", _snapshot(conn, u.b) == b_before, "user B's row changed while user A acted on it")
    with conn.transaction(force_rollback=True):
        with acting_as(conn, "authenticated", u.a):
            n, err = _attempt(conn, f"DELETE FROM {T} WHERE user_id = %s", (u.a,))
            c.add("rls.delete_own", n == 1, f"user A could not delete their own row (rows={n}, sqlstate={err})")


def _anon(conn, c: Checklist, u: _Users) -> None:
    with acting_as(conn, "anon"):
        results = {
            "select": _attempt(conn, f"SELECT * FROM {T}"),
            "insert": _attempt(conn, f"INSERT INTO {T} (user_id, encrypted_api_key) VALUES (%s, 'x')", (u.c,)),
            "update": _attempt(conn, f"UPDATE {T} SET encrypted_api_key = 'x'"),
            "delete": _attempt(conn, f"DELETE FROM {T}"),
        }
    leaks = [f"{verb} affected {n} rows" for verb, (n, err) in results.items() if err is None and n]
    leaks += [f"{verb} was allowed" for verb, (n, err) in results.items() if err is None and verb != "select"]
    c.add("anon.nothing", not leaks, "; ".join(sorted(set(leaks))))


def _service_role(conn, c: Checklist, u: _Users) -> None:
    with acting_as(conn, "service_role"):
        n, err = _attempt(conn, f"SELECT 1 FROM {T} WHERE user_id IN (%s, %s)", (u.a, u.b))
    c.add("service_role.sees_all", n == 2, f"service_role sees {n} of 2 rows (sqlstate={err})")


def _trigger_and_cascades(conn, c: Checklist, u: _Users, model: str) -> None:
    before = _snapshot(conn, u.b)[1]
    conn.execute(f"UPDATE {T} SET is_enabled = false WHERE user_id = %s", (u.b,))
    after = _snapshot(conn, u.b)[1]
    c.add("trigger.bumps_updated_at", after > before, f"updated_at stayed {after} after an update")
    config = json.dumps({"modelId": "x", "systemPrompt": "", "params": {"temperature": 0.5, "maxTokens": 16}})
    rid = None
    try:
        with conn.transaction():
            rid = conn.execute("INSERT INTO public.x402_resources (user_id, resource_type, name, openrouter_model_id, openrouter_config)"
                               " VALUES (%s, 'openrouter_instant', 'smoke', %s, %s) RETURNING id", (u.a, model, config)).fetchone()[0]
    except psycopg.Error as exc:
        c.add("resources.openrouter_instant_accepted", False, f"an openrouter_instant resource was rejected: {exc.diag.message_primary}")
    else:
        c.add("resources.openrouter_instant_accepted", True)
    n, err = _attempt(conn, "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'not_a_type', 'smoke')", (u.a,))
    c.add("resources.unknown_type_rejected", err == "23514", f"an unknown resource_type was accepted (rows={n}, sqlstate={err})")
    if rid is None:
        c.add("resources.model_delete_sets_null", False, "not checked: no openrouter_instant resource could be created")
    else:
        n, err = _attempt(conn, "DELETE FROM public.ai_models WHERE id = %s", (model,))
        nulled = conn.execute("SELECT openrouter_model_id FROM public.x402_resources WHERE id = %s", (rid,)).fetchone()
        c.add("resources.model_delete_sets_null", err is None and nulled is not None and nulled[0] is None,
              f"deleting the model gave sqlstate={err}; the resource now holds {nulled}")
    n, err = _attempt(conn, "DELETE FROM auth.users WHERE id = %s", (u.b,))
    c.add("integrations.user_delete_cascades", err is None and _snapshot(conn, u.b) is None,
          f"deleting user B gave sqlstate={err}; their integration {'survived' if _snapshot(conn, u.b) else 'is gone'}")


def _secret_roundtrip(conn, c: Checklist, u: _Users, keyring: Keyring) -> None:
    token = keyring.encrypt(FAKE_KEY)
    conn.execute(f"INSERT INTO {T} (user_id, encrypted_api_key) VALUES (%s, %s)", (u.c, token))
    stored = _snapshot(conn, u.c)[0]
    try:
        ok = keyring.decrypt(stored) == FAKE_KEY
    except Exception:
        ok = False
    c.add("crypto.roundtrip", ok, f"a key encrypted with secret {keyring.primary_fingerprint} did not decrypt after a trip through the table")


def run(conn: psycopg.Connection, c: Checklist, keyring: Keyring | None = None) -> None:
    u = _Users()
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL statement_timeout = '5s'")
        model = _setup(conn, u)
        sections = [("rls", lambda: _rls(conn, c, u)), ("anon", lambda: _anon(conn, c, u)),
                    ("service_role", lambda: _service_role(conn, c, u))]
        if keyring is not None:
            sections.append(("crypto", lambda: _secret_roundtrip(conn, c, u, keyring)))
        sections.append(("cascades", lambda: _trigger_and_cascades(conn, c, u, model)))
        for name, section in sections:
            try:
                with conn.transaction():
                    section()
            except (psycopg.Error, TypeError) as exc:
                # A defect broke the section's own assumptions (e.g. a row that should exist).
                reason = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag.message_primary else type(exc).__name__
                c.add(f"behaviour.{name}", False, f"stopped early: {reason}")
