"""SELECT, INSERT, UPDATE, DELETE, MERGE and TRUNCATE: the table locks of reading and writing, and
the row locks each takes on existing rows, held until COMMIT (PostgreSQL documentation,
"Explicit Locking": table-level locks, "Row-Level Locks"; the foreign keys' RI triggers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pglast import ast, enums

from ..locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    FOR_SHARE,
    FOR_UPDATE,
    KEY_SHARE,
    NO_KEY_UPDATE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    Effect,
    RowMode,
    strongest_row,
)
from .common import Handler, NoRefine, Rule, Table, partitions_too, reads, rv, user_calls, walk
from .prediction import Catalog, Prediction

Write = ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt

DML = Table[type[ast.Node], NoRefine](
    title="SELECT, INSERT, UPDATE, DELETE, MERGE, TRUNCATE",
    key="statement (pglast node)",
    locked="the table written (TRUNCATE: each table emptied); every table only read: AccessShareLock",
    source='PostgreSQL documentation, "Explicit Locking" (Table-Level Locks)',
    rows={
        ast.SelectStmt: Rule(ACCESS_SHARE, Effect.SCAN),
        ast.InsertStmt: Rule(ROW_EXCLUSIVE, Effect.SCAN),
        ast.UpdateStmt: Rule(ROW_EXCLUSIVE, Effect.SCAN),
        ast.DeleteStmt: Rule(ROW_EXCLUSIVE, Effect.SCAN),
        ast.MergeStmt: Rule(ROW_EXCLUSIVE, Effect.SCAN),
        ast.TruncateStmt: Rule(ACCESS_EXCLUSIVE, Effect.REWRITE),
    },
    notes=(
        "A SELECT that reads no user relation is catalog-only.",
        "A partitioned table read or written (not ONLY) opens every partition under the same lock;"
        " an INSERT only the partitions its rows are routed to (not predicted).",
        "TRUNCATE also empties the partitions, and with CASCADE every table referencing one, recursively.",
        "A function outside pg_catalog, a trigger or a view calling one makes the statement unknown.",
    ),
)


def _mode(kind: type[ast.Node]) -> str:
    mode = DML.rule(kind).mode
    assert mode is not None
    return mode


# SELECT ... FOR <strength>: the table is RowShareLock, each row returned gets the row lock.
LOCKING = Table[enums.LockClauseStrength, NoRefine](
    title="SELECT ... FOR UPDATE / FOR SHARE",
    key="locking clause (pglast LockClauseStrength)",
    locked="each table the clause locks; the row lock is on every row it returns",
    source='PostgreSQL documentation, "Explicit Locking" (Row-Level Locks)',
    rows={
        enums.LockClauseStrength.LCS_FORKEYSHARE: Rule(ROW_SHARE, Effect.SCAN),
        enums.LockClauseStrength.LCS_FORSHARE: Rule(ROW_SHARE, Effect.SCAN),
        enums.LockClauseStrength.LCS_FORNOKEYUPDATE: Rule(ROW_SHARE, Effect.SCAN),
        enums.LockClauseStrength.LCS_FORUPDATE: Rule(ROW_SHARE, Effect.SCAN),
    },
)
ROW_LOCK = {
    enums.LockClauseStrength.LCS_FORKEYSHARE: KEY_SHARE,
    enums.LockClauseStrength.LCS_FORSHARE: FOR_SHARE,
    enums.LockClauseStrength.LCS_FORNOKEYUPDATE: NO_KEY_UPDATE,
    enums.LockClauseStrength.LCS_FORUPDATE: FOR_UPDATE,
}

# A foreign key's action on the referencing table when a referenced row is deleted or re-keyed
# (confdeltype / confupdtype): (table lock, row lock on the referencing rows).
REFERENTIAL_ACTIONS: dict[str, tuple[str, RowMode]] = {
    "a": (ROW_SHARE, KEY_SHARE),  # NO ACTION: checks them
    "r": (ROW_SHARE, KEY_SHARE),  # RESTRICT: checks them
    "c": (ROW_EXCLUSIVE, FOR_UPDATE),  # CASCADE of a DELETE: deletes them
    "n": (ROW_EXCLUSIVE, NO_KEY_UPDATE),  # SET NULL: updates them
    "d": (ROW_EXCLUSIVE, NO_KEY_UPDATE),  # SET DEFAULT: updates them
}
_CASCADED_UPDATE = (ROW_EXCLUSIVE, NO_KEY_UPDATE)  # ON UPDATE CASCADE updates the referencing columns


# ---- which rows --------------------------------------------------------------------------


def _where_rows(where: Any) -> str:
    if where is None:
        return "all"
    if isinstance(where, ast.A_Const) and isinstance(where.val, ast.Boolean) and where.val.boolval:
        return "all"
    if isinstance(where, ast.TypeCast) and isinstance(where.arg, ast.A_Const):
        return "all" if getattr(where.arg.val, "sval", None) in ("t", "true", "on", "yes", "1") else "where"
    return "where"


def _from_tables(items: Any, ctes: set[str]) -> Iterator[tuple[ast.RangeVar, str | None]]:
    """The tables a FROM list names at its own level, with their aliases (sub-selects included,
    as a locking clause without OF reaches into them)."""
    for item in items or ():
        if isinstance(item, ast.RangeVar):
            if item.schemaname or item.relname not in ctes:
                yield item, (item.alias.aliasname if item.alias else item.relname)
        elif isinstance(item, ast.JoinExpr):
            yield from _from_tables((item.larg, item.rarg), ctes)
        elif isinstance(item, ast.RangeSubselect) and isinstance(item.subquery, ast.SelectStmt):
            for r, _alias in _from_tables(item.subquery.fromClause, ctes):
                yield r, (item.alias.aliasname if item.alias else None)


def _ctes(node: Any) -> tuple[Any, ...]:
    with_clause = getattr(node, "withClause", None)
    return (with_clause.ctes if with_clause else ()) or ()


def _locking_clauses(p: Prediction, cat: Catalog, node: Any) -> None:
    """SELECT ... FOR UPDATE/SHARE, wherever it appears (a sub-select of an UPDATE's WHERE, a CTE):
    RowShareLock on each table it locks, and a row lock on every row it returns, until COMMIT."""
    for sel in (n for n in walk(node) if isinstance(n, ast.SelectStmt)):
        names = {c.ctename for c in _ctes(sel)}
        for clause in sel.lockingClause or ():
            mode = LOCKING.rule(clause.strength).mode
            assert mode is not None
            rows = ROW_LOCK[clause.strength]
            wanted = {r.relname for r in clause.lockedRels or ()}
            for r, alias in _from_tables(sel.fromClause, names):
                if not wanted or alias in wanted or r.relname in wanted:
                    p.lock(rv(cat, r), mode)
                    p.lock_rows(rv(cat, r), rows, "returned")
            if sel is node:
                p.kind = "SELECT " + rows


def _data_modifying_ctes(p: Prediction, cat: Catalog, node: Any) -> None:
    """WITH x AS (UPDATE ...) runs the UPDATE: its locks and row locks are the statement's."""
    for cte in _ctes(node):
        q = cte.ctequery
        if isinstance(q, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
            p.merge(write(q, cat))


def _update_mode(cat: Catalog, table: str, targets: Any) -> RowMode:
    """An UPDATE that changes a column of a unique index takes FOR UPDATE, any other FOR NO KEY UPDATE."""
    names = {t.name for t in targets or () if isinstance(t, ast.ResTarget) and t.name}
    return FOR_UPDATE if names & cat.key_columns(table) else NO_KEY_UPDATE


def _referencing_rows(
    p: Prediction, cat: Catalog, table: str, event: str, columns: set[str] | None, seen: frozenset[str] = frozenset()
) -> None:
    """A DELETE, or an UPDATE of referenced columns, of `table` fires the foreign keys that
    reference it (REFERENTIAL_ACTIONS), and a cascaded DELETE goes on to the tables that
    reference those, recursively."""
    for rel, on_delete, on_update, cols in cat.referencing_keys(table):
        if event == "UPDATE" and (columns is None or not columns & set(cols)):
            continue
        action = on_delete if event == "DELETE" else on_update
        mode, rows = REFERENTIAL_ACTIONS[action] if event == "DELETE" or action != "c" else _CASCADED_UPDATE
        p.lock(rel, mode)
        p.lock_rows(rel, rows, "referencing")
        if event == "DELETE" and action == "c" and rel not in seen:
            _referencing_rows(p, cat, rel, "DELETE", None, seen | {table})


def _referenced_rows(p: Prediction, cat: Catalog, table: str, targets: set[str | None] | None) -> None:
    """The foreign-key check of each row written reads the referenced table FOR KEY SHARE: every
    foreign key (targets None), or those on a column it sets."""
    for ref, cols in cat.foreign_keys(table).values():
        if targets is None or targets & set(cols):
            p.lock(ref, ROW_SHARE)
            p.lock_rows(ref, KEY_SHARE, "referenced")


# ---- each write: the rows it locks, and the events whose triggers it fires ----------------


def _update(p: Prediction, cat: Catalog, table: str, node: ast.UpdateStmt) -> list[str]:
    targets = {t.name for t in node.targetList or ()}
    p.lock_rows(table, _update_mode(cat, table, node.targetList), _where_rows(node.whereClause))
    _referencing_rows(p, cat, table, "UPDATE", {t for t in targets if t})
    _referenced_rows(p, cat, table, targets)
    return ["UPDATE"]


def _delete(p: Prediction, cat: Catalog, table: str, node: ast.DeleteStmt) -> list[str]:
    p.lock_rows(table, FOR_UPDATE, _where_rows(node.whereClause))
    _referencing_rows(p, cat, table, "DELETE", None)
    return ["DELETE"]


def _insert(p: Prediction, cat: Catalog, table: str, node: ast.InsertStmt) -> list[str]:
    events = ["INSERT"]
    # nextval() of a column it does not set (all of them without a column list): RowExclusiveLock.
    given = {c.name for c in node.cols or ()}
    for seq, col in cat.sequences(table).items():
        if col not in given:
            p.lock(seq, ROW_EXCLUSIVE)
    if cat.key_columns(table):
        p.lock_rows(table, FOR_UPDATE, "inserted")
    occ = node.onConflictClause
    if occ is not None and occ.action == enums.OnConflictAction.ONCONFLICT_UPDATE:
        # The existing row a new one conflicts with is locked, then updated.
        p.lock_rows(table, _update_mode(cat, table, occ.targetList), "conflicting")
        p.kind = "INSERT ON CONFLICT DO UPDATE"
        events.append("UPDATE")
    _referenced_rows(p, cat, table, None)
    return events


_MERGE_EVENTS = {
    enums.CmdType.CMD_DELETE: "DELETE",
    enums.CmdType.CMD_UPDATE: "UPDATE",
    enums.CmdType.CMD_INSERT: "INSERT",
}


def _merge(p: Prediction, cat: Catalog, table: str, node: ast.MergeStmt) -> list[str]:
    whens = node.mergeWhenClauses or ()
    events = [_MERGE_EVENTS[w.commandType] for w in whens if w.commandType in _MERGE_EVENTS]
    modes = [
        FOR_UPDATE if w.commandType == enums.CmdType.CMD_DELETE else _update_mode(cat, table, w.targetList)
        for w in whens
        if w.commandType in (enums.CmdType.CMD_DELETE, enums.CmdType.CMD_UPDATE)
    ]
    if modes:
        p.lock_rows(table, strongest_row(modes), "matched")
    # An INSERT action checks every foreign key, an UPDATE those on the columns it sets.
    inserts = "INSERT" in events
    _referenced_rows(p, cat, table, None if inserts else {t.name for w in whens for t in w.targetList or ()})
    return events


_WRITES: dict[type[ast.Node], Callable[[Prediction, Catalog, str, Any], list[str]]] = {
    ast.UpdateStmt: _update,
    ast.DeleteStmt: _delete,
    ast.InsertStmt: _insert,
    ast.MergeStmt: _merge,
}


def write(node: Write, cat: Catalog) -> Prediction:
    """INSERT, UPDATE, DELETE and MERGE: RowExclusiveLock on the table written, and a row lock on
    every existing row it changes or deletes, held until COMMIT."""
    p = Prediction(type(node).__name__.removesuffix("Stmt").upper(), DML.rule(type(node)).effect)
    reads(p, cat, node)
    _locking_clauses(p, cat, node)
    table = rv(cat, node.relation)
    p.lock(table, _mode(type(node)))
    events = _WRITES[type(node)](p, cat, table, node)
    # An INSERT opens only the partitions its rows are routed to (not predicted).
    partitions_too(p, cat, node, skip=table if isinstance(node, ast.InsertStmt) else None)
    _data_modifying_ctes(p, cat, node)
    user_calls(p, cat, node, [f for e in events for f in cat.user_code(table, e)] if cat.exists(table) else ())
    return p


def select(node: ast.SelectStmt, cat: Catalog) -> Prediction:
    p = Prediction("SELECT", Effect.CATALOG)
    reads(p, cat, node)
    _locking_clauses(p, cat, node)
    partitions_too(p, cat, node)
    if p.locks:
        p.worse(DML.rule(ast.SelectStmt).effect)
    _data_modifying_ctes(p, cat, node)
    user_calls(p, cat, node)
    return p


def truncate(node: ast.TruncateStmt, cat: Catalog) -> Prediction:
    """TRUNCATE empties each table named, its partitions, and with CASCADE every table that
    references one of them through a foreign key, recursively: AccessExclusiveLock on each."""
    rule = DML.rule(ast.TruncateStmt)
    assert rule.mode is not None
    p = Prediction("TRUNCATE", rule.effect)
    named = [rv(cat, r) for r in node.relations or ()]
    cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
    todo = list(named)
    seen: list[str] = []
    while todo:
        rel = todo.pop(0)
        if rel in seen:
            continue
        seen.append(rel)
        p.lock(rel, rule.mode)
        if node.restart_seqs:  # RESTART IDENTITY resets the sequences its columns own
            for seq in cat.sequences(rel):
                p.lock(seq, rule.mode)
        todo += cat.partitions(rel)
        if cascade:
            todo += cat.referencing(rel)
    more = [r for r in seen if r not in named]
    if more:
        p.kind = "TRUNCATE CASCADE" if cascade else p.kind
        p.note = "also empties " + ", ".join(more)
    user_calls(p, cat, (), [f for rel in seen if cat.exists(rel) for f in cat.user_code(rel, "TRUNCATE")])
    return p


PREDICT: dict[type[ast.Node], Handler] = {
    ast.SelectStmt: select,
    ast.InsertStmt: write,
    ast.UpdateStmt: write,
    ast.DeleteStmt: write,
    ast.MergeStmt: write,
    ast.TruncateStmt: truncate,
}
