"""The fleet's rules without a server: which targets may start under the caps, what the lock gate
refuses, when evidence promotes a release, and that the report names every result and the next
command. The real runs are in tests/engine/test_fleet.py."""

from __future__ import annotations

import pytest

from x402db.fleet import report
from x402db.fleet.caps import startable
from x402db.fleet.gates import TargetPlan, evidence_problem, lock_gate, locks_summary

A, B = ("10.0.0.1", 5432), ("10.0.0.2", 5432)
SERVER = {"a1": A, "a2": A, "a3": A, "b1": B, "b2": B}


@pytest.mark.parametrize(
    ("waiting", "running", "parallel", "per_host", "expected"),
    [
        (["a1", "a2", "a3", "b1"], [], 4, 2, ["a1", "a2", "b1"]),  # the third on A waits for a slot on A
        (["a3", "b1", "b2"], ["a1", "a2"], 4, 2, ["b1", "b2"]),
        (["a3", "b1"], ["a1", "b2"], 2, 2, []),  # the wave is full
        (["a1", "a2", "a3"], [], 2, None, ["a1", "a2"]),
        (["a2", "a3"], ["a1"], 4, 1, []),
    ],
)
def test_startable_keeps_both_caps(waiting, running, parallel, per_host, expected):
    assert startable(waiting, running, SERVER, parallel, per_host) == expected


def _statement(table: str, rows: int | None, effect: str, mode: str = "AccessExclusiveLock") -> dict:
    return {
        "migration": "006_x",
        "statement": "ALTER TABLE t",
        "table": table,
        "mode": mode,
        "rows": rows,
        "effect": effect,
    }


@pytest.mark.parametrize(
    ("statement", "largest", "refused"),
    [
        (_statement("public.x402_resources", 200_000, "rewrite"), None, True),
        (_statement("public.x402_resources", 100_000, "scan"), None, True),  # at least maxRows
        (_statement("public.x402_resources", 99_999, "rewrite"), None, False),
        (_statement("public.x402_resources", None, "rewrite"), None, True),  # size unknown: refused
        (_statement("public.x402_resources", 5_000_000, "catalog"), None, False),  # brief
        (_statement("any table", None, "unknown"), ("public.big", 300_000), True),
        (_statement("any table", None, "unknown"), ("public.small", 10), False),
    ],
)
def test_the_lock_gate_refuses_long_writer_blocks_on_large_tables(statement, largest, refused):
    plan = TargetPlan("ready", blocking=[statement], largest=largest)
    refusals = lock_gate({"prod-us": plan}, 100_000)
    assert bool(refusals) == refused, refusals
    if refused:
        assert refusals[0].startswith("prod-us: 006_x `ALTER TABLE t` takes AccessExclusiveLock on "), refusals
        assert "lockGate.maxRows 100,000" in refusals[0]
    assert lock_gate({"prod-us": plan}, None) == []  # no lockGate: no gate


def test_locks_summary_tells_brief_from_long():
    plan = TargetPlan(
        "ready",
        blocking=[_statement("public.a", 5, "catalog"), _statement("public.x402_resources", 200_000, "rewrite")],
    )
    assert locks_summary(plan) == "writers wait: 1 brief, 1 long (worst rewrite of public.x402_resources, 200,000 rows)"
    assert locks_summary(TargetPlan("ready")) == "no writer waits"


def test_evidence_promotes_only_the_same_release_with_smoke_passed():
    good = {"release": "r1", "smoke": "passed", "time": "t"}
    assert evidence_problem("r1", "staging", {"staging": good}) is None
    assert "holds no evidence for staging" in evidence_problem("r1", "staging", {"staging": None})
    assert "another release: staging (r0)" in evidence_problem("r1", "staging", {"staging": good | {"release": "r0"}})
    assert "smoke did not pass on staging" in evidence_problem("r1", "staging", {"staging": good | {"smoke": "failed"}})


def test_the_report_names_each_result_and_the_next_command():
    doc = {
        "result": "failed",
        "release": "abc",
        "waves": [
            {
                "name": "prod",
                "status": "failed",
                "targets": [
                    {"name": "p1", "result": "ok", "reason": "", "phases": {"up": {"status": "passed", "seconds": 2}}},
                    {"name": "p2", "result": "unreachable", "reason": "cannot connect", "phases": {}},
                    {"name": "p3", "result": "skipped", "reason": "not started", "phases": {}},
                ],
            }
        ],
    }
    text = report.render(doc, "fleet.yaml")
    assert "ok: 1 (p1)" in text and "unreachable: 1 (p2)" in text and "skipped: 1 (p3)" in text
    assert "  p2: cannot connect" in text
    assert text.splitlines()[-1].startswith("next: fix what the reasons say, then scripts/fleet.py up")
    header = text.splitlines()[1].split()
    assert header == [
        "wave",
        "target",
        "host/database",
        "pg",
        "plan",
        "locks",
        "up",
        "smoke",
        "after",
        "time",
        "result",
    ]
