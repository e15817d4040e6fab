"""The expectation's verdict as smoke checks, named `expected.<version>` for each migration the
ledger records as run: one passed check when nothing differs, else one failed check per
difference, each a single line, so `scripts/smoke.py` and `pulumi refresh` report the same words."""

from __future__ import annotations

from collections.abc import Collection

import psycopg

from ...migrate import ledger
from ..checks import Checklist
from .compare import Difference, differences, judged
from .derive import Expectation
from .facts import read_only

PREFIX = "expected."


def add_checks(c: Checklist, versions: list[str], found: list[Difference]) -> None:
    for version in versions:
        lines = [str(d) for d in found if d.version == version]
        for line in lines or [""]:
            c.add(f"{PREFIX}{version}", not line, line, success=f"{version}: as its SQL defines")


def run(
    conn: psycopg.Connection, c: Checklist, expectation: Expectation, *, foreign_grantees: Collection[str] = ()
) -> list[Difference]:
    """Add one check per judged migration to `c`; returns the differences. Reads only."""
    with read_only(conn):
        versions = judged(expectation, ledger.entries(conn))
        found = differences(conn, expectation, foreign_grantees=foreign_grantees)
    add_checks(c, versions, found)
    return found
