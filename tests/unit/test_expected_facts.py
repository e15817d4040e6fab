"""The server-free parts of the expectation: delta, normalisation, role renaming, judging owned
facts against live ones, message lines and the cache's keying and files. Milliseconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from x402db.migrate import files as migrations
from x402db.migrate.ledger import Entry
from x402db.verify.checks import Checklist
from x402db.verify.expected import cache
from x402db.verify.expected.checks import add_checks
from x402db.verify.expected.compare import Difference, judge, migrator_role, owners, shown_pair
from x402db.verify.expected.derive import MIGRATOR, Expectation, Owned
from x402db.verify.expected.facts import (
    ALL,
    TG_BEFORE,
    TG_ROW,
    TG_UPDATE,
    acl_key,
    delta,
    privileges,
    rename_role,
    squash,
    tgtype_words,
)

T = "public.t"
TABLE = ("table", T)
EVERY_TABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"})


def test_delta_names_new_changed_and_dropped_keys():
    before = {("table", "a"): {"owner": "x"}, ("table", "b"): {"owner": "x"}, ("table", "c"): {"owner": "x"}}
    after = {("table", "a"): {"owner": "x"}, ("table", "b"): {"owner": "y"}, ("table", "d"): {"owner": "x"}}
    assert delta(before, after) == ({("table", "b"), ("table", "d")}, {("table", "c")})


def test_squash_makes_layout_one_space_and_keeps_meaning():
    assert squash("((SELECT auth.uid() AS uid)\n      = user_id)") == "((SELECT auth.uid() AS uid) = user_id)"
    assert squash(None) is None
    assert squash("a = 'x  y'") == "a = 'x y'"  # a literal's spaces too: both servers render it alike


def test_tgtype_bits_decode():
    assert tgtype_words(TG_ROW | TG_BEFORE | TG_UPDATE) == ("BEFORE", ["UPDATE"], "ROW")
    assert tgtype_words(4 | 8) == ("AFTER", ["INSERT", "DELETE"], "STATEMENT")
    assert tgtype_words(64 | 1 | 4)[0] == "INSTEAD OF"


def test_every_privilege_is_all_so_pg17s_maintain_does_not_matter():
    assert privileges(EVERY_TABLE, EVERY_TABLE) == [ALL]
    assert privileges(EVERY_TABLE | {"MAINTAIN"}, EVERY_TABLE | {"MAINTAIN"}) == [ALL]
    assert privileges({"SELECT", "INSERT"}, EVERY_TABLE) == ["INSERT", "SELECT"]
    assert privileges({"EXECUTE"}, frozenset({"EXECUTE"})) == ["EXECUTE"]  # one privilege: no ALL
    assert privileges(set(), EVERY_TABLE) == []


def _grant(grantee: str, *privs: str, on=TABLE) -> dict:
    return {"on": list(on), "grantee": grantee, "privileges": list(privs), "grantable": []}


def test_rename_role_renames_owner_roles_memberships_and_grantees():
    facts = {
        TABLE: {"owner": "postgres"},
        ("policy", f"{T}.p"): {"on": list(TABLE), "roles": ["postgres", "anon"]},
        ("role", "authenticator"): {"member_of": ["postgres"]},
        acl_key("table_acl", T, "postgres"): _grant("postgres", ALL),
        acl_key("table_acl", T, "anon"): _grant("anon", "SELECT"),
    }
    out = rename_role(facts, "postgres", MIGRATOR)
    assert out[TABLE]["owner"] == MIGRATOR
    assert out[("policy", f"{T}.p")]["roles"] == sorted([MIGRATOR, "anon"])
    assert out[("role", "authenticator")]["member_of"] == [MIGRATOR]
    assert out[("table_acl", f"{T} to {MIGRATOR}")]["grantee"] == MIGRATOR
    assert ("table_acl", f"{T} to postgres") not in out and ("table_acl", f"{T} to anon") in out
    assert rename_role(out, MIGRATOR, "postgres") == facts | {
        ("policy", f"{T}.p"): {"on": list(TABLE), "roles": ["anon", "postgres"]}
    }


def _entry(version: str, role: str = "postgres", state: str = "applied", kind: str = "applied") -> Entry:
    return Entry(version, "m", "0" * 64, kind, "postgres", datetime.now(UTC), f"{role} (me@host)", 1, state)


def _expectation() -> Expectation:
    col = ("column", f"{T}.c")
    return Expectation(
        "k",
        18,
        [
            Owned(
                "001", "a", "x", {TABLE: {"owner": MIGRATOR, "comment": "one"}, col: {"on": list(TABLE), "type": "int"}}
            ),
            Owned("002", "b", "x", {TABLE: {"owner": MIGRATOR, "comment": "two"}}, {("index", "public.gone")}),
        ],
    )


def test_the_latest_applied_migration_owns_a_fact_and_the_migrator_resolves_per_migration():
    e = _expectation()
    owned = owners(e, {"001": _entry("001", "alice"), "002": _entry("002", "bob", state="steps-pending")})
    assert owned[TABLE] == ("002", {"owner": "bob", "comment": "two"})
    assert owned[("column", f"{T}.c")][0] == "001"
    assert owned[("index", "public.gone")] == ("002", None)
    # At 001 only: judged by 001's text; an adopted or half-reverted row runs nothing, owns nothing.
    assert owners(e, {"001": _entry("001"), "002": _entry("002", state="reverting")})[TABLE][1] == {
        "owner": "postgres",
        "comment": "one",
    }
    assert owners(e, {"001": _entry("001", kind="adopted")}) == {}


def test_migrator_role_is_the_part_before_the_os_user():
    assert migrator_role("postgres (ci@runner)") == "postgres"
    assert migrator_role("weird (name) (a@b)") == "weird"


def _owned(**facts):
    return {k: ("005", v) for k, v in facts.items()}


def test_judge_reports_a_changed_field_a_missing_fact_and_a_dropped_one_present():
    owned = {TABLE: ("005", {"owner": "postgres", "row_security": True}), ("index", "i"): ("005", None)}
    owned[("column", f"{T}.c")] = ("005", {"on": list(TABLE), "type": "int"})
    live = {TABLE: {"owner": "authenticated", "row_security": True}, ("index", "i"): {"on": list(TABLE)}}
    assert [str(d) for d in judge(owned, live)] == [
        f"005: column {T}.c: missing",
        "005: index i: present, expected absent (the migration drops it)",
        f"005: table {T}: owner is authenticated, expected postgres",
    ]


def test_extra_facts_count_only_on_an_object_a_judged_migration_made_whole():
    owned = {TABLE: ("005", {"owner": "postgres"})}
    extra_policy = ("policy", f"{T}.leak")
    live = {
        TABLE: {"owner": "postgres"},
        extra_policy: {"on": list(TABLE), "command": "SELECT", "roles": ["anon"]},
        ("policy", "public.app.x"): {"on": ["table", "public.app"], "command": "ALL"},  # nobody's table
        acl_key("column_acl", f"{T}.k", "anon"): _grant("anon", "SELECT"),
    }
    assert [str(d) for d in judge(owned, live)] == [
        f"005: column_acl {T}.k to anon: unexpected, found [SELECT]",
        f"005: policy {T}.leak: unexpected, found command SELECT; roles [anon]",
    ]


def test_a_grant_of_all_is_all_on_the_live_server_and_foreign_grantees_are_left_out():
    svc = acl_key("table_acl", "public.user_openrouter_integrations", "service_role")
    owned = {svc: ("005", _grant("service_role", ALL))}
    core = ["DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE"]
    assert judge(owned, {svc: _grant("service_role", ALL)}) == []
    # 15's whole set reads as ALL there; listed, it is 17's less MAINTAIN, which refresh would restore.
    assert [d.what for d in judge(owned, {svc: _grant("service_role", *core)})] == ["privileges"]
    assert [d.what for d in judge(owned, {svc: _grant("service_role", "SELECT")})] == ["privileges"]
    probe = acl_key("table_acl", T, "backend")
    live = {TABLE: {"owner": "postgres"}, probe: _grant("backend", "SELECT")}
    assert len(judge({TABLE: ("005", {"owner": "postgres"})}, live)) == 1
    assert judge({TABLE: ("005", {"owner": "postgres"})}, live, foreign_grantees={"backend"}) == []


def test_roles_are_judged_only_where_the_bundle_created_them():
    owned = {("role", "authenticated"): ("000", {"bypassrls": False})}
    live = {("role", "authenticated"): {"bypassrls": True}}
    assert judge(owned, live) == []
    assert [str(d) for d in judge(owned, live, compat_roles={"authenticated"})] == [
        "000: role authenticated: bypassrls is true, expected false"
    ]


def test_a_long_text_is_shown_around_its_first_difference_on_one_line():
    body = "BEGIN\n  NEW.updated_at := now();\n  RETURN NEW;\nEND\n" * 3
    found, expected = shown_pair(body.replace("RETURN NEW;\nEND\n" * 1, "INSERT INTO x; RETURN NEW; END ", 1), body)
    assert "\n" not in found + expected and "INSERT INTO x" in found and len(found) < 70
    line = str(Difference("005", "function", "public.f()", "body", body, body + "x"))
    assert "\n" not in line and line.startswith("005: function public.f(): body is ")


def test_expectation_json_round_trip():
    e = _expectation()
    data = json.loads(json.dumps(e.as_json()))
    assert Expectation.from_json("k", data).as_json() == e.as_json()


def test_the_cache_key_follows_every_file_and_the_server_major():
    shipped = migrations.load()
    k = cache.key(shipped, 18)
    assert k == cache.key(migrations.load(), 18)
    assert k != cache.key(shipped, 15)
    assert k != cache.key(shipped[:-1], 18)
    m = shipped[-1]
    edited_down = migrations.from_texts(m.version, m.name, m.up_text, m.down_text + "\n-- x\n")
    assert k != cache.key([*shipped[:-1], edited_down], 18)


def test_cache_files_are_whole_or_ignored(tmp_path: Path, monkeypatch):
    assert cache.load("k1", tmp_path) is None
    cache.store("k1", {"server_major": 18, "migrations": []}, tmp_path)
    assert cache.load("k1", tmp_path)["migrations"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["k1.json"]
    cache.path("k1", tmp_path).write_text('{"server_major": 18, "migr')
    assert cache.load("k1", tmp_path) is None
    cache.path("k2", tmp_path).write_text(json.dumps({"key": "k1", "format": cache.FORMAT}))
    assert cache.load("k2", tmp_path) is None  # a file under another name is not this key's
    monkeypatch.setenv(cache.ENV, str(tmp_path / "elsewhere"))
    assert cache.directory() == tmp_path / "elsewhere"
    monkeypatch.delenv(cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.directory() == tmp_path / "x402db" / "expected"


def test_a_failed_write_leaves_no_file(tmp_path: Path):
    with pytest.raises(TypeError):
        cache.store("k", {"bad": object()}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_one_passed_check_per_clean_migration_and_one_failed_check_per_difference():

    c = Checklist()
    found = [
        Difference("005", "table", T, "owner", "postgres", "anon"),
        Difference("005", "index", "i", "missing", {}, None),
    ]
    add_checks(c, ["000", "005"], found)
    assert [(k.name, k.status) for k in c.checks] == [
        ("expected.000", "passed"),
        ("expected.005", "failed"),
        ("expected.005", "failed"),
    ]
    # Each difference is its own line: the migration, the object, what differs, expected and found.
    assert [k.detail for k in c.checks[1:]] == [
        f"005: table {T}: owner is anon, expected postgres",
        "005: index i: missing",
    ]
