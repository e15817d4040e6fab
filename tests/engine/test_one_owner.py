"""One database, one owner, judged by the real Pulumi CLI: a second stack never takes a database
over silently, a stack moved to another database deploys there, a revert made behind Pulumi's back
is applied again by the next up, and a target changed under a deployed stack changes nothing.

Each scenario runs on PostgreSQL 15 with target postgres and on 18 with target supabase (the
`diagonal` marker): both versions and both targets, at half the cost of all four."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.utils.scripts import run_script
from tests.utils.targets import Target, deployed, refused_unchanged
from x402db import ROOT

pytestmark = pytest.mark.diagonal

RUNBOOK = ROOT / "docs" / "runbooks" / "deploy.md"
UUID = re.compile(r"takeOverFrom ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _ledger(target: Target) -> list[str]:
    return [r[0] for r in target.query("SELECT version FROM x402_private.schema_migrations ORDER BY 1")]


def _owner(target: Target) -> tuple | None:
    rows = target.query(
        "SELECT project, stack FROM x402_private.stack_owner"
        if target.query("SELECT to_regclass('x402_private.stack_owner') IS NOT NULL")[0][0]
        else "SELECT 1 WHERE false"
    )
    return tuple(rows[0]) if rows else None


def _migrate(target: Target, *args: str, dsn: str | None = None):
    return run_script(
        "migrate.py",
        *args,
        "--dsn",
        dsn or target.dsn,
        "--target",
        target.kind,
        env={"PGPASSFILE": os.environ["PGPASSFILE"]},
    )


def _quoted(marker: str) -> str:
    return RUNBOOK.read_text().split(f"<!-- {marker} -->", 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]


def _comparable(text: str) -> str:
    """Output with what differs from run to run (ids, times, who and where) made equal."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    return re.sub(r"since \d{4}-\d\d-\d\d \d\d:\d\d UTC, by [^()]*\([^()]*\)\)", "since <t>)", text)


def test_a_second_stack_is_refused_until_it_takes_over_explicitly(project, target):
    deployed(project, target, "prod")
    before = target.snapshot()

    project.init("prod-copy", target.config(), target.server.password)
    preview = project.run("preview", "--stack", "prod-copy")
    up = project.run("up", "--yes", "--stack", "prod-copy")
    for run in (preview, up):
        refused_unchanged(target, before, run, "is deployed by Pulumi stack x402-openrouter-db/prod ", "takeOverFrom")
    assert "created" not in up.stdout, up.output
    assert _comparable(_quoted("second-stack")) in _comparable(up.output), "the runbook's quote is not the output"
    # The refused stack holds nothing, so its destroy has nothing of the first stack's to drop.
    project.run("destroy", "--yes", "--stack", "prod-copy").ok()
    assert target.snapshot() == before
    project.run("preview", "--refresh", "--expect-no-changes", "--stack", "prod").ok()

    deployment = UUID.search(up.output).group(1)
    project.run("config", "set", "takeOverFrom", deployment, "--stack", "prod-copy").ok()
    project.run("up", "--yes", "--stack", "prod-copy").ok()
    assert _owner(target) == ("x402-openrouter-db", "prod-copy")
    assert target.snapshot() == before  # a takeover changes the owner row, nothing else

    # The first stack no longer believes the database is its own, and reverts nothing there.
    first_up = project.run("up", "--yes", "--stack", "prod")
    assert first_up.returncode != 0 and "x402-openrouter-db/prod-copy" in first_up.output, first_up.output
    first_destroy = project.run("destroy", "--yes", "--stack", "prod")
    refused_unchanged(target, before, first_destroy, "x402-openrouter-db/prod-copy", "pulumi stack rm --force prod")
    assert _comparable(_quoted("old-stack-destroy")) in _comparable(first_destroy.output)

    project.run("destroy", "--yes", "--stack", "prod-copy").ok()
    assert _ledger(target) == [] and _owner(target) is None


def test_an_out_of_band_revert_is_applied_again_by_the_next_up(project, target):
    deployed(project, target, "dev")
    down = _migrate(target, "down")  # a bare down: 005 only
    assert down.returncode == 0, down.stdout + down.stderr
    assert "005" not in _ledger(target)

    preview = project.run("preview", "--expect-no-changes")
    assert preview.returncode != 0, preview.output
    up = project.run("up", "--yes").ok()
    assert "005" in _ledger(target), up.output
    project.run("preview", "--refresh", "--expect-no-changes").ok()

    # What a down killed after its drops committed leaves (tests/database/test_engine_kill.py
    # kills one for real): the preview says what up will do, a refusal, not "nothing to do".
    target.query("UPDATE x402_private.schema_migrations SET state = 'reverting' WHERE version = '005'")
    preview = project.run("preview")
    assert preview.returncode != 0 and "half-reverted" in preview.output, preview.output
    assert "nothing to do" not in preview.output, preview.output


def test_a_moved_stack_deploys_on_its_new_database_and_reverts_the_old_one(project, target):
    deployed(project, target, "dev")
    moved = Target(target.server, target.kind)  # a fresh, empty database of the same kind
    try:
        project.run("config", "set", "database", moved.database).ok()
        preview = project.run("preview", "--diff").ok()
        assert "(replace)" in preview.stdout and "~ identity" in preview.stdout, preview.stdout
        if target.kind == "supabase":  # the runbook quotes a Supabase project's (no 000/001 there)
            for line in _quoted("moved-stack").splitlines():
                assert _comparable_move(line) in _comparable_move(preview.stdout), line
        project.run("up", "--yes").ok()
        assert _ledger(moved) == _migrations_of(target.kind)
        assert _owner(moved) == ("x402-openrouter-db", "dev")
        assert _ledger(target) == [] and _owner(target) is None
        project.run("preview", "--refresh", "--expect-no-changes").ok()
    finally:
        moved.drop()


def _comparable_move(text: str) -> str:
    return re.sub(r'"[^"]*:\d+/t_[0-9a-f]+"', '"<where>"', text)


def _migrations_of(kind: str) -> list[str]:
    return ["000", "001", "005"] if kind == "postgres" else ["005"]  # Supabase has the platform and app tables


def test_a_target_changed_under_a_deployed_stack_changes_nothing(project, target):
    deployed(project, target, "dev")
    before = target.snapshot()
    other = {"target": "supabase", "superuser": "false"} if target.kind == "postgres" else {"target": "postgres"}
    project.run("config", "set-all", *(f"--plaintext={k}={v}" for k, v in other.items())).ok()
    for args in (("preview",), ("up", "--yes")):
        refused_unchanged(target, before, project.run(*args), "ledger records migrations of target", "target")
    project.run("config", "set-all", *(f"--plaintext={k}={v}" for k, v in target.config().items())).ok()
    # Nothing of the refused run stayed in state: refresh and preview are clean at once.
    project.run("refresh", "--yes").ok()
    project.run("preview", "--refresh", "--expect-no-changes").ok()
    assert target.snapshot() == before


# The runbook's way out, run as written: the old resources wait in state as pending deletes that
# share their replacements' URNs, so `pulumi state delete` cannot name them.
FORGET_OLD = (
    "import json,sys; s=json.load(open(sys.argv[1])); d=s['deployment'];"
    " d['resources']=[r for r in d['resources'] if not r.get('delete')];"
    " json.dump(s, open(sys.argv[1], 'w'))"
)


@pytest.mark.parametrize("server", ["pg18"], indirect=True)
@pytest.mark.parametrize("target", ["supabase"], indirect=True)
def test_a_stack_moved_off_a_database_that_is_gone_refuses_then_the_runbook_way_out_works(project, target):
    deployed(project, target, "dev")
    moved = Target(target.server, target.kind)
    try:
        project.run("config", "set", "database", moved.database).ok()
        target.drop()  # the old database is gone for good
        up = project.run("up", "--yes")
        assert up.returncode != 0 and "cannot be reached" in up.output and "pulumi stack export" in up.output, up.output
        assert target.server.password not in up.output

        state = project.base / "state.json"
        project.run("stack", "export", "--file", str(state)).ok()
        subprocess.run([sys.executable, "-c", FORGET_OLD, str(state)], check=True)
        project.run("stack", "import", "--file", str(state)).ok()
        state.unlink()
        project.run("up", "--yes").ok()
        project.run("preview", "--refresh", "--expect-no-changes").ok()
        assert _ledger(moved) == _migrations_of(moved.kind)
        assert _owner(moved) == ("x402-openrouter-db", "dev")
        assert FORGET_OLD in RUNBOOK.read_text()
    finally:
        moved.drop()
