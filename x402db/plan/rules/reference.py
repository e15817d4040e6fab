"""The reference page of the lock rules, generated from the tables themselves:
`python -m x402db.plan.rules.reference > docs/reference/lock-rules.md` (or `--write`). A unit test
fails when the committed page is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from enum import Enum
from typing import Any

from ... import ROOT
from .alter_table import ALTER_TABLE
from .common import Rule, Table
from .create import CREATE_TABLE, NO_RELATION
from .dml import DML, LOCKING, REFERENTIAL_ACTIONS, ROW_LOCK
from .drop import DROP
from .index import CREATE_INDEX, DROP_INDEX
from .table_objects import COMMENT, GRANT, LOCK, ON_TABLE

PAGE = ROOT / "docs" / "reference" / "lock-rules.md"
COMMAND = "python -m x402db.plan.rules.reference --write"
TABLES: tuple[Table[Any, Any], ...] = (
    ALTER_TABLE,
    CREATE_INDEX,
    DROP_INDEX,
    DROP,
    CREATE_TABLE,
    ON_TABLE,
    COMMENT,
    GRANT,
    LOCK,
    DML,
    LOCKING,
    NO_RELATION,
)


def key_label(key: object) -> str:
    if isinstance(key, Enum):
        return key.name
    if isinstance(key, type):
        return key.__name__
    return str(key)


def _depends(rule: Rule[Any]) -> str:
    doc = getattr(rule.refine, "__doc__", None) or ""
    return " ".join(doc.split())


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _table(table: Table[Any, Any]) -> list[str]:
    lines = [
        f"## {table.title}",
        "",
        f"Keyed by {table.key}; the lock is taken on {table.locked}. Source: {table.source}.",
        "",
    ]
    recursing = table is ALTER_TABLE
    head = ["key", "lock", "effect", *(["partitions too"] if recursing else []), "depends on the statement's content"]
    lines += [_row(head), _row(["---"] * len(head))]
    rows = [(key_label(k), r) for k, r in table.rows.items()]
    if table.default is not None:
        rows.append(("any other", table.default))
    for key, rule in rows:
        recurses = ["yes" if rule.recurses else "no"] if recursing else []
        lines.append(_row([f"`{key}`", rule.mode or "none", rule.effect, *recurses, _depends(rule)]))
    lines += ["", *(f"- {note}" for note in table.notes)] if table.notes else []
    return [*lines, ""]


def page() -> str:
    lines = [
        "# Lock rules",
        "",
        f"Generated from `x402db/plan/rules/` by `{COMMAND}`; do not edit by hand.",
        "",
        "What `migrate.py plan` predicts each statement locks, and what it does to the rows already there",
        "(effect: catalog < create < drop < scan < rewrite < unknown). tests/database/test_plan_proof.py checks the",
        "predictions against pg_locks on PostgreSQL 15 and 18; tests/unit/test_lock_rules.py checks every row.",
        "A statement no table maps is unknown: AccessExclusiveLock on every relation it names, or on any.",
        "",
    ]
    for table in TABLES:
        lines += _table(table)
    lines += ["## Row locks", "", _row(["locking clause", "row lock"]), _row(["---"] * 2)]
    lines += [_row([f"`{key_label(k)}`", v]) for k, v in ROW_LOCK.items()]
    lines += ["", _row(["foreign key action (pg_constraint)", "table lock", "row lock"]), _row(["---"] * 3)]
    lines += [_row([f"`{k}`", mode, rows]) for k, (mode, rows) in REFERENTIAL_ACTIONS.items()]
    lines += ["", "An ON UPDATE CASCADE takes RowExclusiveLock and FOR NO KEY UPDATE on the referencing rows."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print (or --write) the lock rules' reference page.")
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.write:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(page())
    else:
        sys.stdout.write(page())
    return 0


if __name__ == "__main__":
    sys.exit(main())
