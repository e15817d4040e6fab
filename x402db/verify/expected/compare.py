"""A live database judged against the expectation, one line per difference.

For every migration the live ledger records as run (state applied or steps-pending; an adopted
migration ran nothing, so it owns nothing here), each fact it owns must be as it left it, and each
fact it dropped must be absent; a fact is judged by the latest such migration that touched it.
Objects nobody owns are not judged, with one exception: a fact attached to an owned object (a
column, constraint, index, policy, trigger or grant on an owned table, a grant on an owned
function or schema) that no migration made is a difference of the object's owner. So on a
Supabase project, where the application's tables have columns the bundle never wrote, only what
005 added to them is judged; its own table is judged whole.

Grants: a privilege list is compared as read, the whole set of the object's kind as ALL
(facts.privileges), so the access model's GRANT ALL (MAINTAIN included on 17+) is ALL on the
scratch server and on the live one, whatever their majors. A grant to
a role the scratch cluster never had is a difference like any other, unless the caller names the
role in `foreign_grantees` (a role another tool grants to on purpose): the bundle's own backend
role gets its rights through membership of service_role, never through a grant on a table.

Roles are compared only where the bundle created them: those x402_private.compat_objects records
(migration 000, target postgres). On Supabase the platform owns them.

No verdict depends on who connects or on their search_path: facts are read under a fixed path,
and every role is compared by name.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg

from ...migrate import ledger
from ...private import PRIVATE_SCHEMA
from .derive import MIGRATOR, Expectation
from .facts import Facts, Key, read_only, rename_role, snapshot

JUDGED_STATES = ("applied", "steps-pending")
ACL_KINDS = ("table_acl", "column_acl", "function_acl", "schema_acl")
_SHOWN = 60  # characters of a long text around its first difference


@dataclass(frozen=True)
class Difference:
    version: str  # the migration that owns the fact
    kind: str
    identity: str
    what: str  # the field, or "present" / "unexpected"
    expected: Any
    found: Any

    def __str__(self) -> str:
        head = f"{self.version}: {self.kind} {self.identity}"
        if self.what == "missing":
            return f"{head}: missing"
        if self.what == "present":
            return f"{head}: present, expected absent (the migration drops it)"
        if self.what == "unexpected":
            return f"{head}: unexpected, found {describe(self.found)}"
        found, expected = shown_pair(self.found, self.expected)
        return f"{head}: {self.what.replace('_', ' ')} is {found}, expected {expected}"


def show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, str):
        return " ".join(value.split()) or "''"
    return str(value)


def shown_pair(found: Any, expected: Any) -> tuple[str, str]:
    """Both values on one line; two long texts are cut to the stretch around where they differ."""
    a, b = show(found), show(expected)
    if len(a) <= _SHOWN and len(b) <= _SHOWN:
        return a, b
    start = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, start - 20)

    def cut(s: str) -> str:
        part = s[start : start + _SHOWN]
        return ("…" if start else "") + part + ("…" if start + _SHOWN < len(s) else "")

    return cut(a), cut(b)


def describe(value: dict[str, Any]) -> str:
    """An unexpected fact in a few words: a grant's privileges, else its first telling fields."""
    if "privileges" in value:
        return show(value["privileges"])
    fields = [f"{k} {show(v)}" for k, v in value.items() if k != "on" and v not in (None, [], False) and k != "comment"]
    text = "; ".join(fields)
    return text if len(text) <= 2 * _SHOWN else text[: 2 * _SHOWN] + "…"


def migrator_role(applied_by: str) -> str:
    """The role in a ledger's applied_by ("postgres (user@host)")."""
    return applied_by.split(" (", 1)[0]


def _compat_roles(conn: psycopg.Connection) -> set[str]:
    table = f"{PRIVATE_SCHEMA}.compat_objects"
    row = conn.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not (row and row[0]):
        return set()
    return {r[0] for r in conn.execute(f"SELECT identity FROM {table} WHERE kind = 'role'")}


def judged(expectation: Expectation, entries: dict[str, ledger.Entry]) -> list[str]:
    """The versions the ledger records as run (not adopted) that the expectation knows."""
    return [
        m.version
        for m in expectation.migrations
        if (e := entries.get(m.version)) is not None and e.state in JUDGED_STATES and e.kind == "applied"
    ]


def owners(expectation: Expectation, entries: dict[str, ledger.Entry]) -> dict[Key, tuple[str, dict[str, Any] | None]]:
    """key -> (version, the fact as expected, or None: dropped), for the migrations the ledger
    records as run; the latest one touching a key wins. MIGRATOR resolves to each one's role."""
    owned: dict[Key, tuple[str, dict[str, Any] | None]] = {}
    run = set(judged(expectation, entries))
    for m in expectation.migrations:
        entry = entries.get(m.version)
        if entry is None or m.version not in run:
            continue
        touched: Facts = rename_role(m.touched, MIGRATOR, migrator_role(entry.applied_by))
        dropped = rename_role({k: {} for k in m.dropped}, MIGRATOR, migrator_role(entry.applied_by))
        for k in dropped:
            owned[k] = (m.version, None)
        for k, v in touched.items():
            owned[k] = (m.version, v)
    return owned


def _fields(version: str, key: Key, expected: dict[str, Any], found: dict[str, Any]) -> list[Difference]:
    return [
        Difference(version, *key, f, expected.get(f), found.get(f))
        for f in sorted(set(expected) | set(found))
        if expected.get(f) != found.get(f)
    ]


def judge(
    owned: dict[Key, tuple[str, dict[str, Any] | None]],
    live: Facts,
    *,
    compat_roles: Collection[str] = (),
    foreign_grantees: Collection[str] = (),
) -> list[Difference]:
    """The differences between the owned facts and the live ones (no database needed)."""
    out: list[Difference] = []
    for key, (version, expected) in owned.items():
        if key[0] == "role" and key[1] not in compat_roles:
            continue
        if expected is not None and expected.get("grantee") in foreign_grantees:
            continue
        found = live.get(key)
        if expected is None:
            if found is not None:
                out.append(Difference(version, *key, "present", None, found))
        elif found is None:
            out.append(Difference(version, *key, "missing", expected, None))
        else:
            out += _fields(version, key, expected, found)
    # Extra facts on an object some judged migration made, whole, and still expects.
    whole = {k: v for k, (v, e) in owned.items() if e is not None}
    for key, value in live.items():
        on = value.get("on")
        if key in owned or not on or value.get("grantee") in foreign_grantees:
            continue
        parent = (on[0], on[1])
        if parent in whole:
            out.append(Difference(whole[parent], *key, "unexpected", None, value))
    return sorted(out, key=lambda d: (d.version, d.kind, d.identity, d.what))


def differences(
    conn: psycopg.Connection, expectation: Expectation, *, foreign_grantees: Collection[str] = ()
) -> list[Difference]:
    """Every difference between the live database and what its applied migrations should have made.
    Reads only; runs in the caller's transaction, or in a read-only one of its own."""
    with read_only(conn):
        owned = owners(expectation, ledger.entries(conn))
        compat = _compat_roles(conn)
        live = snapshot(conn, sorted({k[1] for k in owned if k[0] == "role"} & compat))
    return judge(owned, live, compat_roles=compat, foreign_grantees=foreign_grantees)
