"""The suite's fixtures live in plugins (tests/fix_*.py), its helpers in tests/utils/.

Every test module lives in one tier folder, and the folder is its marker: `pytest -m unit` (or
`pytest tests/unit`) runs what needs no server, no Pulumi CLI and no Node. A test that asks for a
fixture of a heavier tier than its folder's fails at collection, and a unit or node test that
starts a PostgreSQL server fails when it does (tests/fix_db.py), so no test sits in the wrong
tier silently."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.fix_db", "tests.fix_pulumi"]

TESTS = Path(__file__).resolve().parent
# tier folder -> the fixtures (with everything they need) that make a test belong to a heavier tier
TIERS = {
    "unit": {"server", "pulumi_tools"},
    "node": {"server", "pulumi_tools"},
    "database": {"pulumi_tools"},
    "engine": set(),
}
HEAVIER = {"server": "database", "pulumi_tools": "engine"}
FIRST = ("engine", "database", "node", "unit")  # the order the suite runs its tiers in


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        tier = parts[0] if len(parts) > 1 else None
        if tier not in TIERS:
            wrong.append(f"{item.nodeid}: not in a tier folder ({', '.join(f'tests/{t}/' for t in TIERS)})")
            continue
        for fixture in sorted(TIERS[tier] & set(item.fixturenames)):
            wrong.append(f"{item.nodeid}: uses `{fixture}`, so it belongs in tests/{HEAVIER[fixture]}/")
        for marker in item.iter_markers():
            if marker.name in TIERS and marker.name != tier:
                wrong.append(f"{item.nodeid}: marked {marker.name} but lives in tests/{tier}/")
        item.add_marker(tier)
    if wrong:
        raise pytest.UsageError("tests in the wrong tier:\n  " + "\n  ".join(wrong))
    off = [item for item in items if not all(_on_diagonal(item, m) for m in item.iter_markers("diagonal"))]
    if off:
        config.hook.pytest_deselected(items=off)
        items[:] = [item for item in items if item not in off]
    # Heaviest tier first: pytest-xdist hands tests out in this order, so the minute-long Pulumi
    # scenarios start while the short tests can still fill the other workers, instead of one of
    # them running alone at the end of the suite.
    items.sort(key=lambda item: FIRST.index(next(m.name for m in item.iter_markers() if m.name in TIERS)))


# Each server version with one target: every version and every target still runs the scenario.
DIAGONAL = {("pg15", "postgres"), ("pg18", "supabase")}


def _on_diagonal(item: pytest.Item, marker: pytest.Mark) -> bool:
    """`@pytest.mark.diagonal` pairs the server with the target; `diagonal(param=..., pairs=...)`
    with another parameter, so each of its values still runs on one of the two servers. A test
    with several diagonal markers runs where all of them hold."""
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    other, pairs = marker.kwargs.get("param", "target"), marker.kwargs.get("pairs", DIAGONAL)
    return (params.get("server"), params.get(other)) in pairs
