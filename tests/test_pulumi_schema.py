"""Every pulumi_postgresql input the program builds exists in the provider's published schema
(../shared/reference): property names, required properties, and enum values."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from x402db import ROOT

from .pulumi_support import run_program
from .test_pulumi_program import POSTGRES, SUPABASE

SCHEMA_PATH = next((p for p in (ROOT.parent / "shared/reference/pulumi-postgresql-schema.json",
                                ROOT / "../shared/reference/pulumi-postgresql-schema.json") if p.exists()), None)
pytestmark = pytest.mark.skipif(SCHEMA_PATH is None, reason="../shared/reference/pulumi-postgresql-schema.json is not beside the checkout")


def schema() -> dict:
    return json.loads(Path(SCHEMA_PATH).read_text())


def _one_of(description: str) -> set[str]:
    m = re.search(r"\(one of: ([^)]*)\)", description)
    return {v.strip() for v in m.group(1).split(",")} if m else set()


def _privileges(description: str) -> set[str]:
    m = re.search(r"privileges: ([A-Z, ]+), and ([A-Z]+)", description)
    return {v.strip() for v in m.group(1).split(",")} | {m.group(2)}


def problems(resources: list[dict], s: dict) -> list[str]:
    found = []
    for r in resources:
        typ = r["type"]
        if typ == "pulumi:providers:postgresql":
            spec = s["provider"]
        elif typ.startswith("postgresql:"):
            spec = s["resources"].get(typ)
            if spec is None:
                found.append(f"{r['name']}: no resource type {typ} in the schema")
                continue
        else:
            continue
        props = spec["inputProperties"]
        inputs = {k: v for k, v in r["inputs"].items() if not k.startswith("__")}
        found += [f"{r['name']}: unknown input {k}" for k in inputs if k not in props]
        found += [f"{r['name']}: missing required input {k}" for k in spec.get("requiredInputs", []) if k not in inputs]
        if typ == "postgresql:index/grant:Grant":
            kinds = _one_of(props["objectType"]["description"])
            if inputs.get("objectType") not in kinds:
                found.append(f"{r['name']}: objectType {inputs.get('objectType')!r} not one of {sorted(kinds)}")
            allowed = _privileges(props["privileges"]["description"])
            found += [f"{r['name']}: privilege {p} not in {sorted(allowed)}" for p in inputs.get("privileges", []) if p not in allowed]
    return found


@pytest.mark.parametrize("config", [SUPABASE, POSTGRES], ids=["supabase", "postgres"])
def test_program_inputs_match_the_provider_schema(config):
    report = run_program(config)
    checked = [r for r in report["resources"] if r["type"].startswith(("postgresql:", "pulumi:providers:postgresql"))]
    assert len(checked) >= 6
    assert problems(report["resources"], schema()) == []


def test_the_schema_check_catches_bad_inputs():
    s = schema()
    bad = [
        {"type": "postgresql:index/grant:Grant", "name": "g", "inputs": {"database": "d", "role": "r", "objectType": "tables", "privileges": ["SELECT", "ALL"]}},
        {"type": "postgresql:index/role:Role", "name": "r", "inputs": {"name": "x", "canLogin": True}},
        {"type": "postgresql:index/grantRole:GrantRole", "name": "gr", "inputs": {"role": "x"}},
        {"type": "pulumi:providers:postgresql", "name": "p", "inputs": {"hostname": "h"}},
    ]
    found = problems(bad, s)
    assert any("objectType 'tables'" in p for p in found)
    assert any("privilege ALL" in p for p in found)
    assert any("unknown input canLogin" in p for p in found)
    assert any("missing required input grantRole" in p for p in found)
    assert any("unknown input hostname" in p for p in found)
    assert "schema" in _one_of(s["resources"]["postgresql:index/grant:Grant"]["inputProperties"]["objectType"]["description"])
