"""What `pulumi refresh` reads back for a migration besides its ledger row: the differences between
the live catalog and what that migration's own SQL makes (verify/expected, the same comparison
`scripts/smoke.py --read-only` reports), so an owner changed, a trigger body rewritten or a
privilege granted by hand in the dashboard shows up as a change on that migration's resource.

The next `pulumi up` repairs only what it can prove it repaired: when every difference is a
privilege, it re-applies the access model's grants and compares again, in one transaction that
is rolled back unless nothing differs any more. Anything else (an owner, a body, a trigger's
state) is refused with the differences, and nothing changes: re-granting cannot undo an owner
change, and the bundle never guesses which text of a function is the right one.
"""

from __future__ import annotations

import psycopg

from .. import access
from ..errors import DriftError
from ..local.scratch import expected_state
from ..verify.expected.compare import ACL_KINDS, Difference, differences


def found(conn: psycopg.Connection, version: str) -> list[Difference]:
    """The differences of the migration `version` owns, in a read-only, rolled-back transaction."""
    expectation = expected_state()
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        return [d for d in differences(conn, expectation) if d.version == version]


def lines(drift: list[Difference]) -> list[str]:
    return [str(d) for d in drift]


def repairable(drift: list[Difference]) -> bool:
    return all(d.kind in ACL_KINDS for d in drift)


def repair(conn: psycopg.Connection, version: str, label: str, drift: list[Difference]) -> None:
    """Re-apply the access model when only privileges differ, keeping it only when the comparison
    then finds nothing; refuse anything else, unchanged."""
    if not repairable(drift):
        raise DriftError(
            f"migration {label} no longer matches the database, so pulumi up changed nothing: "
            + "; ".join(lines(drift))
            + ". Restore what is named as sql/ defines it (scripts/smoke.py --read-only lists the same lines),"
            " or revert and apply again (pulumi destroy, or scripts/migrate.py down, then pulumi up)"
        )
    expectation = expected_state()
    with conn.transaction():
        access.apply(conn)
        left = [d for d in differences(conn, expectation) if d.version == version]
        if left:
            # Raising inside the block rolls the grants back: a partial repair is no repair.
            raise DriftError(
                f"migration {label}: re-applying the access model's grants would not repair it, so pulumi up "
                "changed nothing: " + "; ".join(lines(left))
            )
