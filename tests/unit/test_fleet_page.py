"""docs/runbooks/fleet.md's fleet files are accepted by the loader as the page describes them: a
key renamed or a rule tightened in x402db/fleet/fleetfile.py fails here, not on a reader who
copied the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from x402db import ROOT
from x402db.fleet.fleetfile import load
from x402db.local.deploy import LOCAL_PORT

PAGE = ROOT / "docs" / "runbooks" / "fleet.md"


def block(marker: str) -> str:
    """The fenced block right below `<!-- fleet-page: MARKER -->`."""
    after = PAGE.read_text().split(f"<!-- fleet-page: {marker} -->\n", 1)[1]
    return after.split("\n", 1)[1].split("\n```", 1)[0] + "\n"


def loaded(tmp_path: Path, marker: str):
    # Where the example keeps it: relative secret paths are read from the fleet file's folder.
    path = tmp_path / ".local" / "fleet.yaml"
    path.parent.mkdir()
    path.write_text(block(marker))
    return load(path)


def test_the_two_server_example_loads_as_the_page_says(tmp_path):
    fleet = loaded(tmp_path, "fleet.yaml")
    waves = {wave.name: names for wave, names in fleet.wave_targets()}
    assert waves == {"staging": ["staging"], "prod": ["tenant-a", "tenant-b"]}
    prod = fleet.waves[1]
    assert (prod.parallel, prod.max_per_host, prod.promoted_from) == (2, 1, "staging")
    assert fleet.waves[0].evidence and fleet.lock_gate.max_rows == 100_000
    # The ports and password files are the ones the page's servers block starts and writes.
    servers = block("servers")
    b_port = int(re.search(r"preferred_port=(\d+)", servers)[1])
    assert {n: t.port for n, t in fleet.targets.items()} == {
        "staging": LOCAL_PORT,
        "tenant-a": LOCAL_PORT,
        "tenant-b": b_port,
    }
    assert '.local/fleet-{key}.password"' in servers
    assert {n: t.secrets["password"].ref for n, t in fleet.targets.items()} == {
        "staging": str(tmp_path / ".local" / "fleet-a.password"),
        "tenant-a": str(tmp_path / ".local" / "fleet-a.password"),
        "tenant-b": str(tmp_path / ".local" / "fleet-b.password"),
    }
    assert {t.kind for t in fleet.targets.values()} == {"postgres"}


def test_the_reference_fleet_file_loads(tmp_path):
    fleet = loaded(tmp_path, "reference fleet.yaml")
    waves = {wave.name: names for wave, names in fleet.wave_targets()}
    # prod-us went out in canary, so prod's select skips it.
    assert waves == {"staging": ["staging"], "canary": ["prod-us"], "prod": ["tenant-a"]}
    assert fleet.targets["tenant-a"].kind == "postgres" and fleet.targets["staging"].kind == "supabase"
    assert fleet.targets["staging"].secrets["password"].kind == "env"


@pytest.mark.parametrize("marker", ["fleet.yaml", "reference fleet.yaml"])
def test_each_block_is_yaml_the_page_fences(marker):
    assert PAGE.read_text().count(f"<!-- fleet-page: {marker} -->\n```yaml\n") == 1
