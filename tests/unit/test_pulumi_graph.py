"""The checks the engine makes on the registrations it receives, which Pulumi's mocks skip:
URNs unique, every dependency, parent and provider reference registered, protect and
retain_on_delete as the runbook says, and the destroy order derived from the dependency graph
equal to the order docs/runbooks/deploy.md lists.

Kept beside the real engine: it needs no Go; test_pulumi_engine.py checks the real destroy order."""

from __future__ import annotations

import re
from graphlib import TopologicalSorter
from itertools import pairwise

import pytest

from tests.utils.pulumi_mocks import run_program
from x402db import ROOT

from .test_pulumi_program import POSTGRES, SUPABASE

STACK, PROJECT = "test", "x402-openrouter-db"
RUNBOOK = ROOT / "docs" / "runbooks" / "deploy.md"


def mock_urn(r: dict) -> str:
    """The URN Pulumi's MockMonitor answered for a registration (mocks.py make_urn): what the
    program's parent, dependency and provider references name."""
    typ = r["type"]
    if r["urn_parent"]:
        typ = r["urn_parent"].split("::")[2].split("$").pop() + "$" + typ
    return f"urn:pulumi:{STACK}::{PROJECT}::{typ}::{r['name']}"


def urns(report: dict) -> dict[str, dict]:
    """Engine URN -> registration. The engine names a resource by its parents' whole type chain
    (the stack excluded) joined by $, then its type and name; two equal URNs stop a deployment."""
    by_mock = {mock_urn(r): r for r in report["resources"]}
    out, chains = {}, {}
    for r in report["resources"]:
        parent = by_mock.get(r["urn_parent"])
        qualified = f"{chains[id(parent)]}${r['type']}" if parent else r["type"]
        chains[id(r)] = qualified
        urn = f"urn:pulumi:{STACK}::{PROJECT}::{qualified}::{r['name']}"
        assert urn not in out, f"duplicate URN {urn}"
        out[urn] = r
    return out


def engine_urn_of(report: dict) -> dict[str, str]:
    """Mock URN -> engine URN, to follow the program's references."""
    return {mock_urn(r): urn for urn, r in urns(report).items()}


def graph_problems(report: dict) -> list[str]:
    try:
        by_urn = urns(report)
    except AssertionError as exc:
        return [str(exc)]
    to_engine = engine_urn_of(report)
    stack_urn = f"urn:pulumi:{STACK}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{STACK}"
    found = []
    for r in by_urn.values():
        found += [f"{r['name']}: depends on unregistered {d}" for d in r["dependencies"] if d not in to_engine]
        if r["urn_parent"] not in to_engine and r["urn_parent"] != stack_urn:
            found.append(f"{r['name']}: parent {r['urn_parent']} is not registered")
        if r["provider"] and r["provider"].rsplit("::", 1)[0] not in to_engine:
            found.append(f"{r['name']}: provider {r['provider']} is not registered")
    return found


def destroy_order(report: dict) -> list[str]:
    """What `pulumi destroy` deletes, first to last: the reverse of a topological order of the
    dependencies; it must be the only one (each step forced by a dependency) for the runbook
    to be able to promise an order."""
    by_urn, to_engine = urns(report), engine_urn_of(report)
    custom = {u: r for u, r in by_urn.items() if r["custom"] and not r["type"].startswith("pulumi:providers:")}
    deps = {u: {to_engine[d] for d in r["dependencies"] if to_engine.get(d) in custom} for u, r in custom.items()}
    order = list(TopologicalSorter(deps).static_order())
    for before, after in pairwise(order):
        assert _reaches(deps, after, before), (
            f"{custom[after]['name']} and {custom[before]['name']} may be deleted in either order"
        )
    return [custom[u]["name"] for u in reversed(order)]


def _reaches(deps: dict[str, set[str]], start: str, goal: str) -> bool:
    todo, seen = [start], set()
    while todo:
        u = todo.pop()
        if u == goal:
            return True
        if u not in seen:
            seen.add(u)
            todo += deps[u]
    return False


def runbook_order() -> list[tuple[str, bool, bool]]:
    """(name, protected, retained) for each item of the runbook's destroy-order list."""
    text = RUNBOOK.read_text()
    block = text[text.index("<!-- destroy-order") : text.index("<!-- /destroy-order -->")]
    items = re.findall(r"^\d+\. `([^`]+)`:(.*)$", block, re.M)
    return [(name, "protected" in rest, "retain_on_delete" in rest) for name, rest in items]


@pytest.fixture(scope="module")
def reports():
    return {
        "postgres": run_program(POSTGRES),
        "supabase": run_program(SUPABASE),
        "unprotected": run_program({**POSTGRES, "protect": "false"}),
    }


@pytest.mark.parametrize("kind", ["postgres", "supabase"])
def test_graph_is_what_the_engine_accepts(reports, kind):
    assert graph_problems(reports[kind]) == []


@pytest.mark.parametrize("kind", ["postgres", "supabase"])
def test_destroy_order_is_the_runbooks(reports, kind):
    present = {r["name"] for r in reports[kind]["resources"]}
    documented = [name for name, _, _ in runbook_order() if name in present]
    assert destroy_order(reports[kind]) == documented


def test_runbook_lists_every_resource_of_the_fullest_stack(reports):
    custom = {
        r["name"]
        for r in reports["postgres"]["resources"]
        if r["custom"] and not r["type"].startswith("pulumi:providers:")
    }
    assert [name for name, _, _ in runbook_order()] and {name for name, _, _ in runbook_order()} == custom


@pytest.mark.parametrize("kind", ["postgres", "supabase", "unprotected"])
def test_protect_and_retain_on_delete_as_the_runbook_says(reports, kind):
    documented = {name: (protected, retained) for name, protected, retained in runbook_order()}
    for r in reports[kind]["resources"]:
        if r["name"] not in documented:
            continue
        protected, retained = documented[r["name"]]
        assert r["protect"] is (protected and kind != "unprotected"), r["name"]
        assert r["retain_on_delete"] is retained, r["name"]


# ---- the checks can fail ---------------------------------------------------------------------


def test_the_graph_checks_catch_broken_registrations(reports):
    import copy

    broken = copy.deepcopy(reports["postgres"])
    res = broken["resources"]
    res[-1]["dependencies"] = [
        "urn:pulumi:test::x402-openrouter-db::x402:database:OpenRouterIntegration$postgresql:index/grant:Grant::gone"
    ]
    res[-2]["name"] = res[-3]["name"]
    assert any("duplicate" in p for p in graph_problems(broken))
    broken = copy.deepcopy(reports["postgres"])
    broken["resources"][-1]["dependencies"] = [broken["resources"][-1]["dependencies"][0] + "x"]
    assert any("depends on unregistered" in p for p in graph_problems(broken))
    # Two grants that no longer wait for each other: the order is no longer fixed.
    broken = copy.deepcopy(reports["postgres"])
    broken["resources"][-1]["dependencies"] = broken["resources"][-2]["dependencies"]
    with pytest.raises(AssertionError, match="may be deleted in either order"):
        destroy_order(broken)
    # A runbook that swaps two steps.
    swapped = [name for name, _, _ in runbook_order()]
    swapped[5], swapped[6] = swapped[6], swapped[5]
    assert destroy_order(reports["postgres"]) != swapped
