"""The real Pulumi engine as the judge: the CLI that `make pulumi-tools` builds, its Python language
host and the postgresql provider plugin, run offline against PostgreSQL 15 and 18, on plain
postgres (connecting as the cluster's superuser) and on the Supabase fixture (connecting as the
non-superuser `postgres`). Nothing here mocks Pulumi: every assertion reads what the CLI printed,
what it left in state, or what the database holds."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.utils.deploy_page import page_command
from tests.utils.drifts import DRIFTS
from tests.utils.paths import FIXTURES
from tests.utils.real_pulumi import Project
from tests.utils.scripts import run_script
from tests.utils.targets import Target, deployed, refused_unchanged
from x402db import ROOT

RUNBOOK = ROOT / "docs" / "runbooks" / "deploy.md"
PROJECT = "x402-openrouter-db"


def plan_summary(target: Target, *args: str) -> str:
    r = run_script(
        "migrate.py",
        "plan",
        "--dsn",
        target.dsn,
        "--target",
        target.kind,
        *args,
        env={"PGPASSFILE": os.environ["PGPASSFILE"]},
    )
    return next(
        line
        for line in r.stdout.splitlines()
        if line.startswith("plan: ") and "strongest locks" in line or line.endswith("nothing to do")
    )


# --- preview, up, no-op ------------------------------------------------------------------------


@pytest.mark.diagonal
def test_preview_changes_nothing_and_shows_the_plan(project, target):
    project.init("test", target.config(), target.server.password)
    before = target.snapshot()
    r = project.run("preview", "--diff").ok()
    assert target.snapshot() == before
    summary = plan_summary(target)
    assert summary in r.output, r.output
    assert "x402:SqlMigration" in r.output and "postgresql:index/grant:Grant" in r.output


@pytest.mark.diagonal
def test_up_deploys_what_smoke_verifies_then_refresh_and_preview_see_no_change(project, target):
    """A clean deployment refreshes clean on every server: on 17+ GRANT ALL gives MAINTAIN too,
    and the Grant the program declares must say so, or refresh reads it back as a change."""
    _deploys_and_refreshes_clean(project, target)


# Target supabase, as Supabase runs it: the Grant that MAINTAIN concerns is declared alike for both.
@pytest.mark.parametrize("server", ["pg17"], indirect=True)
@pytest.mark.parametrize("target", ["supabase"], indirect=True)
def test_a_clean_deployment_refreshes_clean_on_17_the_version_supabase_runs(project, target):
    _deploys_and_refreshes_clean(project, target)


def _deploys_and_refreshes_clean(project, target) -> None:
    deployed(project, target)
    project.run("preview", "--refresh", "--expect-no-changes").ok()
    project.run("refresh", "--yes").ok()
    project.run("preview", "--expect-no-changes").ok()
    grant = project.resources()["openrouter-grant-service_role-user_openrouter_integrations"]
    every = [p for (p,) in target.query("SELECT privilege_type FROM aclexplode(acldefault('r', 10))")]
    assert sorted(grant["outputs"]["privileges"]) == sorted(every)
    assert ("MAINTAIN" in every) == (target.server_version >= 170000)
    smoke = run_script("smoke.py", "--full", "--dsn", target.dsn, env={"PGPASSFILE": os.environ["PGPASSFILE"]})
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    status = run_script("migrate.py", "status", "--dsn", target.dsn, env={"PGPASSFILE": os.environ["PGPASSFILE"]})
    assert status.returncode == 0, status.stdout + status.stderr
    resources = project.resources()
    versions = sorted(r["outputs"]["version"] for r in resources.values() if r["type"].endswith("SqlMigration"))
    ledger = [v for (v,) in target.query("SELECT version FROM x402_private.schema_migrations ORDER BY 1")]
    assert versions == ledger


@pytest.mark.diagonal
def test_no_secret_in_state_or_backend_files(project, target):
    deployed(project, target)
    password = target.server.password
    exported = project.run("stack", "export").ok().stdout
    files = project.backend_bytes()
    for text in (exported.encode(), files):
        assert password.encode() not in text
        assert b"password=" not in text  # a DSN with a password, in any form
    assert b"ciphertext" in files  # the secrets are there, encrypted


# --- an edited migration -----------------------------------------------------------------------


@pytest.mark.diagonal
def test_edited_applied_migration_is_refused_and_changes_nothing(project, target):
    deployed(project, target)
    up = project.dir / "sql" / "005_add_openrouter_integration.up.sql"
    up.write_text(up.read_text() + "\nGRANT SELECT ON public.user_openrouter_integrations TO anon;\n")
    before = target.snapshot()
    # The preflight runs the plan before anything, and the plan names the edited file; so does
    # an unattended up that skips the preview.
    for r in (project.run("preview"), project.run("up", "--yes"), project.run("up", "--yes", "--skip-preview")):
        assert r.returncode != 0
        assert "005_add_openrouter_integration is drifted" in r.output, r.output
        assert "until the original file is restored" in r.output, r.output
    assert target.snapshot() == before


# --- destroy -----------------------------------------------------------------------------------


@pytest.mark.diagonal
def test_destroy_refuses_while_protected(project, target):
    deployed(project, target, protect="true")
    before = target.snapshot()
    refused_unchanged(target, before, project.run("destroy", "--yes"), "protected")


@pytest.mark.diagonal
def test_destroy_refuses_while_a_key_is_stored_then_reverts_in_runbook_order(project, target):
    deployed(project, target)
    user = target.query("INSERT INTO auth.users (id) VALUES (gen_random_uuid()) RETURNING id")[0][0]
    target.query(
        "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'aa:bb')", (user,)
    )
    target.query(
        "CREATE TABLE public.business_orders (id int PRIMARY KEY); INSERT INTO public.business_orders VALUES (1), (2)"
    )
    before = target.snapshot()
    r = project.run("destroy", "--yes")
    assert r.returncode != 0
    assert "allowDataLoss" in r.output or "allow-data-loss" in r.output, r.output
    assert target.snapshot() == before
    if target.kind == "supabase":  # the runbook quotes a Supabase project's refusal (no 000/001 there)
        quoted = (
            RUNBOOK.read_text().split("<!-- destroy-refusal -->", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]
        )
        assert quoted in r.output, "the runbook's quoted refusal is not what pulumi destroy prints"

    project.run("config", "set", "allowDataLoss", "true").ok()
    project.run("up", "--yes", "--skip-preview").ok()
    r = project.run("destroy", "--yes").ok()
    order = [m.group(1) for m in re.finditer(r"^ -\s+\S+ (\S+) deleted", r.stdout, re.M)]
    assert {
        "openrouter-destroy-guard",
        "openrouter-grant-service_role-user_openrouter_integrations",
        "openrouter-migration-005",
        "openrouter-preflight",
    } <= set(order), r.stdout
    documented = [n for n in runbook_destroy_order() if n in set(order)]
    assert [n for n in order if n in documented] == [n for n in documented if n in order]
    assert target.query("SELECT count(*) FROM public.business_orders")[0][0] == 2
    assert target.query("SELECT to_regclass('public.user_openrouter_integrations')")[0][0] is None

    project.run("config", "set", "allowDataLoss", "false").ok()
    project.run("up", "--yes", "--skip-preview").ok()
    assert target.query("SELECT to_regclass('public.user_openrouter_integrations')")[0][0] is not None


def runbook_destroy_order() -> list[str]:
    text = RUNBOOK.read_text()
    block = text.split("<!-- destroy-order: first to last -->", 1)[1].split("<!-- /destroy-order -->", 1)[0]
    return re.findall(r"^\d+\. `([^`]+)`", block, re.M)


# --- the Supabase target alone ------------------------------------------------------------------


@pytest.fixture
def supabase_target(server):
    t = Target(server, "supabase")
    yield t
    t.drop()


# --- kill -9 of pulumi up during CREATE INDEX CONCURRENTLY -------------------------------------

BIG_ROWS = 1_000_000
BUILDING = (
    "SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid)"
    " WHERE a.application_name = 'x402db-pulumi' AND p.datname = %s"
    " AND p.command = 'CREATE INDEX CONCURRENTLY' AND p.phase LIKE 'building index%%'"
)


def _ledger(target: Target) -> dict[str, str]:
    return dict(target.query("SELECT version, state FROM x402_private.schema_migrations"))


def _state_migrations(project: Project) -> dict[str, str]:
    return {
        r["outputs"]["version"]: r["outputs"].get("ledger_state", "applied")
        for r in project.resources().values()
        if r["type"].endswith("x402:SqlMigration")
    }


def _kill_tree(project: Project) -> None:
    """Every process of this project's run (Pulumi starts each plugin in a process group of its
    own): what a crash of the runner machine or of its container leaves."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PULUMI_HOME={project.home}".encode() in environ:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
@pytest.mark.diagonal(param="killed", pairs={("pg15", "cli"), ("pg18", "everything")})
@pytest.mark.parametrize("killed", ["cli", "everything"])
def test_kill_9_during_create_index_concurrently_then_refresh_and_up_converge(project, server, killed):
    target = Target(server, "postgres")
    try:
        assert run_script("migrate.py", "up", "--to", "1", "--dsn", target.admin).returncode == 0
        uid = target.query("INSERT INTO auth.users (email) VALUES ('big@example.invalid') RETURNING id")[0][0]
        target.query(
            "INSERT INTO public.x402_resources (user_id, resource_type, name)"
            " SELECT %s, 'proxy', 'r' || g FROM generate_series(1, %s) g",
            (uid, BIG_ROWS),
        )
        target.query("ANALYZE public.x402_resources")
        project.init("test", target.config(), target.server.password)
        proc = project.popen("up", "--yes", "--skip-preview")
        deadline = time.monotonic() + 300
        with psycopg.connect(target.admin, autocommit=True) as watcher:
            while not (row := watcher.execute(BUILDING, (target.database,)).fetchone()):
                assert proc.poll() is None, f"pulumi up ended before the index build: {proc.stdout.read()}"
                assert time.monotonic() < deadline, "the index build never started"
                time.sleep(0.005)
            if killed == "cli":
                os.kill(proc.pid, signal.SIGKILL)
            else:
                _kill_tree(project)
            proc.wait()
            if killed == "cli":
                # The runbook's command names what is left of the run: at least the provider
                # that is still building the index.
                find = RUNBOOK.read_text().split("<!-- leftover-processes -->", 1)[1].split("```sh\n")[1]
                find = find.split("\n```")[0]
                left = subprocess.run(["bash", "-c", find], cwd=project.dir, capture_output=True, text=True)
                assert "pulumi.dynamic" in left.stdout, left.stdout + left.stderr
            # The backend ends once its statement ends or aborts; the dynamic provider, which
            # Pulumi started in its own process group, outlives a killed CLI and may finish.
            while watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (row[0],)).fetchone():
                time.sleep(0.01)
            time.sleep(0.5)
        _kill_tree(project)  # what is left of the killed run must not race the next command

        # The ledger tells the truth, whichever of the two happened.
        expected = "steps-pending" if killed == "everything" else _ledger(target)["005"]
        assert _ledger(target)["005"] == expected and expected in ("steps-pending", "applied")
        pending = project.export()["deployment"].get("pending_operations", [])
        assert [op["resource"]["urn"].split("::")[-1] for op in pending] == ["openrouter-migration-005"], pending

        # Pulumi's own words: a killed run leaves the stack locked (the file backend's lock is
        # taken by up, refresh and destroy, not by preview), and the message names `pulumi cancel`.
        locked = project.run("refresh", "--yes")
        assert locked.returncode != 0 and "currently locked" in locked.output and "pulumi cancel" in locked.output, (
            locked.output
        )
        project.run("cancel", "--yes").ok()
        # Pulumi cannot know whether the interrupted create finished; non-interactively its
        # documented way out is --clear-pending-creates. The database is not touched by it.
        before = target.snapshot()
        project.run("refresh", "--yes", "--clear-pending-creates").ok()
        assert not project.export()["deployment"].get("pending_operations")
        assert "005" not in _state_migrations(project) and target.snapshot() == before
        # The next up creates 005 again, and its create reads the ledger as migrate.py up does:
        # an applied 005 is taken as it is, a steps-pending one finishes its steps.
        project.run("up", "--yes", "--skip-preview").ok()
        assert set(_ledger(target).values()) == {"applied"}
        assert set(_state_migrations(project).values()) == {"applied"}
        assert target.query(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.idx_x402_resources_openrouter_model'::regclass"
        )[0][0]
        smoke = run_script("smoke.py", "--dsn", target.admin, env={"PGPASSFILE": os.environ["PGPASSFILE"]})
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        project.run("preview", "--expect-no-changes").ok()
    finally:
        _kill_tree(project)
        target.drop()


# --- bad input ---------------------------------------------------------------------------------


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output and "Exception:" not in output, output


@pytest.mark.diagonal
def test_wrong_passphrase_is_refused_and_changes_nothing(project, target):
    project.init("test", target.config(), target.server.password)
    before = target.snapshot()
    wrong = project.base / "wrong-passphrase"
    fd = os.open(wrong, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not the passphrase")
    os.close(fd)
    r = project.run("preview", env=project.env(PULUMI_CONFIG_PASSPHRASE_FILE=str(wrong)))
    assert r.returncode != 0 and "incorrect passphrase" in r.output, r.output
    assert target.snapshot() == before


@pytest.mark.diagonal
@pytest.mark.diagonal(param="case", pairs={("pg15", "wrong-password"), ("pg18", "unreachable-host")})
@pytest.mark.parametrize("case", ["wrong-password", "unreachable-host"])
def test_connection_problems_get_one_line_from_the_preflight(project, target, case):
    config = target.config()
    password = target.server.password
    if case == "wrong-password":
        password = "Wr0ng-but-secret-" + "x" * 8
    else:
        config["port"] = "1"  # nothing listens there
    project.init("test", config, password)
    before = target.snapshot()
    for command in (("preview",), ("up", "--yes")):
        r = project.run(*command)
        assert r.returncode != 0
        lines = [line.strip() for line in r.output.splitlines() if "preflight: cannot connect" in line]
        assert lines, r.output
        reason = "password authentication failed" if case == "wrong-password" else "Connection refused"
        assert all(reason in line for line in lines), lines
        assert all(len(line) < 400 for line in lines)
        assert "table privileges" not in r.output, r.output  # the program's own lookup stays silent
        assert password not in r.output
        _no_traceback(r.output)
    assert target.snapshot() == before


# On 15 only: the preflight's refusal is the program's reading of the target's schemas, the same
# on every version, and the diagonal's other scenarios carry 18.
@pytest.mark.parametrize("server", ["pg15"], indirect=True)
def test_a_preview_that_cannot_plan_fails_and_up_creates_nothing(project, server):
    """The default target is supabase: a newcomer pointing it at a plain PostgreSQL, with a backend
    role, once saw a preview say "+12 to create" and an up that made the LOGIN role and then failed."""
    target = Target(server, "postgres")
    role = f"x402_backend_{target.database}"  # roles are the cluster's: other tests make x402_backend
    try:
        config = target.config(target="supabase", superuser="false", backendRole=role)
        project.init("test", config, target.server.password)
        project.run("config", "set", "--secret", "backendRolePassword", input="Backend-secret-1").ok()
        before = target.snapshot()
        # Unattended runs skip the preview (docs/runbooks/deploy.md): the preflight's Check still
        # runs first in the update itself, before the backend role or any migration.
        for command in (("preview",), ("up", "--yes"), ("up", "--yes", "--skip-preview")):
            r = project.run(*command)
            refused_unchanged(target, before, r, "preflight refused, nothing was changed", "auth.users")
            if "--skip-preview" in command:  # only what lives in state alone: stack, component, provider
                made = re.findall(r"^\s*\+\s+(\S+) \S+ created", r.stdout, re.M)
                assert set(made) <= {"pulumi:pulumi:Stack", "x402:database:OpenRouterIntegration"} | {
                    "pulumi:providers:postgresql"
                }, r.output
            else:
                assert "created" not in r.stdout.split("Resources:")[-1], r.output
            _no_traceback(r.output)
        assert target.query("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,))[0][0] == 0
    finally:
        target.drop()


@pytest.mark.diagonal
def test_a_config_rule_is_refused_without_a_traceback(project, target):
    project.init("test", target.config(port="6543"), target.server.password)
    before = target.snapshot()
    for command in (("preview",), ("up", "--yes")):
        r = project.run(*command)
        refused_unchanged(target, before, r, "port 6543 is Supabase's transaction pooler")
        _no_traceback(r.output)


@pytest.mark.diagonal
def test_missing_plugin_is_named_and_changes_nothing(project, target, tmp_path):
    partial = tmp_path / "bin"
    partial.mkdir()
    for tool in project.tools.iterdir():
        if tool.name != "pulumi-resource-postgresql":
            (partial / tool.name).symlink_to(tool.resolve())
    project.tools = partial
    project.init("test", target.config(), target.server.password)
    before = target.snapshot()
    refused_unchanged(
        target, before, project.run("up", "--yes"), "no resource plugin 'pulumi-resource-postgresql' found"
    )


# --- hand drift --------------------------------------------------------------------------------


@pytest.mark.diagonal
@pytest.mark.diagonal(param="grantee", pairs={("pg15", "PUBLIC"), ("pg18", "anon")})
@pytest.mark.parametrize("grantee", ["anon", "PUBLIC"])
def test_granting_anon_by_hand_shows_in_refresh_and_up_repairs_it(project, target, grantee):
    """Directly, or through PUBLIC (no ACL entry of anon's own): up revokes it either way."""
    deployed(project, target)
    target.query(f"GRANT SELECT ON public.user_openrouter_integrations TO {grantee}")
    r = project.run("preview", "--refresh").ok()
    assert "openrouter-migration-005" in r.output and "update" in r.output, r.output
    project.run("up", "--yes", "--refresh", "--skip-preview").ok()
    assert not target.query("SELECT has_table_privilege('anon', 'public.user_openrouter_integrations', 'SELECT')")[0][0]
    project.run("preview", "--refresh", "--expect-no-changes").ok()


@pytest.mark.diagonal
def test_dropping_the_user_policy_by_hand_shows_in_refresh_and_up_refuses_with_the_reason(project, target):
    deployed(project, target)
    policy = target.query(
        "SELECT policyname FROM pg_policies WHERE tablename = 'user_openrouter_integrations'"
        " AND 'authenticated' = ANY(roles)"
    )[0][0]
    target.query(f'DROP POLICY "{policy}" ON public.user_openrouter_integrations')
    r = project.run("preview", "--refresh").ok()
    assert "openrouter-migration-005" in r.output and "update" in r.output, r.output
    before = target.snapshot()
    r = project.run("up", "--yes", "--refresh", "--skip-preview")
    assert r.returncode != 0
    assert "no longer matches the database, so pulumi up changed nothing" in r.output and "policy" in r.output, r.output
    _no_traceback(r.output)
    assert target.snapshot() == before


TEST_MIGRATIONS = FIXTURES / "migrations"


def _smoke_of(project: Project, dsn: str) -> subprocess.CompletedProcess:
    """Read-only smoke from the project's own copy of the bundle (its sql/ holds 006)."""
    return subprocess.run(
        [sys.executable, "-c", "from x402db.cli.smoke import cli; cli()", "--read-only", "--json", "--dsn", dsn],
        cwd=project.dir,
        env={**os.environ, "PYTHONPATH": str(project.dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _updated(output: str) -> set[str]:
    """The resources a preview would update or replace."""
    return set(re.findall(r"^\s*[~+-]+\s+\S+ (\S+) (?:update|replace)", output, re.M))


@pytest.mark.diagonal
def test_a_new_migration_is_its_files_plan_up_smoke_refresh_and_down(project, target):
    """A migration that no Python names, added as files to a copy of the tree: plan lists it, up
    makes its resource and applies it, read-only smoke judges it from its own SQL, refresh shows
    drift in its objects on its own resource, and destroy reverts it."""
    for path in TEST_MIGRATIONS.glob("006_*.sql"):
        shutil.copy2(path, project.dir / "sql" / path.name)
    project.init("test", target.config(), target.server.password)
    r = project.run("preview").ok()
    assert "openrouter-migration-006" in r.output and "006 apply" in r.output, r.output
    project.run("up", "--yes", "--skip-preview").ok()
    assert target.query("SELECT version FROM x402_private.schema_migrations WHERE version = '006'") == [("006",)]
    smoke = _smoke_of(project, target.dsn)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    doc = json.loads(smoke.stdout)
    assert {"name": "expected.006", "status": "passed"}.items() <= next(
        c for c in doc["checks"] if c["name"] == "expected.006"
    ).items()
    assert "openrouter-migration-006" not in _updated(project.run("preview", "--refresh").ok().output)
    # Drift in 006's own table is 006's, named by smoke and shown on 006's resource.
    target.query("GRANT SELECT ON public.openrouter_usage TO anon")
    smoke = _smoke_of(project, target.dsn)
    assert smoke.returncode == 1 and "006: table_acl public.openrouter_usage to anon" in smoke.stdout, smoke.stdout
    r = project.run("preview", "--refresh")
    assert "openrouter-migration-006" in _updated(r.output), r.output
    # A privilege, but not one the access model governs: re-granting cannot prove it repaired.
    r = project.run("up", "--yes", "--refresh", "--skip-preview")
    assert r.returncode != 0 and "would not repair it" in r.output and "006:" in r.output, r.output
    assert target.query("SELECT has_table_privilege('anon', 'public.openrouter_usage', 'SELECT')") == [(True,)]
    target.query("REVOKE SELECT ON public.openrouter_usage FROM anon")
    assert "openrouter-migration-006" not in _updated(project.run("preview", "--refresh").ok().output)
    project.run("destroy", "--yes", "--skip-preview").ok()
    assert target.query("SELECT to_regclass('public.openrouter_usage')") == [(None,)]


@pytest.mark.diagonal
def test_every_drift_class_fails_read_only_smoke_and_shows_in_refresh(project, target):
    """Each kind of drift the derived comparison covers, made by hand on one deployed stack: read-only
    smoke names every object, refresh shows 005's resource changed, and up refuses with the same
    lines and changes nothing. Among them the two that passed every check before: the keys table
    handed to authenticated (an owner bypasses RLS, so any signed-in user read every key; no grant
    repairs it) and the trigger function rewritten to copy each key into a table anon can read while
    still setting updated_at. (Three trigger states exclude each other: replica stands for them.)"""
    deployed(project, target)
    drifts = [d for d in DRIFTS if d[0] not in ("always trigger", "disabled trigger")]
    for _label, statement, _line in drifts:
        target.query(statement)
    lines = [line.format(owner=target.user) for _label, _statement, line in drifts]
    smoke = _smoke_of(project, target.dsn)
    assert smoke.returncode == 1, smoke.stdout + smoke.stderr
    reported = "\n".join(c["detail"] for c in json.loads(smoke.stdout)["checks"] if c["status"] == "failed")
    assert [line for line in lines if line not in reported] == [], reported
    r = project.run("preview", "--refresh")
    assert "openrouter-migration-005" in _updated(r.output), r.output
    before = target.snapshot()
    r = project.run("up", "--yes", "--refresh", "--skip-preview")
    assert r.returncode != 0 and "pulumi up changed nothing" in r.output, r.output
    assert [line for line in lines if line not in r.output] == [], r.output
    assert target.snapshot() == before


# --- the engine's config rules, on the documented stacks --------------------------


def test_config_rules_of_the_real_cli_and_of_the_program(project, supabase_target):
    target = supabase_target
    project.run("stack", "init", "dev", "--secrets-provider", "passphrase").ok()
    project.run(*page_command("dev", "pulumi config set-all")[1:]).ok()
    before = target.snapshot()
    # The deploy page's dev stack config alone lacks only the secret password, which the engine requires.
    r = project.run("preview")
    assert r.returncode != 0 and "is missing configuration value 'password'" in r.output, r.output
    # A secret key given in plaintext: `config set` refuses it, and if forced, so does preview.
    r = project.run("config", "set", "password", "plain-text-pw")
    assert r.returncode != 0 and "looks like a secret" in r.output and "plain-text-pw" not in r.output, r.output
    project.run("config", "set", "--plaintext", "password", "plain-text-pw").ok()
    r = project.run("preview")
    assert r.returncode != 0 and "must be encrypted" in r.output, r.output
    assert "plain-text-pw" not in r.output
    # A declared integer is checked by the engine too.
    project.run("config", "set", "--secret", "password", input=target.server.password).ok()
    project.run("config", "set", "port", "fifty").ok()
    r = project.run("preview")
    assert r.returncode != 0 and "port" in r.output and "integer" in r.output, r.output
    # backendRole without its undeclared optional secret: the program's own rule, one line.
    for key, value in target.config().items():
        project.run("config", "set", key, value).ok()
    project.run("config", "set", "backendRole", "x402_backend").ok()
    r = project.run("preview")
    assert r.returncode != 0 and "backendRolePassword is required with backendRole" in r.output, r.output
    # Two secrets wrong at once, each named on its own line by the program: an empty password (the
    # engine stores one without complaint) and the undeclared backendRolePassword in plaintext,
    # which only the secret keys the engine hands the program can tell.
    project.run("config", "set", "--secret", "password", input="").ok()
    project.run("config", "set", "--plaintext", "backendRolePassword", "b4ckend-Pw").ok()
    r = project.run("preview")
    assert r.returncode != 0 and "password is empty" in r.output, r.output
    assert "backendRolePassword is stored in plaintext" in r.output and "b4ckend-Pw" not in r.output, r.output
    project.run("config", "set", "--secret", "password", input=target.server.password).ok()
    project.run("config", "set", "--secret", "backendRolePassword", input="b4ckend-Pw").ok()
    if target.server_version < 160000:
        project.run("preview").ok()
    assert target.snapshot() == before


@pytest.mark.diagonal
def test_a_key_stored_after_the_destroy_guard_checked_leaves_every_grant_in_place(project, target):
    """The guard checks once; a key stored after that and before 005's own down must still find
    destroy refused with nothing changed: the grants are forgotten by destroy, never revoked."""
    from x402db.migrate.engine import ADVISORY_LOCK_KEY

    deployed(project, target)
    with psycopg.connect(target.admin, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))  # 005's down waits here
        proc = project.popen("destroy", "--yes")
        deadline = time.monotonic() + 120
        while not holder.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'x402db-pulumi' AND datname = %s",
            (target.database,),
        ).fetchone():
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read() if proc.poll() is not None else "005 never started"
            )
            time.sleep(0.01)
        user = holder.execute("INSERT INTO auth.users (id) VALUES (gen_random_uuid()) RETURNING id").fetchone()[0]
        holder.execute(
            "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'aa:bb')", (user,)
        )
        holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "nothing changed" in out, out
    for role, privilege in (("service_role", "DELETE"), ("authenticated", "SELECT")):
        assert target.query(
            "SELECT has_table_privilege(%s, 'public.user_openrouter_integrations', %s)", (role, privilege)
        )[0][0], role
    assert target.query("SELECT count(*) FROM public.user_openrouter_integrations")[0][0] == 1


# --- an upgrade from the previous release ------------------------------------------------------


def test_a_stack_the_previous_release_deployed_takes_this_release_and_destroys(project, server):
    """The previous release's 000 recorded its own down checksum in the ledger. This release's 000
    supersedes that up text and ships a newer down: `up` takes both texts into state and changes
    nothing, and `destroy` runs the newer down, which the ledger row must not refuse as edited."""
    from tests.utils.migrations import PREVIOUS_RELEASE

    sql_dir = project.dir / "sql"
    current = {p: (sql_dir / p).read_text() for p in ("000_platform_compat.up.sql", "000_platform_compat.down.sql")}
    for name in current:
        r = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{PREVIOUS_RELEASE}:sql/{name}"], capture_output=True, text=True
        )
        if r.returncode:
            pytest.skip(f"release {PREVIOUS_RELEASE} is not in this checkout's git history")
        (sql_dir / name).write_text(r.stdout)
    target = Target(server, "postgres")
    try:
        deployed(project, target)
        old_checksum = target.query("SELECT checksum FROM x402_private.schema_migrations WHERE version = '000'")[0][0]
        for name, text in current.items():
            (sql_dir / name).write_text(text)
        before = target.snapshot()
        project.run("up", "--yes").ok()
        assert target.snapshot() == before  # superseded: the texts go into state, the database is as it was
        project.run("preview", "--expect-no-changes").ok()
        state = next(
            r
            for r in project.resources().values()
            if r["type"].endswith("SqlMigration") and r["outputs"]["version"] == "000"
        )
        assert state["outputs"]["down_sql"] == current["000_platform_compat.down.sql"]
        assert (
            target.query("SELECT checksum FROM x402_private.schema_migrations WHERE version = '000'")[0][0]
            == old_checksum
        )
        r = project.run("destroy", "--yes")
        assert r.returncode == 0, r.output
        assert target.query("SELECT to_regnamespace('auth')")[0][0] is None
        assert target.query("SELECT count(*) FROM x402_private.schema_migrations")[0][0] == 0
    finally:
        target.drop()


# --- a lock held by another session ------------------------------------------------------------

BLOCKED_BOUND_S = 30  # the attack saw preview still waiting after 45 s
KEYS_TABLE = "public.user_openrouter_integrations"


def _waiting(target: Target) -> list[tuple]:
    """Who of ours waits on a lock, and on which statement: what a hung run is stuck on."""
    return target.query(
        "SELECT application_name, left(query, 120) FROM pg_stat_activity"
        " WHERE datname = %s AND wait_event_type = 'Lock' AND application_name LIKE 'x402db%%'",
        (target.database,),
    )


def _bounded(project: Project, target: Target, *args: str):
    started = time.monotonic()
    try:
        r = project.run(*args, timeout=BLOCKED_BOUND_S + 15)
    except subprocess.TimeoutExpired:
        waiting = _waiting(target)
        _kill_tree(project)
        raise AssertionError(
            f"pulumi {' '.join(args)} still waited after {BLOCKED_BOUND_S + 15} s: {waiting}"
        ) from None
    return r, time.monotonic() - started


def _outputs(project: Project) -> dict[str, dict]:
    """Each resource's outputs in state, secrets left out (each save encrypts them anew)."""
    return {
        name: {k: v for k, v in r.get("outputs", {}).items() if not (isinstance(v, dict) and "ciphertext" in v)}
        for name, r in project.resources().items()
    }


def _grant_locks_the_table(target: Target) -> bool:
    """Whether this server's GRANT on a table takes a lock on it (18 does, 15 does not): only then
    has the preflight, which tries the provider's GRANTs, anything to wait for."""
    with psycopg.connect(target.admin) as conn:
        conn.execute(f"GRANT SELECT ON {KEYS_TABLE} TO PUBLIC")
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND relation = %s::regclass", (KEYS_TABLE,)
        ).fetchone()[0]
        conn.rollback()
    return bool(held)


def test_a_lock_held_on_the_keys_table_stops_preview_refresh_and_destroy_at_once(project, supabase_target):
    """A session holding ACCESS EXCLUSIVE on the keys table in an open transaction (a migration by
    hand, a VACUUM FULL): preview, refresh and destroy each stop within seconds with one sentence
    naming the session, never queue behind it, and change nothing; once it ends, preview passes.
    On the Supabase target only: the reads are the same on plain postgres, and each run costs a deploy."""
    target = supabase_target
    deployed(project, target)
    before = target.snapshot()
    state = _outputs(project)
    preview_reads_it = _grant_locks_the_table(target)
    try:
        with psycopg.connect(target.admin) as holder:  # not autocommit: the transaction stays open
            holder.execute(f"LOCK TABLE {KEYS_TABLE} IN ACCESS EXCLUSIVE MODE")
            pid = holder.info.backend_pid
            for args in (("preview",), ("refresh", "--yes"), ("destroy", "--yes")):
                r, took = _bounded(project, target, *args)
                assert took < BLOCKED_BOUND_S, (args, took)
                if args == ("preview",) and not preview_reads_it:
                    r.ok()  # nothing it runs touches the table, so nothing waits
                    continue
                assert r.returncode != 0, r.output
                for words in (f"pid {pid}", "AccessExclusiveLock", KEYS_TABLE, "run it again when that session ends"):
                    assert words in r.output, (args, r.output)
                _no_traceback(r.output)
            holder.rollback()
    finally:
        _kill_tree(project)
    assert target.snapshot() == before
    assert _outputs(project) == state
    project.run("preview", "--expect-no-changes").ok()
