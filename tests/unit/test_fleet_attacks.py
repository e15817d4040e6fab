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
