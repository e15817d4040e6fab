"""The expectation's verdict as smoke checks, named `expected.<version>` for each migration the
ledger records as run: one passed check when nothing differs, else one failed check per
difference, each a single line, so `scripts/smoke.py` and `pulumi refresh` report the same words."""

from __future__ import annotations

from collections.abc import Collection

import psycopg

from ... import access
from ...migrate import ledger
from ..checks import SKIPPED, Check, Checklist
from .compare import JUDGED_STATES, Difference, differences, judged, owners
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
    """Add one check per judged migration to `c`, and a skipped one per applied migration that
    cannot be judged, saying why; returns the differences. Reads only."""
    with read_only(conn):
        entries = ledger.entries(conn)
        versions = judged(expectation, entries)
        found = differences(conn, expectation, foreign_grantees=foreign_grantees)
    unjudged = unjudged_reasons(expectation, entries, versions)
    for version, reason in unjudged.items():
        c.skip(f"{PREFIX}{version}", f"{version}: not judged: {reason}")
    underivable = [v for v in unjudged if entries[v].kind != "adopted"]
    if underivable:
        # What an underivable migration made may sit on an object a judged one owns: an extra found
        # there cannot be told apart from that migration's own work, so it is not called drift.
        extras = [d for d in found if d.what == "unexpected"]
        found = [d for d in found if d.what != "unexpected"]
        if extras:
            c.skip(
                f"{PREFIX}extras",
                f"{len(extras)} objects no judged migration made (e.g. {extras[0].kind} {extras[0].identity}) are not "
                f"judged while {', '.join(underivable)} cannot be",
            )
    add_checks(c, versions, found)
    return found


def unjudged_reasons(expectation: Expectation, entries: dict[str, ledger.Entry], versions: list[str]) -> dict[str, str]:
    """Applied migrations the comparison cannot judge, and why: never silently."""
    derived = {m.version for m in expectation.migrations}
    out = {}
    for version, entry in sorted(entries.items()):
        if version in versions or entry.state not in JUDGED_STATES:
            continue
        if entry.kind == "adopted":
            out[version] = (
                "adopted (recorded as already present, it ran no SQL here), so nothing is compared against it"
            )
        elif version not in derived:
            out[version] = (
                "its SQL cannot be derived on the scratch database (its targets exclude postgres, or sql/ lacks it)"
            )
    return out


# verify/catalog.py's checks describe 005's tables as 005 left them; the families below are the
# ones a later migration may legitimately change.
HAND_WRITTEN = ("tables.", "integrations.", "policy.", "index.", "comments", "resources.")
PRODUCT_TABLES = (access.INTEGRATIONS, access.RESOURCES, access.MODELS)


def later_owners(conn: psycopg.Connection, expectation: Expectation) -> list[str]:
    """The applied migrations after 005 that own a fact of the product tables. It names 005
    because verify/catalog.py's hand-written checks describe 005's tables as 005 left them."""
    with read_only(conn):
        owned = owners(expectation, ledger.entries(conn))
    return sorted(
        {
            version
            for (_kind, identity), (version, _fact) in owned.items()
            if version > "005" and any(f"{t}." in f"{identity}." for t in PRODUCT_TABLES)
        }
    )


def defer_hand_written(c: Checklist, since: int, later: list[str]) -> None:
    """A hand-written check failing on an object a later migration changed is that migration's
    to judge (its `expected.<version>` check): skipped with the reason, never passed."""
    if not later:
        return
    for i in range(since, len(c.checks)):
        check = c.checks[i]
        if check.failed and check.name.startswith(HAND_WRITTEN):
            reason = f"{', '.join(later)} changed 005's tables since; judged by expected.{later[-1]} ({check.detail})"
            c.checks[i] = Check(check.name, SKIPPED, reason)
