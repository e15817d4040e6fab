"""Smoke on real Supabase projects: foreign-shaped application tables, the
non-superuser `postgres`, any search_path, any connecting role.

Written against the check record's `passed` too, so that the same file runs against the code
before statuses existed (the first two tests below fail there)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.utils.db import admin_dsn, deploy, drop_database, new_supabase_database
from tests.utils.scripts import call_script
from x402db import db
from x402db.verify.smoke import run_checks

from .test_smoke import SABOTAGE

T = "public.user_openrouter_integrations"
SECRET = {"INTEGRATION_ENCRYPTION_SECRET": "smoke-secret"}


def verdict(check) -> str:
    return getattr(check, "status", None) or ("passed" if check.passed else "failed")


def verdicts(result) -> dict[str, str]:
    return {c.name: verdict(c) for c in result.checks}


def connections(server, dsn: str) -> dict[str, str]:
    """The same database as the roles and search_paths production connects with."""
    admin = admin_dsn(server, dsn)
    return {
        "postgres": dsn,
        "postgres, empty search_path": dsn + "?options=-csearch_path%3D",
        "postgres, search_path auth, public": dsn + "?options=-csearch_path%3Dauth%2Cpublic",
        "supabase_admin (superuser)": admin,
        "supabase_admin, search_path auth, public, extensions": admin
        + "?options=-csearch_path%3Dauth%2Cpublic%2Cextensions",
    }


@pytest.fixture
def deployed_supabase(supabase_db):
    deploy(supabase_db)
    return supabase_db


def test_full_smoke_script_runs_every_behaviour_check(deployed_supabase):
    """scripts/smoke.py on foreign-shaped tables runs every behaviour check with --full, and passes.
    Without it, on Supabase, the catalog checks only (inserting test users fires the project's
    auth.users triggers, which `make deploy` avoids there too), and it says so."""
    r = call_script("smoke.py", "--json", "--dsn", deployed_supabase, env=SECRET)
    assert r.returncode == 0 and "target supabase: catalog checks only" in r.stderr and "--full" in r.stderr, r.stderr
    names = {c["name"] for c in json.loads(r.stdout)["checks"]}
    assert "policy.no_extra" in names and not any(n.startswith(("rls.", "crypto.", "contract.")) for n in names)
    assert (
        "--full" in call_script("smoke.py", "--help").stdout and "Supabase" in call_script("smoke.py", "--help").stdout
    )
    r = call_script("smoke.py", "--json", "--full", "--dsn", deployed_supabase, env=SECRET)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    behaviour = {
        n: c.get("status", "passed" if c["passed"] else "failed")
        for n, c in checks.items()
        if n.split(".")[0]
        in ("rls", "anon", "service_role", "trigger", "integrations", "resources", "crypto", "contract")
        and n
        not in (
            "integrations.columns",
            "integrations.primary_key",
            "integrations.fk_auth_users_cascade",
            "integrations.rls_enabled",
            "integrations.updated_at_trigger",
            "resources.openrouter_model_id",
            "resources.openrouter_config",
            "resources.fk_ai_models_set_null",
            "resources.resource_type_check",
        )
    }
    assert len(behaviour) >= 24
    assert {n: s for n, s in behaviour.items() if s != "passed"} == {"contract.toggle_upsert": "warn"}


def test_verdicts_do_not_depend_on_search_path_or_role(server, deployed_supabase):
    """The same verdict for every check whoever connects, whatever their search_path."""
    for read_only in (True, False):  # the catalog alone first, then with the behaviour checks
        seen = {
            label: verdicts(run_checks(dsn, read_only=read_only))
            for label, dsn in connections(server, deployed_supabase).items()
        }
        for label, got in seen.items():
            assert {n: s for n, s in got.items() if s not in ("passed", "warn")} == {}, label
        reference = seen["postgres"]
        assert all(got == reference for got in seen.values())


# Sabotages whose detection used to depend on how a definition was rendered.
PATH_SENSITIVE = [
    "cascade_changed",
    "set_null_changed",
    "policy_without_check",
    "extra_using_true",
    "index_dropped",
    "constraint_without_openrouter_instant",
    "trigger_dropped",
    "primary_key_dropped",
]


@pytest.mark.parametrize("defect", PATH_SENSITIVE)
def test_sabotage_is_caught_under_every_search_path_and_role(server, defect):
    _, sabotage, check = next(s for s in SABOTAGE if s[0] == defect)
    dsn = new_supabase_database(server, "shape_a")
    try:
        deploy(dsn)
        with db.connect(admin_dsn(server, dsn)) as c:
            c.execute(sabotage)
        for label, conn_dsn in connections(server, dsn).items():
            got = verdicts(run_checks(conn_dsn, read_only=True))
            assert got.get(check) == "failed", f"{label}: {check} is {got.get(check)}"
    finally:
        drop_database(server, dsn)


# The sabotage suite on the Supabase fixture, catalog and behaviour defects, each on one of the
# two shapes (both shapes get a share), as the non-superuser postgres.
ON_SUPABASE = [
    ("policy_dropped", "shape_a"),
    ("extra_using_true", "shape_b"),
    ("set_null_changed", "shape_b"),
    ("own_policy_sees_everything", "shape_a"),
    ("anon_reads_and_writes", "shape_b"),
    ("type_check_dropped", "shape_a"),
    ("type_check_dropped", "shape_b"),
    ("user_delete_restricted", "shape_a"),
    ("user_delete_restricted", "shape_b"),
    ("model_delete_cascades", "shape_a"),
    ("model_delete_cascades", "shape_b"),
    ("constraint_without_openrouter_instant", "shape_b"),
    ("ciphertext_mangled", "shape_a"),
]


@pytest.mark.parametrize("defect, shape", ON_SUPABASE, ids=[f"{d}-{s}" for d, s in ON_SUPABASE])
def test_each_defect_is_caught_on_supabase(server, defect, shape):
    from x402db.keys.crypto import Keyring

    _, sabotage, check = next(s for s in SABOTAGE if s[0] == defect)
    dsn = new_supabase_database(server, shape)
    try:
        deploy(dsn)
        with db.connect(admin_dsn(server, dsn)) as c:
            c.execute(sabotage)
        result = run_checks(dsn, keyring=Keyring(SECRET["INTEGRATION_ENCRYPTION_SECRET"]))
        failed = {c.name: c.detail for c in result.checks if verdict(c) == "failed"}
        assert check in failed and failed[check], f"{defect}: failing checks were {failed}"
        assert not result.passed
    finally:
        drop_database(server, dsn)


def test_users_that_cannot_be_created_skip_their_checks(server, deployed_supabase, tmp_path):
    """A project whose auth.users trigger refuses our test users: the checks that need users are
    skipped with the reason, the others still run, and smoke does not fail."""
    with db.connect(admin_dsn(server, deployed_supabase)) as c:
        c.execute("""CREATE FUNCTION public.only_real_users() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN RAISE EXCEPTION 'sign-ups are closed'; END $$;
                     CREATE TRIGGER only_real_users BEFORE INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.only_real_users()""")
    junit = tmp_path / "smoke.xml"
    r = call_script("smoke.py", "--json", "--full", "--dsn", deployed_supabase, "--junit", str(junit), env=SECRET)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    skipped = {n for n, c in checks.items() if c["status"] == "skipped"}
    assert {
        "rls.select_own_only",
        "service_role.sees_all",
        "crypto.roundtrip",
        "integrations.user_delete_cascades",
        "resources.model_delete_sets_null",
        "contract.delete",
    } <= skipped
    assert all("sign-ups are closed" in checks[n]["detail"] and not checks[n]["passed"] for n in skipped)
    assert checks["anon.nothing"]["status"] == "passed" and checks["policy.no_extra"]["status"] == "passed"
    assert doc["passed"] is True and doc["counts"]["skipped"] == len(skipped)
    cases = {case.get("name"): case for case in ET.parse(junit).getroot()}
    assert "sign-ups are closed" in cases["rls.select_own_only"].find("skipped").get("message")
    human = call_script("smoke.py", "--full", "--dsn", deployed_supabase, env=SECRET).stdout
    assert "SKIP  rls.select_own_only: no test user could be created in auth.users" in human


def test_resources_that_cannot_be_made_are_skipped(server, deployed_supabase):
    """No generic value passes the project's CHECK and there is no row to copy or update: the
    resource checks are skipped with the reason, never passed; every other check passes."""
    with db.connect(admin_dsn(server, deployed_supabase)) as c:
        c.execute("DELETE FROM public.x402_resources")
        c.execute("ALTER TABLE public.x402_resources ADD CONSTRAINT only_big_names CHECK (length(id::text) > 1000)")
    result = run_checks(deployed_supabase)
    got = verdicts(result)
    assert {n: s for n, s in got.items() if s != "passed"} == {
        "resources.openrouter_instant_accepted": "skipped",
        "resources.unknown_type_rejected": "skipped",
        "resources.model_delete_sets_null": "skipped",
        "contract.affected_resources_count": "skipped",
        "contract.toggle_upsert": "warn",
    }
    details = {c.name: c.detail for c in result.checks}
    assert "only_big_names" in details["resources.openrouter_instant_accepted"]
    assert "holds no row to copy" in details["resources.openrouter_instant_accepted"]
    assert result.passed


def test_an_existing_row_is_used_when_none_can_be_made(server):
    """Shape B with resource_url unique: a fresh row fails its CHECK, a copy its UNIQUE; an
    existing row is updated in place (rolled back) and every resource check runs."""
    dsn = new_supabase_database(server, "shape_b")
    try:
        deploy(dsn)
        with db.connect(admin_dsn(server, dsn)) as c:
            c.execute("ALTER TABLE public.x402_resources ADD CONSTRAINT one_per_url UNIQUE (resource_url)")
            before = c.execute(
                "SELECT md5(string_agg(to_jsonb(r)::text, ',' ORDER BY id)) FROM public.x402_resources r"
            ).fetchone()
        result = run_checks(dsn)
        assert {n: s for n, s in verdicts(result).items() if s != "passed"} == {"contract.toggle_upsert": "warn"}
        made = next(c.detail for c in result.checks if c.name == "resources.openrouter_instant_accepted")
        assert made == "test resource: an existing row, updated"
        with db.connect(admin_dsn(server, dsn)) as c:
            after = c.execute(
                "SELECT md5(string_agg(to_jsonb(r)::text, ',' ORDER BY id)) FROM public.x402_resources r"
            ).fetchone()
        assert after == before
    finally:
        drop_database(server, dsn)
