"""What `pulumi refresh` reads back for a migration besides its ledger row: the failing catalog
checks of the objects that migration owns, so a policy dropped or a privilege granted by hand in
the dashboard shows up as a change, not as "no changes".

The rule: a migration's drift is the list of failed read-only smoke catalog checks (the same ones
`scripts/smoke.py --read-only` runs) for the migration that creates the checked objects, 005;
the platform's own objects (roles, auth.uid) and the ledger are left to their own checks. The
next `pulumi up` repairs drift that is only privileges (the access model's grants, re-applied in
one transaction, then checked again) and refuses any other drift with the failing checks' words.
"""

from __future__ import annotations

import psycopg

from .. import access
from ..errors import DriftError
from ..verify import catalog
from ..verify.checks import Checklist

CHECKED = "005"  # the migration whose objects the catalog checks describe
_NOT_OURS = ("ledger.", "platform.")


def failing_checks(conn: psycopg.Connection) -> list[str]:
    """'name: detail' for each failed catalog check, in a read-only, rolled-back transaction."""
    c = Checklist()
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        catalog.run(conn, c)
    return sorted(f"{k.name}: {k.detail}" for k in c.checks if k.failed and not k.name.startswith(_NOT_OURS))


def repairable(drift: list[str]) -> bool:
    return all(item.startswith("grant.") for item in drift)


def repair(conn: psycopg.Connection, label: str, drift: list[str]) -> None:
    """Re-apply the access model when only privileges drifted; refuse anything else, unchanged."""
    if not repairable(drift):
        raise DriftError(
            f"migration {label} no longer matches the database, so pulumi up changed nothing: "
            + "; ".join(drift)
            + ". Restore what the checks name as sql/ defines it (scripts/smoke.py --read-only shows the same checks),"
            " or revert and apply again (pulumi destroy, or scripts/migrate.py down, then pulumi up)"
        )
    access.apply(conn)
    left = failing_checks(conn)
    if left:
        raise DriftError(f"migration {label}: re-applying the grants did not repair: " + "; ".join(left))
