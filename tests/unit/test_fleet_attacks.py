"""The fleet's CLI refusing before anything connects or is written: no database, no Pulumi."""

from __future__ import annotations

import hashlib

import pytest

from x402db import ROOT
from x402db.cli.fleet import main
from x402db.fleet.fleetfile import FleetConfigError

FLEET = """\
version: 1
defaults: {{host: 127.0.0.1, port: 1, sslmode: disable, target: postgres}}
targets:
  first: {{database: a, password: {{env: {present}}}}}
  second: {{database: b, password: {{env: {missing}}}}}
waves:
  - {{name: all, targets: [first, second]}}
"""


@pytest.mark.parametrize("command", ["up", "resume", "plan", "status"])
def test_a_missing_secret_of_any_target_stops_every_command_before_it_starts(tmp_path, monkeypatch, command):
    # A secret read only when its target's turn comes would stop the rollout after earlier
    # targets, or waves, had changed, with a run left half done in the journal.
    present, missing = f"X402_TEST_{tmp_path.name.upper()}_A", f"X402_TEST_{tmp_path.name.upper()}_B"
    monkeypatch.setenv(present, "s3cret")
    monkeypatch.delenv(missing, raising=False)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(present=present, missing=missing))
    journal = ROOT / ".fleet" / hashlib.sha256(str(fleet.resolve()).encode()).hexdigest()[:12]
    with pytest.raises(FleetConfigError) as refused:
        main([command, "--fleet", str(fleet), *(["--yes"] if command == "up" else [])])
    assert f"target second: password from ${missing}" in str(refused.value)
    assert not journal.exists(), "the journal was started before the secrets were read"


def _fleet(tmp_path, monkeypatch, waves: str):
    from x402db.fleet.fleetfile import load

    variable = f"X402_TEST_{tmp_path.name.upper()}_PW"
    monkeypatch.setenv(variable, "s3cret")
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "version: 1\n"
        "defaults: {host: 127.0.0.1, port: 1, sslmode: disable, target: postgres, password: {env: " + variable + "}}\n"
        "targets: {a: {database: a}, b: {database: b}}\n"
        f"waves:\n{waves}"
    )
    return load(path)


def _rollout(fleet, tmp_path, release="r1"):
    from x402db.fleet.journal import Journal
    from x402db.fleet.orchestrator import Rollout

    journal = Journal.for_fleet(fleet.path, root=tmp_path)
    # Nothing here reaches Pulumi: every target is unreachable (port 1), so no stack is touched.
    return journal, Rollout(fleet, journal, release, lambda _: None, stacks=None)  # type: ignore[arg-type]


def test_failures_within_max_failures_do_not_halt_the_rollout(tmp_path, monkeypatch):
    fleet = _fleet(
        tmp_path,
        monkeypatch,
        "  - {name: first, targets: [a], maxFailures: 1}\n  - {name: second, targets: [b]}\n",
    )
    _, rollout = _rollout(fleet, tmp_path)
    report = rollout.run(resume=False)
    first, second = report["waves"]
    assert first["targets"][0]["result"] == "unreachable"
    # One failure where one is allowed: the next wave still runs (and finds its own target down).
    assert second["targets"][0]["result"] == "unreachable", second
    assert report["result"] == "failed"
    assert all(isinstance(w["targets"][0]["seconds"], float) for w in report["waves"]), report


def test_failures_beyond_max_failures_halt_later_waves(tmp_path, monkeypatch):
    fleet = _fleet(tmp_path, monkeypatch, "  - {name: first, targets: [a]}\n  - {name: second, targets: [b]}\n")
    _, rollout = _rollout(fleet, tmp_path)
    second = rollout.run(resume=False)["waves"][1]
    assert second["status"] == "skipped"
    assert second["targets"][0]["result"] == "skipped"
    assert "wave first halted" in second["targets"][0]["reason"]


def test_resume_refuses_a_run_of_another_release_and_changes_nothing(tmp_path, monkeypatch):
    from x402db.errors import UsageError

    fleet = _fleet(tmp_path, monkeypatch, "  - {name: all, targets: [a, b]}\n")
    journal, rollout = _rollout(fleet, tmp_path, release="new")
    run = {"fleet": str(fleet.path), "release": "old", "started": "t", "waves": {}, "halted_by": None}
    journal.start_new_run({**run, "finished": None})
    # resume finishes a run; from a checkout of another release it would start a new rollout
    # of that release instead, without `up`'s question.
    with pytest.raises(UsageError) as refused:
        rollout.run(resume=True)
    assert "release old" in str(refused.value) and "fleet.py up" in str(refused.value)
    assert journal.run()["release"] == "old"
    assert not list((journal.dir / "targets").glob("*.json"))


def test_promotion_from_a_wave_that_selected_no_target_is_refused():
    from x402db.fleet import gates

    # A select that matches nothing (a label misspelt) holds no evidence: it vouches for nothing.
    assert gates.evidence_problem("r1", "staging", {}) is not None


def test_two_targets_on_one_database_are_refused_before_anything_connects(tmp_path, monkeypatch):
    from x402db.fleet.fleetfile import load

    monkeypatch.setenv("X402_TEST_SAME_DB_PW", "s3cret")
    path = tmp_path / "fleet.yaml"
    # Both previews pass while neither stack exists; only the second up meets the first's ownership.
    path.write_text(
        "version: 1\n"
        "defaults: {host: db.example, sslmode: disable, target: postgres, password: {env: X402_TEST_SAME_DB_PW}}\n"
        "targets: {a: {database: app}, b: {database: other}, c: {database: app, port: 5432}}\n"
        "waves: [{name: all, select: {}}]\n".replace("select: {}", "targets: [a, b, c]")
    )
    with pytest.raises(FleetConfigError) as refused:
        load(path)
    assert "targets.c" in str(refused.value) and "targets.a" in str(refused.value)
    assert "db.example" not in str(refused.value)


def test_a_stack_lock_is_judged_live_or_stale_by_its_process_on_this_host():
    import os
    import socket
    import subprocess
    import sys

    from x402db.fleet.stacks import running_here

    here = socket.gethostname()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # a pid that no longer runs (reaped, so not even a zombie)
    # Resume cancels only a lock whose process is gone: a live up's lock, cancelled, lets two ups
    # of one stack run at once.
    assert running_here({"pid": os.getpid(), "hostname": here}) is True
    assert running_here({"pid": ended.pid, "hostname": here}) is False
    assert running_here({"pid": os.getpid(), "hostname": here + ".elsewhere"}) is None
    assert running_here({"hostname": here}) is None
