"""One database, one owner, judged by the real Pulumi CLI: a second stack never takes a database
over silently, a stack moved to another database deploys there, a revert made behind Pulumi's back
is applied again by the next up, and a target changed under a deployed stack changes nothing.

Each scenario runs on PostgreSQL 15 with target postgres and on 18 with target supabase (the
`diagonal` marker): both versions and both targets, at half the cost of all four."""

from __future__ import annotations

import os
import re

import pytest

from tests.utils.scripts import run_script
from tests.utils.targets import Target, deployed, refused_unchanged

pytestmark = pytest.mark.diagonal

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


def test_a_second_stack_is_refused_until_it_takes_over_explicitly(project, target):
    deployed(project, target, "first")
    before = target.snapshot()

    project.init("second", target.config(), target.server.password)
    preview = project.run("preview", "--stack", "second")
    up = project.run("up", "--yes", "--stack", "second")
    for run in (preview, up):
        refused_unchanged(target, before, run, "is deployed by Pulumi stack x402-openrouter-db/first", "takeOverFrom")
    assert "created" not in up.stdout, up.output
    # The refused stack holds nothing, so its destroy has nothing of the first stack's to drop.
    project.run("destroy", "--yes", "--stack", "second").ok()
    assert target.snapshot() == before
    project.run("preview", "--refresh", "--expect-no-changes", "--stack", "first").ok()

    deployment = UUID.search(up.output).group(1)
    project.run("config", "set", "takeOverFrom", deployment, "--stack", "second").ok()
    project.run("up", "--yes", "--stack", "second").ok()
    assert _owner(target) == ("x402-openrouter-db", "second")
    assert target.snapshot() == before  # a takeover changes the owner row, nothing else
    taken = before

    # The first stack no longer believes the database is its own, and reverts nothing there.
    first_up = project.run("up", "--yes", "--stack", "first")
    assert first_up.returncode != 0 and "x402-openrouter-db/second" in first_up.output, first_up.output
    first_destroy = project.run("destroy", "--yes", "--stack", "first")
    refused_unchanged(target, taken, first_destroy, "x402-openrouter-db/second", "pulumi stack rm --force first")

    project.run("destroy", "--yes", "--stack", "second").ok()
    assert _ledger(target) == [] and _owner(target) is None


def test_an_out_of_band_revert_is_applied_again_by_the_next_up(project, target):
    deployed(project, target, "dev")
    _migrate(target, "down").check_returncode()  # a bare down: 005 only
    assert "005" not in _ledger(target)

    preview = project.run("preview", "--expect-no-changes")
    assert preview.returncode != 0, preview.output
    up = project.run("up", "--yes").ok()
    assert "005" in _ledger(target), up.output
    project.run("preview", "--refresh", "--expect-no-changes").ok()


def test_a_moved_stack_deploys_on_its_new_database_and_reverts_the_old_one(project, target):
    deployed(project, target, "dev")
    moved = Target(target.server, target.kind)  # a fresh, empty database of the same kind
    try:
        project.run("config", "set", "database", moved.database).ok()
        preview = project.run("preview", "--diff").ok()
        assert "replace" in preview.stdout, preview.stdout
        project.run("up", "--yes").ok()
        assert _ledger(moved) == _migrations_of(target.kind)
        assert _owner(moved) == ("x402-openrouter-db", "dev")
        assert _ledger(target) == [] and _owner(target) is None
        project.run("preview", "--refresh", "--expect-no-changes").ok()
    finally:
        moved.drop()


def _migrations_of(kind: str) -> list[str]:
    return ["000", "001", "005"] if kind == "postgres" else ["001", "005"]


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
