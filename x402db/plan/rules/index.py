"""CREATE INDEX and DROP INDEX: the lock on the index's table, by whether the statement is
CONCURRENTLY (PostgreSQL documentation: CREATE INDEX, DROP INDEX; "Explicit Locking")."""

from __future__ import annotations

from typing import Any

from pglast import ast, enums, parse_sql

from ..locks import ACCESS_EXCLUSIVE, SHARE, SHARE_UPDATE_EXCLUSIVE, Effect, Mode
from .common import Handler, NoRefine, Rule, Table, names, rv, user_calls
from .prediction import Catalog, IndexShape, Prediction

CREATE_INDEX = Table[bool, NoRefine](
    title="CREATE INDEX",
    key="CONCURRENTLY",
    locked="the table, and each of its partitions (an index on a partitioned table is built on each)",
    source="PostgreSQL documentation, CREATE INDEX",
    rows={
        False: Rule(SHARE, Effect.SCAN),
        True: Rule(SHARE_UPDATE_EXCLUSIVE, Effect.SCAN),
    },
    notes=(
        "On a table this plan creates (or one that does not exist yet) the effect is create, not scan.",
        "A function its expressions or predicate call, run on every existing row, makes it unknown.",
    ),
)
DROP_INDEX = Table[bool, NoRefine](
    title="DROP INDEX",
    key="CONCURRENTLY",
    locked="the index's table",
    source="PostgreSQL documentation, DROP INDEX",
    rows={
        False: Rule(ACCESS_EXCLUSIVE, Effect.DROP),
        True: Rule(SHARE_UPDATE_EXCLUSIVE, Effect.DROP),
    },
    notes=("DROP INDEX IF EXISTS of a missing index locks nothing.",),
)


def not_null_tested(where: Any) -> frozenset[str] | None:
    """The columns a partial index's predicate tests IS NOT NULL, when that is all it tests (the
    empty set for no predicate); None for any other predicate."""
    if where is None:
        return frozenset()
    if isinstance(where, ast.NullTest) and where.nulltesttype == enums.NullTestType.IS_NOT_NULL:
        last = where.arg.fields[-1] if isinstance(where.arg, ast.ColumnRef) and where.arg.fields else None
        if isinstance(last, ast.String) and last.sval:
            return frozenset({last.sval})
    if isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
        found: set[str] = set()
        for arg in where.args or ():
            part = not_null_tested(arg)
            if part is None:
                return None
            found |= part
        return frozenset(found)
    return None


def predicate_shape(predicate_sql: str | None) -> frozenset[str] | None:
    """not_null_tested of a predicate as pg_get_expr prints it (None: no predicate)."""
    if predicate_sql is None:
        return frozenset()
    (raw,) = parse_sql(f"SELECT WHERE {predicate_sql}")
    return not_null_tested(getattr(raw.stmt, "whereClause", None))


def serves(shape: IndexShape, columns: tuple[str, ...]) -> bool:
    """Whether a foreign key's lookup of its referencing rows (`WHERE col = $1 ...`, which
    implies col IS NOT NULL) can use the index: its leading key columns are the key's columns, in
    any order, and its predicate, if any, only tests some of them IS NOT NULL."""
    keys, not_null = shape
    n = len(columns)
    return not_null is not None and not_null <= set(columns) and len(keys) >= n and set(keys[:n]) == set(columns)


def create_index(node: ast.IndexStmt, cat: Catalog) -> Prediction:
    table = rv(cat, node.relation)
    concurrent = bool(node.concurrent)
    rule = CREATE_INDEX.rule(concurrent)
    assert rule.mode is not None
    fresh = cat.is_new(table) or not cat.exists(table)
    p = Prediction(
        "CREATE INDEX CONCURRENTLY" if concurrent else "CREATE INDEX", Effect.CREATE if fresh else rule.effect
    )
    for rel in (table, *cat.partitions(table)):
        p.lock(rel, rule.mode)
    keys = tuple(e.name if isinstance(e, ast.IndexElem) and e.name else None for e in node.indexParams or ())
    p.changes.indexes_added.append((table, (keys, not_null_tested(node.whereClause))))
    if p.effect == Effect.SCAN:  # its expressions and predicate run on every existing row
        user_calls(p, cat, (node.indexParams, node.whereClause))
    return p


def drop_index(p: Prediction, cat: Catalog, node: ast.DropStmt, obj: Any, _mode: Mode | None) -> bool:
    """The index's table, under DROP INDEX's lock (CONCURRENTLY or not)."""
    table = cat.index_table(*names(obj))
    if table is None:
        p.note = "the index does not exist: does nothing" if node.missing_ok else p.note
        return True
    rule = DROP_INDEX.rule(bool(node.concurrent))
    assert rule.mode is not None
    p.lock(table, rule.mode)
    return True


PREDICT: dict[type[ast.Node], Handler] = {ast.IndexStmt: create_index}
