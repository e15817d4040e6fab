"""The smoke verifier: a clean deploy passes on both targets, and each of 20 single defects
applied to a fresh deploy makes it exit 1 with a failing check that names the defect."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.utils.scripts import run_script
from x402db import db
from x402db.cli import smoke as smoke_cli
from x402db.private import PRIVATE_SCHEMA
from x402db.verify.smoke import run_checks

T = "public.user_openrouter_integrations"
OWN_POLICY = '"Users can manage their own OpenRouter integration"'

# (id, SQL that breaks one thing, the check that must fail)
SABOTAGE = [
    ("policy_dropped", f"DROP POLICY {OWN_POLICY} ON {T}", "policy.Users can manage their own OpenRouter integration"),
    ("service_policy_dropped", f'DROP POLICY "Service role full access" ON {T}', "policy.Service role full access"),
    ("rls_disabled", f"ALTER TABLE {T} DISABLE ROW LEVEL SECURITY", "integrations.rls_enabled"),
    ("extra_using_true", f'CREATE POLICY "debug" ON {T} FOR SELECT TO authenticated USING (true)', "policy.no_extra"),
    ("policy_for_public", f'CREATE POLICY "everyone" ON {T} FOR SELECT USING (false)', "policy.none_for_public"),
    (
        "policy_without_check",
        f"ALTER POLICY {OWN_POLICY} ON {T} WITH CHECK (true)",
        "policy.Users can manage their own OpenRouter integration",
    ),
    (
        "cascade_changed",
        f"ALTER TABLE {T} DROP CONSTRAINT user_openrouter_integrations_user_id_fkey, ADD CONSTRAINT user_openrouter_integrations_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE RESTRICT",
        "integrations.fk_auth_users_cascade",
    ),
    (
        "set_null_changed",
        "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_openrouter_model_id_fkey, ADD CONSTRAINT x402_resources_openrouter_model_id_fkey FOREIGN KEY (openrouter_model_id) REFERENCES public.ai_models(id) ON DELETE CASCADE",
        "resources.fk_ai_models_set_null",
    ),
    (
        "constraint_without_openrouter_instant",
        "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_resource_type_check, ADD CONSTRAINT x402_resources_resource_type_check CHECK (resource_type IN ('external','proxy','prompt','static','prompt_template'))",
        "resources.resource_type_check",
    ),
    (
        "constraint_not_valid",
        "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_resource_type_check, ADD CONSTRAINT x402_resources_resource_type_check CHECK (resource_type IN ('external','proxy','prompt','static','prompt_template','openrouter_instant')) NOT VALID",
        "resources.resource_type_check",
    ),
    (
        "index_dropped",
        "DROP INDEX public.idx_x402_resources_openrouter_model",
        "index.idx_x402_resources_openrouter_model",
    ),
    (
        "integration_index_dropped",
        "DROP INDEX public.idx_openrouter_integrations_user_enabled",
        "index.idx_openrouter_integrations_user_enabled",
    ),
    (
        "trigger_dropped",
        f"DROP TRIGGER update_openrouter_integration_updated_at ON {T}",
        "integrations.updated_at_trigger",
    ),
    (
        "trigger_search_path_reset",
        "ALTER FUNCTION public.update_openrouter_integration_updated_at() RESET search_path",
        "integrations.updated_at_trigger",
    ),
    (
        "trigger_search_path_public",
        "ALTER FUNCTION public.update_openrouter_integration_updated_at() SET search_path = public",
        "integrations.updated_at_trigger",
    ),
    (
        "trigger_disabled",
        f"ALTER TABLE {T} DISABLE TRIGGER update_openrouter_integration_updated_at",
        "integrations.updated_at_trigger",
    ),
    ("not_null_dropped", f"ALTER TABLE {T} ALTER COLUMN encrypted_api_key DROP NOT NULL", "integrations.columns"),
    (
        "column_type_changed",
        f"ALTER TABLE {T} ALTER COLUMN encrypted_api_key TYPE varchar(200)",
        "integrations.columns",
    ),
    (
        "config_type_changed",
        "ALTER TABLE public.x402_resources ALTER COLUMN openrouter_config TYPE json",
        "resources.openrouter_config",
    ),
    ("grant_revoked_from_authenticated", f"REVOKE UPDATE ON {T} FROM authenticated", "grant.authenticated"),
    ("anon_granted_select", f"GRANT SELECT ON {T} TO anon", "grant.anon"),
    ("public_granted_select", f"GRANT SELECT ON {T} TO PUBLIC", "grant.anon_effective"),
    (
        "checksum_drifted",
        f"UPDATE {PRIVATE_SCHEMA}.schema_migrations SET checksum = repeat('0', 64) WHERE version = '005'",
        "ledger.005",
    ),
    (
        "auth_uid_redefined",
        "CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$",
        "platform.auth_uid",
    ),
    ("comment_removed", f"COMMENT ON COLUMN {T}.encrypted_api_key IS NULL", "comments"),
    ("service_role_loses_bypassrls", "ALTER ROLE service_role NOBYPASSRLS", "platform.roles"),
    (
        "primary_key_dropped",
        f"ALTER TABLE {T} DROP CONSTRAINT user_openrouter_integrations_pkey CASCADE",
        "integrations.primary_key",
    ),
    (
        "model_id_type_changed",
        "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_openrouter_model_id_fkey, ALTER COLUMN openrouter_model_id TYPE text",
        "resources.openrouter_model_id",
    ),
    ("service_role_select_revoked", f"REVOKE SELECT ON {T} FROM service_role", "service_role.sees_all"),
    (
        "authenticated_loses_schema_usage",
        "REVOKE USAGE ON SCHEMA public FROM PUBLIC, authenticated",
        "grant.usage_public_authenticated",
    ),
    (
        "service_role_loses_schema_usage",
        "REVOKE USAGE ON SCHEMA public FROM PUBLIC, service_role",
        "grant.usage_public_service_role",
    ),
    ("own_policy_sees_everything", f"ALTER POLICY {OWN_POLICY} ON {T} USING (true)", "rls.select_own_only"),
    (
        "anon_reads_and_writes",
        f'GRANT ALL ON {T} TO anon; CREATE POLICY "anon all" ON {T} FOR ALL TO anon USING (true) WITH CHECK (true)',
        "anon.nothing",
    ),
    (
        "type_check_dropped",
        "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_resource_type_check",
        "resources.unknown_type_rejected",
    ),
    (
        "user_delete_restricted",
        f"ALTER TABLE {T} DROP CONSTRAINT user_openrouter_integrations_user_id_fkey, ADD CONSTRAINT user_openrouter_integrations_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE RESTRICT",
        "integrations.user_delete_cascades",
    ),
    (
        "model_delete_cascades",
        "ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_openrouter_model_id_fkey, ADD CONSTRAINT x402_resources_openrouter_model_id_fkey FOREIGN KEY (openrouter_model_id) REFERENCES public.ai_models(id) ON DELETE CASCADE",
        "resources.model_delete_sets_null",
    ),
    ("ledger_row_missing", f"DELETE FROM {PRIVATE_SCHEMA}.schema_migrations WHERE version = '005'", "ledger.005"),
    (
        "ledger_steps_pending",
        f"UPDATE {PRIVATE_SCHEMA}.schema_migrations SET state = 'steps-pending' WHERE version = '005'",
        "ledger.005",
    ),
    ("tables_missing", f"DROP TABLE {T}", "tables.present"),
    # The backend's queries, replayed as service_role the way PostgREST runs them.
    (
        "service_role_reads_no_key",
        f"REVOKE SELECT ON {T} FROM service_role; GRANT SELECT (user_id, is_enabled) ON {T} TO service_role",
        "contract.select_by_user",
    ),
    ("service_role_cannot_update", f"REVOKE UPDATE ON {T} FROM service_role", "contract.upsert_with_key"),
    ("service_role_cannot_insert", f"REVOKE INSERT ON {T} FROM service_role", "contract.toggle_upsert"),
    ("service_role_cannot_delete", f"REVOKE DELETE ON {T} FROM service_role", "contract.delete"),
    (
        "toggle_update_swallowed",
        f"CREATE FUNCTION public.swallow_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; "
        f"CREATE TRIGGER swallow_update BEFORE UPDATE OF is_enabled ON {T} FOR EACH ROW EXECUTE FUNCTION public.swallow_update()",
        "contract.toggle_by_update",
    ),
    (
        "resources_hidden_from_service_role",
        "REVOKE SELECT ON public.x402_resources FROM service_role, PUBLIC",
        "contract.affected_resources_count",
    ),
    # PostgREST's HEAD read still selects x402_resources.*: SELECT on the filtered columns alone is not enough.
    (
        "resources_columns_hidden_from_service_role",
        "REVOKE SELECT ON public.x402_resources FROM service_role, PUBLIC; "
        "GRANT SELECT (user_id, resource_type) ON public.x402_resources TO service_role",
        "contract.affected_resources_count",
    ),
    (
        "ciphertext_mangled",
        f"CREATE FUNCTION public.mangle() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.encrypted_api_key := NEW.encrypted_api_key || '00'; RETURN NEW; END $$; "
        f"CREATE TRIGGER mangle BEFORE INSERT ON {T} FOR EACH ROW EXECUTE FUNCTION public.mangle()",
        "crypto.roundtrip",
    ),
]
# Role attributes are cluster-wide, unlike everything else here (it dies with its database).
ROLE_SABOTAGE = {"service_role_loses_bypassrls": "ALTER ROLE service_role BYPASSRLS"}


def failing(result) -> dict[str, str]:
    return {c.name: c.detail for c in result.checks if c.failed}


BEHAVIOUR = {
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
    "anon.nothing",
    "service_role.sees_all",
    "trigger.bumps_updated_at",
    "integrations.user_delete_cascades",
    "resources.openrouter_instant_accepted",
    "resources.unknown_type_rejected",
    "resources.model_delete_sets_null",
    "contract.upsert_with_key",
    "contract.select_by_user",
    "contract.toggle_by_update",
    "contract.affected_resources_count",
    "contract.delete",
}
# How the test resource is obtained: shape B's CHECK on resource_url defeats generic values.
RESOURCE_ROW = {
    "postgres": "a fresh row",
    "supabase-shape_a": "a fresh row",
    "supabase-shape_b": "a copy of an existing row",
}


def statuses(result) -> dict[str, str]:
    return {c.name: c.status for c in result.checks}


def test_clean_deploy_passes_every_check(request, deployed_any):
    """On Supabase-shaped application tables every behaviour check runs
    and passes; nothing is skipped, only the backend's toggle hazard is a warn."""
    result = run_checks(deployed_any)
    got = statuses(result)
    assert failing(result) == {}
    assert {n: s for n, s in got.items() if s != "passed"} == {"contract.toggle_upsert": "warn"}
    assert BEHAVIOUR <= set(got)
    assert len(result.checks) >= 45 and result.passed
    made = next(c.detail for c in result.checks if c.name == "resources.openrouter_instant_accepted")
    assert made == f"test resource: {RESOURCE_ROW[request.node.callspec.params['deployed_any']]}"


def test_behaviour_checks_leave_nothing_behind(deployed_db):
    with db.connect(deployed_db) as c:
        before = c.execute(
            "SELECT (SELECT count(*) FROM auth.users), (SELECT count(*) FROM public.ai_models), (SELECT count(*) FROM public.x402_resources)"
        ).fetchone()
    assert run_checks(deployed_db).passed
    with db.connect(deployed_db) as c:
        after = c.execute(
            "SELECT (SELECT count(*) FROM auth.users), (SELECT count(*) FROM public.ai_models), (SELECT count(*) FROM public.x402_resources)"
        ).fetchone()
    assert after == before


@pytest.mark.parametrize("defect, sabotage, check", SABOTAGE, ids=[s[0] for s in SABOTAGE])
def test_each_defect_is_caught(server, deployed_db, defect, sabotage, check, monkeypatch, capsys):
    # The command's own main, in this process: what a subprocess adds (the exit code, the output
    # streams) test_cli_outputs_and_exit_codes proves once, not once per defect and server.
    monkeypatch.setenv("INTEGRATION_ENCRYPTION_SECRET", "smoke-secret")
    with db.connect(deployed_db) as c:
        c.execute(sabotage)
    try:
        code = smoke_cli.main(["--json", "--dsn", deployed_db])
        out = capsys.readouterr()
        assert code == 1, out.out + out.err
        failed = {c["name"]: c["detail"] for c in json.loads(out.out)["checks"] if c["status"] == "failed"}
        assert check in failed, f"{defect}: failing checks were {failed}"
        assert failed[check]
    finally:
        if defect in ROLE_SABOTAGE:
            with db.connect(deployed_db) as c:
                c.execute(ROLE_SABOTAGE[defect])


# The checks no sabotage above names, and the sabotage that must fail each of them: the behaviour
# checks, which a defect in the catalog breaks on the way. Each is the narrowest defect that does:
# isolation from other users' rows needs RLS on, access to one's own row needs the policy.
ALSO_FAILS = {
    "rls_disabled": {
        "rls.delete_other_invisible",
        "rls.insert_other_denied",
        "rls.other_row_unchanged",
        "rls.update_other_invisible",
        "rls.update_to_other_denied",
    },
    "policy_dropped": {"rls.delete_own", "rls.insert_own", "rls.insert_own_b", "rls.update_own"},
    "constraint_without_openrouter_instant": {"resources.openrouter_instant_accepted"},
    "trigger_dropped": {"trigger.bumps_updated_at"},
    "service_role_select_revoked": {"grant.service_role"},
}


def test_every_check_can_fail(server):
    """Every check a clean run reports fails under some sabotage: the one each SABOTAGE entry
    names (test_each_defect_is_caught proves it fails), or, for the rest, one of ALSO_FAILS,
    proved here."""
    from tests.utils.db import deploy, drop_database, new_database
    from x402db.keys.crypto import Keyring

    ring = Keyring("smoke-secret")
    clean_db = new_database(server)
    deploy(clean_db)
    names = {c.name for c in run_checks(clean_db, keyring=ring).checks}
    drop_database(server, clean_db)
    sabotages = {defect: sabotage for defect, sabotage, _check in SABOTAGE}
    assert set(ALSO_FAILS) <= set(sabotages) and not set(ALSO_FAILS) & set(ROLE_SABOTAGE)
    for defect, checks in ALSO_FAILS.items():
        dsn = new_database(server)
        deploy(dsn)
        with db.connect(dsn) as c:
            c.execute(sabotages[defect])
        try:
            assert checks <= set(failing(run_checks(dsn, keyring=ring))), defect
        finally:
            drop_database(server, dsn)
    named = {check for _defect, _sabotage, check in SABOTAGE}
    assert names - named - set().union(*ALSO_FAILS.values()) == set()


@pytest.mark.parametrize("change", ["RESET search_path", "SET search_path = public, pg_temp", "RESET ALL"])
def test_trigger_function_search_path_is_checked_on_both_targets(deployed_any, change):
    """A reset of the function's SET search_path = '' fails smoke (it once passed 49/49)."""
    with db.connect(deployed_any) as c:
        c.execute(f"ALTER FUNCTION public.update_openrouter_integration_updated_at() {change}")
    detail = failing(run_checks(deployed_any)).get("integrations.updated_at_trigger", "")
    assert "search_path" in detail, detail


def test_toggle_hazard_is_a_warn_and_smoke_passes(deployed_any):
    """The backend's toggle-only upsert is refused by encrypted_api_key NOT NULL; smoke
    says so as a warn with the backend's fix, and passes. Its replacement, the update, passes."""
    result = run_checks(deployed_any)
    toggle = next(c for c in result.checks if c.name == "contract.toggle_upsert")
    assert toggle.status == "warn" and not toggle.passed and result.passed
    assert (
        "NOT NULL" in toggle.detail
        and '.update({is_enabled}).eq("user_id", userId)' in toggle.detail
        and "\n" not in toggle.detail
    )
    assert {c.name: c.status for c in result.checks if c.name.startswith("contract.") and c.name != toggle.name} == {
        "contract.upsert_with_key": "passed",
        "contract.select_by_user": "passed",
        "contract.toggle_by_update": "passed",
        "contract.affected_resources_count": "passed",
        "contract.delete": "passed",
    }


def test_toggle_accepted_is_reported_as_found(deployed_db):
    """If the schema ever accepted the toggle (NOT NULL dropped), the check says what it saw
    instead of a stale warn; the column check still fails the run."""
    with db.connect(deployed_db) as c:
        c.execute(f"ALTER TABLE {T} ALTER COLUMN encrypted_api_key DROP NOT NULL")
    result = run_checks(deployed_db)
    toggle = next(c for c in result.checks if c.name == "contract.toggle_upsert")
    assert toggle.status == "passed" and "accepted" in toggle.detail and "key was kept" in toggle.detail
    assert set(failing(result)) == {"integrations.columns"}


def test_affected_resources_count_needs_a_user_link(deployed_db):
    """x402_resources.user_id is not 005's: without a column referencing auth.users the count
    cannot be replayed, and is skipped with the reason."""
    with db.connect(deployed_db) as c:
        c.execute("ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_user_id_fkey")
    result = run_checks(deployed_db)
    count = next(c for c in result.checks if c.name == "contract.affected_resources_count")
    assert count.status == "skipped" and "no column referencing auth.users(id)" in count.detail
    assert result.passed


def test_a_section_that_stops_early_names_the_cause_and_others_run(deployed_db):
    with db.connect(deployed_db) as c:
        c.execute(f"REVOKE SELECT ON {T} FROM authenticated")
    result = run_checks(deployed_db)
    details = {c.name: (c.status, c.detail) for c in result.checks}
    assert details["rls.select_own_only"] == (
        "failed",
        "not run: the rls checks stopped early: permission denied for table user_openrouter_integrations",
    )
    assert details["rls.delete_own"][0] == "failed"
    assert (
        details["service_role.sees_all"][0]
        == details["contract.delete"][0]
        == details["resources.model_delete_sets_null"][0]
        == "passed"
    )


def test_read_only_runs_catalog_only(deployed_db):
    result = run_checks(deployed_db, read_only=True)
    assert result.passed and not any(c.name.startswith("rls.") for c in result.checks)


def test_cli_outputs_and_exit_codes(deployed_db, tmp_path):
    junit = tmp_path / "smoke.xml"
    r = run_script("smoke.py", "--dsn", deployed_db, "--junit", str(junit))
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].startswith("PASS ") and "checks passed, 1 warn in" in lines[-1]
    # The toggle hazard is a WARN line with the backend's fix, not a failure.
    assert [line for line in lines if not line.startswith("PASS ")][:-1] == [
        next(
            line
            for line in lines
            if line.startswith("WARN  contract.toggle_upsert: ") and '.update({is_enabled}).eq("user_id"' in line
        )
    ]
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0" and suite.get("skipped") == "1" and int(suite.get("tests")) >= 40
    warned = [case for case in suite if case.find("skipped") is not None]
    assert [w.get("name") for w in warned] == ["contract.toggle_upsert"]
    assert warned[0].find("skipped").get("message").startswith("warn: ")
    doc = json.loads(run_script("smoke.py", "--json", "--dsn", deployed_db).stdout)
    assert doc["passed"] is True and set(doc) == {"passed", "counts", "checks", "duration_ms"}
    assert doc["counts"] == {"passed": len(doc["checks"]) - 1, "failed": 0, "skipped": 0, "warn": 1}
    assert all(
        set(c) == {"name", "status", "passed", "detail"} and c["passed"] == (c["status"] == "passed")
        for c in doc["checks"]
    )
    assert run_script("smoke.py").returncode == 2
    r = run_script("smoke.py", "--dsn", deployed_db, "--junit", str(tmp_path / "missing-dir" / "x.xml"))
    assert r.returncode == 2 and "cannot write the JUnit report" in r.stderr
    assert run_script("smoke.py", "--dsn", "postgresql://x@127.0.0.1:1/x").returncode == 2
    # A defect: exit 1, with the check that caught it failed in the JSON.
    defect, sabotage, check = next(s for s in SABOTAGE if s[0] not in ROLE_SABOTAGE)
    with db.connect(deployed_db) as c:
        c.execute(sabotage)
    r = run_script("smoke.py", "--json", "--dsn", deployed_db, env={"INTEGRATION_ENCRYPTION_SECRET": "smoke-secret"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert check in {c["name"] for c in json.loads(r.stdout)["checks"] if c["status"] == "failed"}, defect


def test_secret_round_trip_check(deployed_db, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("correct horse battery staple\n")
    secret_file.chmod(0o600)
    r = run_script("smoke.py", "--json", "--dsn", deployed_db, "--secret-file", str(secret_file))
    checks = {c["name"]: c["passed"] for c in json.loads(r.stdout)["checks"]}
    assert r.returncode == 0 and checks["crypto.roundtrip"] is True
    assert "correct horse" not in r.stdout + r.stderr


def test_smoke_catches_an_undeployed_database(empty_db):
    r = run_script("smoke.py", "--dsn", empty_db)
    assert r.returncode == 1 and "FAIL  tables.present" in r.stdout


def test_hand_applied_005_is_taken_over_and_its_differences_reported(supabase_db):
    """Production may already hold 005 pasted by hand: `up` succeeds without losing a row,
    replaces the policies with the bundle's, and smoke names what it cannot reconcile itself."""
    from tests.utils.db import FIXTURES, deploy

    with db.connect(supabase_db) as c:
        c.execute((FIXTURES / "hand_applied_005.sql").read_text())
        uid = c.execute(
            "INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'h@example.invalid') RETURNING id"
        ).fetchone()[0]
        c.execute(f"INSERT INTO {T} (user_id, encrypted_api_key) VALUES (%s, 'kept')", (uid,))
    deploy(supabase_db)
    with db.connect(supabase_db) as c:
        assert c.execute(f"SELECT encrypted_api_key FROM {T}").fetchall() == [("kept",)]
    failed = failing(run_checks(supabase_db))
    assert set(failed) == {"integrations.columns"}, failed
    assert "is_valid is nullable, expected NOT NULL" in failed["integrations.columns"]
