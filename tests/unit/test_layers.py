"""x402db/ is layered, and its folder list says how. A module imports only from its own package
or from a lower layer; no import runs up or across to a sibling package of the same layer; and no
modules import each other in a circle, however long. The imports are read with `ast`, so lazy
imports inside functions and imports under TYPE_CHECKING count too: a circle hidden in a
function body is still a circle in the design."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from x402db import ROOT

PACKAGE = ROOT / "x402db"
# Lowest first. "" is x402db/__init__.py (ROOT, SQL_DIR). The two re-exports of old Pulumi
# state paths import iac/ and nothing imports them.
LAYERS = (
    ("", "errors", "access", "private", "pgpass"),
    ("migrate", "db", "keys"),
    ("plan", "verify"),
    ("local",),
    ("iac",),
    ("pulumi_migration", "pulumi_preflight"),
    ("fleet",),
    ("cli",),
)
# Known violations, if any; each entry leaves with the commit that fixes it.
KNOWN_WRONG_WAY: set[str] = set()
KNOWN_CIRCLES: list[list[str]] = []
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, base: Path = ROOT) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The top-level part of x402db a module belongs to: its subpackage, or its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path, known: set[str], base: Path = ROOT) -> set[str]:
    """The x402db modules that `path` imports, resolved to module names."""
    me = module_name(path, base)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "x402db"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "x402db":
                continue
            for a in node.names:  # `from . import engine` imports the module engine
                found.add(f"{source}.{a.name}" if f"{source}.{a.name}" in known else source)
    return found - {me}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(p, root.parent): p for p in root.rglob("*.py")}
    return {m: imports(p, set(paths), root.parent) for m, p in paths.items()}


def wrong_way(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            a, b = unit(src), unit(dst)
            if a == b:
                continue
            if a not in RANK or b not in RANK:
                out.append(f"{src} -> {dst}: {a or b} is in no layer; add it to LAYERS")
            elif RANK[b] > RANK[a]:
                out.append(f"{src} -> {dst}: {a} imports {b}, a higher layer")
            elif RANK[b] == RANK[a]:
                out.append(f"{src} -> {dst}: {a} imports {b}, a sibling in the same layer")
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_import_runs_down_the_layers():
    assert [w for w in wrong_way(graph()) if w.split(":")[0] not in KNOWN_WRONG_WAY] == []


def test_no_import_circle():
    assert [c for c in circles(graph()) if c not in KNOWN_CIRCLES] == []


def test_every_part_of_the_package_is_in_a_layer():
    assert {unit(m) for m in graph()} <= set(RANK)


@pytest.mark.parametrize("module", sorted(graph()))
def test_every_module_states_its_concern(module):
    path = PACKAGE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    assert ast.get_docstring(ast.parse(path.read_text())), f"{module} has no docstring"


def test_the_checks_catch_an_upward_import_and_a_circle(tmp_path):
    """The checks themselves, on a small package laid out like ours."""
    pkg = tmp_path / "x402db"
    for rel, text in {
        "__init__.py": "",
        "errors.py": "",
        "migrate/__init__.py": "",
        "migrate/engine.py": "from ..cli import common\n",
        "cli/__init__.py": "",
        "cli/common.py": "from ..migrate import engine\n",
        "verify/__init__.py": "",
        "verify/a.py": "def f():\n    from . import b\n",
        "verify/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import X\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    edges = graph(pkg)
    assert wrong_way(edges) == ["x402db.migrate.engine -> x402db.cli.common: migrate imports cli, a higher layer"]
    assert circles(edges) == [["x402db.cli.common", "x402db.migrate.engine"], ["x402db.verify.a", "x402db.verify.b"]]


def test_checking_a_duration_does_not_load_the_engine():
    """Stack config, the CLI harness and the Pulumi provider's check validate a timeout through
    migrate/settings.py; the engine (and the plan, which imports it) stays unloaded."""
    import subprocess
    import sys

    code = (
        "import sys, x402db.iac.config, x402db.cli.common, x402db.iac.sql_migration; "
        "print(sorted(m for m in sys.modules if m in ('x402db.migrate.engine', 'x402db.plan.planner')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_plan_view_depends_on_the_model_not_on_the_planner():
    assert graph()["x402db.plan.view"] <= {"x402db.plan.model", "x402db.plan.locks", "x402db.plan.lockmap"}
