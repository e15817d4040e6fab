"""docs/tutorial.md (which docs/adding-a-migration.md summarises), run as it is written: its shell blocks in order, in a copy of the
checkout, from `make deploy`, status and a plan, through `migrate.py new`, the files, `make shipped-downs`, plan,
deploy and read-only smoke, to the revert."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from x402db import ROOT

PAGE = ROOT / "docs" / "tutorial.md"
CHECKOUT = ["x402db", "scripts", "sql", "Makefile", "pyproject.toml", "requirements.txt", "requirements-dev.txt"]


# The local path prefers port 54329: its deploys run on one xdist worker, one at a time.
@pytest.mark.xdist_group("local-deploy")
def test_the_page_runs_verbatim_from_new_to_revert():
    text = PAGE.read_text()
    assert "tests/database/test_adding_a_migration.py" in text
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert len(blocks) >= 6, "the page lost a step"
    # Not under pytest's 0700 tmp: as root, the local server runs as the postgres OS user.
    base = Path(tempfile.mkdtemp(prefix="x402db-page-"))
    base.chmod(0o755)
    copy = base / "x402"
    copy.mkdir()
    for name in [*CHECKOUT, "constraints.txt"]:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGPASSFILE", "MAKEFLAGS", "MAKELEVEL")}
    # The copy runs its own package: the venv's editable install points at the original checkout.
    env |= {"PYTHONPATH": str(copy), "CI": "1"}
    script = "set -e\n" + "".join(blocks)
    try:
        r = subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "006_model_catalog_sync (applied)" in out, out
        assert re.search(r"PASS  expected\.006", out), out
        assert "reverted  006_model_catalog_sync" in out, out
        shipped = (copy / "x402db" / "migrate" / "shipped_downs.json").read_text()
        assert '"006"' in shipped
    finally:
        subprocess.run(
            [str(ROOT / ".venv/bin/python"), "scripts/local_db.py", "delete"],
            cwd=copy,
            env=env,
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(base, ignore_errors=True)
