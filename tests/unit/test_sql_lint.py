"""squawk (a linter for PostgreSQL migrations) finds nothing in the up scripts.

Each part is linted as the engine runs it: the transactional part as one transaction, the
steps after `-- x402:no-transaction` without one. lock_timeout and statement_timeout are not in
the files on purpose: the engine sets them from --lock-timeout (or Pulumi's lockTimeout), so
one setting governs every migration; those two rules are excluded for that reason only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from x402db import SQL_DIR
from x402db.migrate.files import NO_TRANSACTION

SQUAWK = shutil.which("squawk", path=str(Path(sys.executable).parent)) or shutil.which("squawk")
pytestmark = pytest.mark.skipif(SQUAWK is None, reason="squawk-cli is not installed (requirements-dev.txt)")
EXCLUDED = "require-lock-timeout,require-statement-timeout"


def lint(text: str, tmp_path: Path, name: str, in_transaction: bool) -> list[str]:
    f = tmp_path / name
    f.write_text(text)
    flags = ["--assume-in-transaction"] if in_transaction else []
    r = subprocess.run(
        [SQUAWK, "--reporter", "gcc", "--exclude", EXCLUDED, *flags, str(f)], capture_output=True, text=True
    )
    return [line for line in r.stdout.splitlines() if ": warning:" in line or ": error:" in line]


@pytest.mark.parametrize("up", sorted(SQL_DIR.glob("*.up.sql")), ids=lambda p: p.name)
def test_up_scripts_pass_squawk(up, tmp_path):
    head, marker, tail = up.read_text().partition(NO_TRANSACTION)
    found = lint(head, tmp_path, "txn.sql", in_transaction=True)
    if marker:
        found += lint(tail, tmp_path, "steps.sql", in_transaction=False)
    assert found == []


def test_squawk_catches_a_blocking_migration(tmp_path):
    bad = "ALTER TABLE public.x402_resources ADD CONSTRAINT c CHECK (name <> '');\nCREATE INDEX i ON public.x402_resources (name);\n"
    found = lint(bad, tmp_path, "bad.sql", in_transaction=True)
    assert any("constraint-missing-not-valid" in f for f in found)
    assert any("require-concurrent-index-creation" in f for f in found)
