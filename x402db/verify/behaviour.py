"""Behaviour checks inside one transaction that is always rolled back.

Roles are assumed exactly as PostgREST does it: set_config('role', ..., true) and a
request.jwt.claims JSON carrying sub and role; the legacy request.jwt.claim.sub is never set.

The application's own tables (auth.users, ai_models, x402_resources) are written only through
verify/rows.py, which assumes no column beyond those 005 defines. A check that needs a row nobody
can make is reported `skipped` with the reason, never passed, and the other checks still run.
Each section runs in its own savepoint, so one that stops early does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ..access import INTEGRATIONS, MODELS, RESOURCES, unqualified
from ..keys.crypto import Keyring
from . import contract
from .checks import Checklist
from .context import SmokeRun
from .postgrest import acting_as, attempt
from .rows import AUTH_USERS, CannotMakeRow, RowMaker

FAKE_KEY = "sk-or-v1-" + "0123456789abcdef" * 4


def _snapshot(conn: psycopg.Connection, user_id: str) -> tuple[Any, ...] | None:
    return conn.execute(
        f"SELECT encrypted_api_key, updated_at, is_enabled FROM {INTEGRATIONS} WHERE user_id = %s", (user_id,)
    ).fetchone()


def _existing_snapshot(conn: psycopg.Connection, user_id: str) -> tuple[Any, ...]:
    """The snapshot of a row the section has made sure of. Its absence breaks the section's
    assumptions: TypeError, which run() reports as the section stopping early."""
    row = _snapshot(conn, user_id)
    if row is None:
        raise TypeError(f"the integration row of test user {user_id} is gone")
    return row


def _ensure_integrations(conn: psycopg.Connection, *pairs: tuple[str, str, str]) -> None:
    """Rows for the given users, as the connecting role, whatever RLS refused earlier."""
    for user, key, updated in pairs:
        conn.execute(
            f"INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key, updated_at) VALUES (%s, %s, {updated}) ON CONFLICT (user_id) DO NOTHING",
            (user, key),
        )


def _make_users(ctx: SmokeRun) -> None:
    """Test users in auth.users; the project's triggers on it fire (rolled back with the rest)."""
    try:
        for key, user in ctx.users.items():
            ctx.rows.make(
                AUTH_USERS, {"id": user}, optional={"email": f"smoke-{key}-{user[:8]}@example.invalid"}, clone=False
            )
    except CannotMakeRow as exc:
        ctx.no_users = f"no test user could be created in auth.users ({exc}); a trigger of the project may refuse it"


def _rls(ctx: SmokeRun) -> None:
    conn, c, a, b, user_c = ctx.conn, ctx.checks, ctx.user_a, ctx.user_b, ctx.user_c
    with acting_as(conn, "authenticated", a):
        n, err = attempt(conn, f"INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key) VALUES (%s, 'a-cipher')", (a,))
        c.add("rls.insert_own", n == 1, f"user A could not insert their own row ({err})")
        n, err = attempt(
            conn, f"INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key) VALUES (%s, 'forged')", (user_c,)
        )
        c.add(
            "rls.insert_other_denied",
            err == "42501",
            f"inserting a row for user C as user A was not refused (rows={n}, sqlstate={err})",
        )
    with acting_as(conn, "authenticated", b):
        n, err = attempt(
            conn,
            f"INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key, updated_at) VALUES (%s, 'b-cipher', '2000-01-01')",
            (b,),
        )
        c.add("rls.insert_own_b", n == 1, f"user B could not insert their own row ({err})")
    _ensure_integrations(conn, (a, "a-cipher", "now()"), (b, "b-cipher", "'2000-01-01'"))
    b_before = _snapshot(conn, b)
    with acting_as(conn, "authenticated", a):
        seen = [
            str(r[0]) for r in conn.execute(f"SELECT user_id FROM {INTEGRATIONS} WHERE user_id IN (%s, %s)", (a, b))
        ]
        c.add(
            "rls.select_own_only",
            seen == [a],
            f"user A sees {len(seen)} of the two rows: {'includes B' if b in seen else 'not their own'}",
        )
        n, err = attempt(conn, f"UPDATE {INTEGRATIONS} SET encrypted_api_key = 'a-cipher-2' WHERE user_id = %s", (a,))
        c.add("rls.update_own", n == 1, f"user A could not update their own row (rows={n}, sqlstate={err})")
        n, err = attempt(conn, f"UPDATE {INTEGRATIONS} SET encrypted_api_key = 'hijack' WHERE user_id = %s", (b,))
        c.add("rls.update_other_invisible", n == 0, f"user A's update of B's row affected {n} rows (sqlstate={err})")
        n, err = attempt(conn, f"UPDATE {INTEGRATIONS} SET user_id = %s WHERE user_id = %s", (user_c, a))
        c.add(
            "rls.update_to_other_denied",
            err == "42501",
            f"moving user A's row to user C was not refused by WITH CHECK (rows={n}, sqlstate={err})",
        )
        n, err = attempt(conn, f"DELETE FROM {INTEGRATIONS} WHERE user_id = %s", (b,))
        c.add("rls.delete_other_invisible", n == 0, f"user A's delete of B's row affected {n} rows (sqlstate={err})")
    c.add("rls.other_row_unchanged", _snapshot(conn, b) == b_before, "user B's row changed while user A acted on it")
    with conn.transaction(force_rollback=True):
        with acting_as(conn, "authenticated", a):
            n, err = attempt(conn, f"DELETE FROM {INTEGRATIONS} WHERE user_id = %s", (a,))
            c.add("rls.delete_own", n == 1, f"user A could not delete their own row (rows={n}, sqlstate={err})")


def _anon(ctx: SmokeRun) -> None:
    conn = ctx.conn
    with acting_as(conn, "anon"):
        results = {
            "select": attempt(conn, f"SELECT * FROM {INTEGRATIONS}"),
            "insert": attempt(
                conn, f"INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key) VALUES (%s, 'x')", (ctx.user_c,)
            ),
            "update": attempt(conn, f"UPDATE {INTEGRATIONS} SET encrypted_api_key = 'x'"),
            "delete": attempt(conn, f"DELETE FROM {INTEGRATIONS}"),
        }
    leaks = [f"{verb} affected {n} rows" for verb, (n, err) in results.items() if err is None and n]
    leaks += [f"{verb} was allowed" for verb, (n, err) in results.items() if err is None and verb != "select"]
    ctx.checks.add("anon.nothing", not leaks, "; ".join(sorted(set(leaks))))


def _service_role(ctx: SmokeRun) -> None:
    conn = ctx.conn
    _ensure_integrations(conn, (ctx.user_a, "a-cipher", "now()"), (ctx.user_b, "b-cipher", "'2000-01-01'"))
    with acting_as(conn, "service_role"):
        n, err = attempt(conn, f"SELECT 1 FROM {INTEGRATIONS} WHERE user_id IN (%s, %s)", (ctx.user_a, ctx.user_b))
    ctx.checks.add("service_role.sees_all", n == 2, f"service_role sees {n} of 2 rows (sqlstate={err})")


def _integrations(ctx: SmokeRun) -> None:
    conn, c, b = ctx.conn, ctx.checks, ctx.user_b
    _ensure_integrations(conn, (b, "b-cipher", "'2000-01-01'"))
    before = _existing_snapshot(conn, b)[1]
    conn.execute(f"UPDATE {INTEGRATIONS} SET is_enabled = false WHERE user_id = %s", (b,))
    after = _existing_snapshot(conn, b)[1]
    c.add("trigger.bumps_updated_at", after > before, f"updated_at stayed {after} after an update")
    try:
        with conn.transaction():
            conn.execute("DELETE FROM auth.users WHERE id = %s", (b,))
    except psycopg.Error as exc:
        if (
            exc.diag.table_name == unqualified(INTEGRATIONS)
            or exc.diag.constraint_name == f"{unqualified(INTEGRATIONS)}_user_id_fkey"
        ):
            c.add(
                "integrations.user_delete_cascades", False, f"deleting user B was refused: {exc.diag.message_primary}"
            )
        else:
            c.skip(
                "integrations.user_delete_cascades",
                f"deleting a test user was refused by something 005 does not define: {exc.diag.message_primary}",
            )
        return
    survived = _snapshot(conn, b) is not None
    c.add("integrations.user_delete_cascades", not survived, "deleting user B left their integration behind")


def _model(ctx: SmokeRun) -> tuple[str | None, bool, str]:
    """A model to point a resource at: (id, made by us, why not made)."""
    try:
        model, _ = ctx.rows.make(MODELS, {}, returning="id")
        return str(model), True, ""
    except CannotMakeRow as exc:
        existing = ctx.conn.execute(f"SELECT id FROM {MODELS} LIMIT 1").fetchone()
        return (str(existing[0]) if existing else None), False, str(exc)


def _resources(ctx: SmokeRun) -> None:
    conn, c = ctx.conn, ctx.checks
    names = (
        "resources.openrouter_instant_accepted",
        "resources.unknown_type_rejected",
        "resources.model_delete_sets_null",
    )
    model, ours, model_reason = _model(ctx)
    try:
        nonce, how = ctx.make_resource(ctx.user_a, model)
    except CannotMakeRow as exc:
        if exc.defect is not None:
            c.add(names[0], False, f"an openrouter_instant resource was rejected: {exc}")
        else:
            c.skip(names[0], str(exc))
        for name in names[1:]:
            c.skip(name, "no openrouter_instant resource could be made to test with")
        return
    stored = conn.execute(
        f"SELECT resource_type, openrouter_model_id::text FROM {RESOURCES} WHERE openrouter_config ->> 'smoke' = %s",
        (nonce,),
    ).fetchall()
    c.add(
        names[0],
        stored == [("openrouter_instant", model)],
        f"the resource ({how}) reads back as {stored}",
        f"test resource: {how}",
    )
    n, err = attempt(
        conn, f"UPDATE {RESOURCES} SET resource_type = 'not_a_type' WHERE openrouter_config ->> 'smoke' = %s", (nonce,)
    )
    c.add(names[1], err == "23514", f"an unknown resource_type was accepted (rows={n}, sqlstate={err})")
    if not ours:
        c.skip(names[2], f"no test model could be made ({model_reason}); a real model is never deleted")
        return
    n, err = attempt(conn, f"DELETE FROM {MODELS} WHERE id = %s", (model,))
    after = conn.execute(
        f"SELECT openrouter_model_id FROM {RESOURCES} WHERE openrouter_config ->> 'smoke' = %s", (nonce,)
    ).fetchall()
    c.add(
        names[2],
        err is None and after == [(None,)],
        f"deleting the model gave sqlstate={err}; the resource {'is gone' if not after else 'now holds ' + str(after[0][0])}",
    )


def _secret_roundtrip(ctx: SmokeRun) -> None:
    keyring = ctx.keyring
    assert keyring is not None, "run() runs the crypto section only with a keyring"
    token = keyring.encrypt(FAKE_KEY)
    ctx.conn.execute(f"INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key) VALUES (%s, %s)", (ctx.user_c, token))
    stored = _existing_snapshot(ctx.conn, ctx.user_c)[0]
    try:
        ok = keyring.decrypt(stored) == FAKE_KEY
    except Exception:
        ok = False
    ctx.checks.add(
        "crypto.roundtrip",
        ok,
        f"a key encrypted with secret {keyring.primary_fingerprint} did not decrypt after a trip through the table",
    )


@dataclass(frozen=True)
class Section:
    name: str
    checks: tuple[str, ...]
    run: Callable[[SmokeRun], None]
    needs_users: bool = True


SECTIONS = (
    Section(
        "rls",
        (
            "rls.insert_own",
            "rls.insert_other_denied",
            "rls.insert_own_b",
            "rls.select_own_only",
            "rls.update_own",
            "rls.update_other_invisible",
            "rls.update_to_other_denied",
            "rls.delete_other_invisible",
            "rls.other_row_unchanged",
            "rls.delete_own",
        ),
        _rls,
    ),
    Section("anon", ("anon.nothing",), _anon, needs_users=False),
    Section("service_role", ("service_role.sees_all",), _service_role),
    Section("crypto", ("crypto.roundtrip",), _secret_roundtrip),
    Section("integrations", ("trigger.bumps_updated_at", "integrations.user_delete_cascades"), _integrations),
    Section(
        "resources",
        (
            "resources.openrouter_instant_accepted",
            "resources.unknown_type_rejected",
            "resources.model_delete_sets_null",
        ),
        _resources,
    ),
    Section("contract", contract.CHECKS, lambda ctx: contract.run(ctx)),
)


def run(conn: psycopg.Connection, c: Checklist, keyring: Keyring | None = None) -> None:
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL statement_timeout = '5s'")
        ctx = SmokeRun(conn, c, keyring, RowMaker(conn))
        _make_users(ctx)
        for section in SECTIONS:
            if section.name == "crypto" and keyring is None:
                continue
            if section.needs_users and ctx.no_users:
                for name in section.checks:
                    c.skip(name, ctx.no_users)
                continue
            before = len(c.checks)
            try:
                with conn.transaction():
                    section.run(ctx)
            except (psycopg.Error, TypeError) as exc:
                # A defect broke the section's own assumptions (e.g. a row that should exist).
                reason = (
                    exc.diag.message_primary
                    if isinstance(exc, psycopg.Error) and exc.diag.message_primary
                    else type(exc).__name__
                )
                done = {ch.name for ch in c.checks[before:]}
                for name in section.checks:
                    if name not in done:
                        c.add(name, False, f"not run: the {section.name} checks stopped early: {reason}")
