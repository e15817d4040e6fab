"""x402db.fleet.stacks against the real Pulumi CLI: one stack of a fleet, driven through
pulumi.automation from configure to a dead run's lock cleared, with its password read from a
file and never on any process's command line.

One scenario per server version (the `diagonal` marker): each engine run costs seconds, so every
check shares the one stack."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.utils.fleet import ArgvWatcher
from tests.utils.real_pulumi import kill_run
from x402db.fleet.stacks import Stacks

# One pair: the attacks test runs the other (pg18, supabase), and the fleet scenarios run both servers.
pytestmark = pytest.mark.diagonal(pairs={("pg15", "postgres")})


@dataclass(frozen=True)
class FileSecret:
    path: Path

    def read(self) -> str:
        return self.path.read_text()


@dataclass(frozen=True)
class Spec:
    name: str
    config: dict[str, str]
    secrets: dict[str, FileSecret] = field(default_factory=dict)


def test_a_stack_configured_deployed_verified_and_recovered_from_a_dead_run(project, target, monkeypatch):
    env = project.env()
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)  # PGPASSFILE above all: the stack's own password must be what connects
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    password = target.server.password
    source = project.base / "password"
    source.write_text(password)
    source.chmod(0o600)
    spec = Spec("staging", target.config(), {"password": FileSecret(source)})

    # The lab's watcher: every command line, every WATCH_INTERVAL, as any local user can read them.
    watcher = ArgvWatcher([password], project.home).start()
    try:
        stacks = Stacks(project.dir)
        assert not stacks.exists("staging")
        stacks.ensure("staging")
        stacks.ensure("staging")  # a second time is a no-op
        assert stacks.exists("staging")
        # The program's refusal, as the engine prints it under Diagnostics: one line, its cause.
        stacks.configure(Spec("staging", target.config(port="6543"), spec.secrets))
        refused = stacks.preview("staging")
        assert not refused.ok and "\n" not in refused.summary, refused
        assert refused.summary.startswith("invalid stack config: port 6543 is Supabase's transaction pooler"), refused
        stacks.configure(spec)

        preview = stacks.preview("staging")
        assert preview.ok and preview.changes.get("create", 0) > 0, preview.summary + preview.output
        progress: list[str] = []
        up = stacks.up("staging", on_output=progress.append)
        assert up.ok and up.changes.get("create", 0) > 0, up.summary + up.output
        assert any("openrouter-migration-005" in line for line in progress), progress
        outputs = stacks.outputs("staging")
        assert outputs["database"] == target.database and "005" in outputs["migrations"], outputs
        assert stacks.evidence("staging") is None

        evidence = {"release": "0123456789abcdef", "smoke": "ok", "at": "2026-12-07T19:00:00Z"}
        recorded = stacks.record_evidence("staging", evidence)
        assert recorded.ok, recorded.summary + recorded.output
        assert stacks.evidence("staging") == evidence
        after = stacks.preview("staging", expect_no_changes=True)
        assert after.ok and set(after.changes) == {"same"}, after.summary + after.output

        # A run killed with the lock held: its lock outlives it, and refuses the next up in one line.
        assert stacks.lock_holders("staging") == []
        run = project.popen("up", "--yes", "--skip-preview", "--stack", "staging")
        deadline = time.monotonic() + 60
        while not (holders := stacks.lock_holders("staging")):
            assert run.poll() is None, f"pulumi up ended before it was killed: {run.stdout.read()}"
            assert time.monotonic() < deadline, "pulumi up never took the stack's lock"
            time.sleep(0.005)
        kill_run(project.home)
        run.wait()
        assert holders == stacks.lock_holders("staging") and f"pid {run.pid} " in holders[0], holders
        locked = stacks.up("staging")
        assert not locked.ok and "currently locked" in locked.summary and "\n" not in locked.summary, locked
        assert "Traceback" not in locked.output and "code:" not in locked.summary

        cancel = stacks.cancel("staging")
        assert cancel.ok, cancel.summary + cancel.output
        assert stacks.lock_holders("staging") == []
        cleared = stacks.clear_pending("staging")
        assert cleared.ok, cleared.summary + cleared.output
        again = stacks.up("staging")
        assert again.ok and set(again.changes) == {"same"}, again.summary + again.output
        assert stacks.evidence("staging") == evidence
        for outcome in (refused, preview, up, recorded, after, locked, cancel, cleared, again):
            assert password not in outcome.output + outcome.summary
    finally:
        observed = watcher.stop()
        kill_run(project.home)
    assert observed.leaks == [], observed.leaks
    assert observed.secret_writes, "the watcher never saw the secret being set: it samples too slowly"
    # The Pulumi home holds no selected stack: nothing the user's next bare `pulumi up` would act on.
    assert not (project.home / "workspaces").exists() or not any((project.home / "workspaces").iterdir())
