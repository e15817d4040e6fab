"""The expectation's verdict as smoke checks: one check per migration the ledger records as run,
named `expected.<version>`, failing with that migration's difference lines, so
`scripts/smoke.py` and `pulumi refresh` report the same words."""

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
        c.add(f"{PREFIX}{version}", not lines, "; ".join(lines))


def run(
    conn: psycopg.Connection, c: Checklist, expectation: Expectation, *, foreign_grantees: Collection[str] = ()
) -> list[Difference]:
    """Add one check per judged migration to `c`; returns the differences. Reads only."""
    with read_only(conn):
        versions = judged(expectation, ledger.entries(conn))
        found = differences(conn, expectation, foreign_grantees=foreign_grantees)
    add_checks(c, versions, found)
    return found
