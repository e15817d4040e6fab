"""The fleet against what production does to it, with the real Pulumi CLI: here, a stack lock left
by a dead process that the journal knows nothing of (a worker killed alone takes its pulumi with
it, a `pulumi up` typed by hand and killed), which every later up would meet."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.utils.real_pulumi import kill_run

# One scenario, on one server: the lock is Pulumi's, not the database's.
pytestmark = pytest.mark.diagonal(pairs={("pg18", "supabase")})


def test_a_dead_processs_stack_lock_is_cleared_by_the_next_up(project, target):
    password = target.server.password
    source = project.base / "password"
    source.write_text(password)
    source.chmod(0o600)
    config = target.config()
    project.init("solo", config, password)
    fleet = project.dir / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "targets": {"solo": {**config, "password": {"file": str(source)}}},
                "waves": [{"name": "only", "targets": ["solo"]}],
            }
        )
    )
    locks = project.state / ".pulumi" / "locks"
    run = project.popen("up", "--yes", "--skip-preview", "--stack", "solo")
    deadline = time.monotonic() + 60
    while not list(locks.rglob("*.json")):
        assert run.poll() is None, f"pulumi up ended before it was killed: {run.stdout.read()}"
        assert time.monotonic() < deadline, "pulumi up never took the stack's lock"
        time.sleep(0.005)
    kill_run(project.home)
    run.wait()
    assert list(locks.rglob("*.json")), "the killed up left no lock"

    up = subprocess.run(
        [sys.executable, "-c", "from x402db.cli.fleet import cli; cli()", "up", "--yes", "--json"],
        cwd=project.dir,
        env=project.env(PYTHONPATH=str(project.dir)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(up.stdout or "{}")
    solo = report.get("waves", [{}])[0].get("targets", [{}])[0]
    assert up.returncode == 0 and solo.get("result") == "ok", (solo.get("reason"), up.stderr[-2000:])
    assert not list(locks.rglob("*.json"))
    assert password not in up.stdout + up.stderr
