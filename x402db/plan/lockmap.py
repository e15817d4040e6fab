"""The lock map: which relation locks a statement takes, and what it does to existing rows.

The rules are tables, one module per statement family under rules/, following PostgreSQL's
documentation ("Explicit Locking", and each command's page: ALTER TABLE's per-subcommand levels,
CREATE INDEX [CONCURRENTLY], CREATE TRIGGER, COMMENT, ...) and tablecmds.c's
AlterTableGetLockLevel. tests/database/test_plan_proof.py runs every statement of sql/ on PostgreSQL 15
and 18 and compares pg_locks with what the map says, so a wrong entry fails; tests/unit checks
each row without a server.

Only tables (and views, sequences, foreign tables) are named; an index's or TOAST table's lock
goes with its table. A statement the map does not know is unknown: AccessExclusiveLock on every
relation it names, or on "*" (any relation) when it names none it can resolve.

One cost outlives the statement and is said too: a foreign key that no index of its table serves
(none in the catalog, none built by an earlier statement of the run) makes every DELETE from the
referenced table, once the key is in force, read the whole referencing table to find the rows
that point at the deleted one (Prediction.unindexed_fks; the view's writers sentence words it).
"""

from __future__ import annotations

from pglast import ast

from ..migrate.sqlparse import Statement
from .locks import Effect
from .rules import alter_table, create, dml, drop, index, table_objects
from .rules.common import Handler, unknown_statement
from .rules.prediction import Catalog, CatalogChanges, Prediction

__all__ = ["PREDICT", "Catalog", "CatalogChanges", "Handler", "Prediction", "predict", "simulate"]

# The lock map itself: one entry per statement kind, from its family's module. A kind that is
# not here is unknown.
PREDICT: dict[type[ast.Node], Handler] = {
    **create.PREDICT,
    **alter_table.PREDICT,
    **index.PREDICT,
    **drop.PREDICT,
    **table_objects.PREDICT,
    **dml.PREDICT,
}


def predict(node: ast.Node, cat: Catalog) -> Prediction:
    """The locks and effect of one (non-DO) statement, given the database it will run on."""
    handler = PREDICT.get(type(node))
    if handler is None:
        kind = type(node).__name__
        return unknown_statement(kind.removesuffix("Stmt"), cat, node, f"no lock map for {kind}")
    return handler(node, cat)


def simulate(stmt: Statement, cat: Catalog) -> Prediction:
    """Predict one parsed statement (sqlparse.Statement) and apply it to `cat`, so the next
    statement is predicted against the database as this one leaves it. A DO block is the union
    of the statements its body runs; EXECUTE of dynamic SQL makes it unknown."""
    if not isinstance(stmt.node, ast.DoStmt):
        p = predict(stmt.node, cat)
        cat.apply(p.changes)
        return p
    p = Prediction("DO", Effect.CATALOG)
    for inner in stmt.inner:
        p.merge(simulate(inner, cat))  # each inner statement was applied to `cat` already
    if stmt.dynamic:
        p.unknown("runs dynamic SQL: " + "; ".join(stmt.dynamic), lead=True)
    return p
