"""A fleet wave's gate against a real database: one target whose Pulumi stack cannot be set up is
that target's failure, reported with the others, never the end of the whole rollout."""

from __future__ import annotations

import os

import psycopg

from tests.utils.db import SUPERUSER, new_database
from x402db.fleet.fleetfile import load
from x402db.fleet.journal import Journal
from x402db.fleet.orchestrator import Rollout


def test_a_target_whose_stack_cannot_be_set_up_fails_alone(server, tmp_path, monkeypatch):
    dbname = psycopg.conninfo.conninfo_to_dict(new_database(server))["dbname"]
    monkeypatch.setenv("X402_TEST_FLEET_GATE_PW", server.password or "")
    # No pulumi CLI to be found: every stack operation of the gate fails, as a broken stack would.
    monkeypatch.setenv("PATH", os.path.dirname(os.__file__))
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "version: 1\n"
        f"defaults: {{host: 127.0.0.1, port: {server.port()}, sslmode: disable, target: postgres, superuser: true,"
        f" username: {SUPERUSER}, password: {{env: X402_TEST_FLEET_GATE_PW}}}}\n"
        f"targets: {{a: {{database: {dbname}}}, b: {{database: {dbname}_gone}}}}\n"
        "waves: [{name: all, targets: [a, b], parallel: 2, maxFailures: 1}]\n"
    )
    fleet = load(path)
    journal = Journal.for_fleet(path, root=tmp_path)
    report = Rollout(fleet, journal, "r1", lambda _: None, stacks=None).run(resume=False)  # type: ignore[arg-type]
    a, b = report["waves"][0]["targets"]
    assert a["result"] == "failed", a
    assert "pulumi" in a["reason"] and "\n" not in a["reason"]
    assert a["phases"]["preview"]["status"] == "failed"
    assert b["result"] == "unreachable"  # judged too: the rollout went on past a's failure
    assert journal.run()["finished"]
