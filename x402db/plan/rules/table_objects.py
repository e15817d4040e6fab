"""Statements about a table that leave its rows alone: CREATE TRIGGER, CREATE/ALTER POLICY,
COMMENT, GRANT/REVOKE and LOCK TABLE (PostgreSQL documentation: "Explicit Locking" and each
command's page; COMMENT's and GRANT's levels measured on PostgreSQL 15 and 18)."""

from __future__ import annotations

from collections.abc import Callable

from pglast import ast, enums

from ..locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    EXCLUSIVE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    Effect,
)
from .common import Handler, NoRefine, Rule, Table, reads, rv, unknown_statement
from .prediction import Catalog, Prediction

OT = enums.ObjectType

ON_TABLE = Table[type[ast.Node], NoRefine](
    title="CREATE TRIGGER, CREATE POLICY, ALTER POLICY",
    key="statement (pglast node)",
    locked="the table",
    source='PostgreSQL documentation, "Explicit Locking", CREATE TRIGGER, CREATE POLICY',
    rows={
        ast.CreateTrigStmt: Rule(SHARE_ROW_EXCLUSIVE),
        ast.CreatePolicyStmt: Rule(ACCESS_EXCLUSIVE),
        ast.AlterPolicyStmt: Rule(ACCESS_EXCLUSIVE),
    },
    notes=("A policy's expressions read the tables they name: AccessShareLock on each.",),
)


def trigger(node: ast.CreateTrigStmt, cat: Catalog) -> Prediction:
    mode = ON_TABLE.rule(ast.CreateTrigStmt).mode
    assert mode is not None
    p = Prediction("CREATE TRIGGER", Effect.CATALOG)
    table = rv(cat, node.relation)
    p.lock(table, mode)
    p.changes.objects_added.append(("trigger", table, node.trigname or ""))
    return p


def policy(node: ast.CreatePolicyStmt | ast.AlterPolicyStmt, cat: Catalog) -> Prediction:
    mode = ON_TABLE.rule(type(node)).mode
    assert mode is not None
    p = Prediction("CREATE POLICY" if isinstance(node, ast.CreatePolicyStmt) else "ALTER POLICY", Effect.CATALOG)
    reads(p, cat, (node.qual, node.with_check))
    table = rv(cat, node.table)
    p.lock(table, mode)
    p.changes.objects_added.append(("policy", table, node.policy_name or ""))
    return p


# The relation a COMMENT locks, from the object's dotted name.
Target = Callable[[Catalog, list[str]], str]


def the_relation(cat: Catalog, parts: list[str]) -> str:
    """The relation commented on."""
    return cat.qualify(parts[-2] if len(parts) > 1 else None, parts[-1])


def its_table(cat: Catalog, parts: list[str]) -> str:
    """The table the column, policy, trigger, rule or constraint belongs to."""
    return cat.qualify(parts[-3] if len(parts) > 2 else None, parts[-2])


_ON_RELATION = Rule[Target](SHARE_UPDATE_EXCLUSIVE, refine=the_relation)
_ON_ITS_TABLE = Rule[Target](SHARE_UPDATE_EXCLUSIVE, refine=its_table)

COMMENT = Table[enums.ObjectType, Target](
    title="COMMENT ON",
    key="object type (pglast ObjectType)",
    locked="the relation, or the table the object belongs to",
    source="PostgreSQL documentation, COMMENT; a constraint's level measured",
    rows={
        OT.OBJECT_TABLE: _ON_RELATION,
        OT.OBJECT_VIEW: _ON_RELATION,
        OT.OBJECT_MATVIEW: _ON_RELATION,
        OT.OBJECT_FOREIGN_TABLE: _ON_RELATION,
        OT.OBJECT_SEQUENCE: _ON_RELATION,
        OT.OBJECT_COLUMN: _ON_ITS_TABLE,
        OT.OBJECT_POLICY: _ON_ITS_TABLE,
        OT.OBJECT_TRIGGER: _ON_ITS_TABLE,
        OT.OBJECT_RULE: _ON_ITS_TABLE,
        OT.OBJECT_TABCONSTRAINT: Rule(ACCESS_SHARE, refine=its_table),  # measured: only read-locked
    },
    default=Rule(None),
)


def comment(node: ast.CommentStmt, cat: Catalog) -> Prediction:
    p = Prediction("COMMENT", Effect.CATALOG)
    assert node.objtype is not None
    rule = COMMENT.rule(node.objtype)
    if rule.mode is not None and rule.refine is not None:
        parts: list[str] = [o.sval for o in node.object] if isinstance(node.object, tuple) else []
        p.lock(rule.refine(cat, parts), rule.mode)
    return p


# Whether the server takes the row's lock at all.
Since = Callable[[Catalog], bool]
_GRANT_LOCKS_SINCE = 160000


def from_postgresql_16(cat: Catalog) -> bool:
    """From PostgreSQL 16 on, GRANT and REVOKE look a table up under AccessShareLock (15 takes none)."""
    return cat.server_version() >= _GRANT_LOCKS_SINCE


GRANT = Table[enums.ObjectType, Since](
    title="GRANT, REVOKE",
    key="object type (pglast ObjectType), for GRANT ... ON <object>",
    locked="each relation named",
    source="measured on PostgreSQL 15 and 18 (they rewrite the object's catalog row, its ACL)",
    rows={
        OT.OBJECT_TABLE: Rule(ACCESS_SHARE, refine=from_postgresql_16),
        OT.OBJECT_SEQUENCE: Rule(ACCESS_SHARE, refine=from_postgresql_16),
    },
    default=Rule(None),
    notes=("GRANT ... ON ALL TABLES IN SCHEMA locks every table of the schema: unknown.",),
)


def grant(node: ast.GrantStmt, cat: Catalog) -> Prediction:
    p = Prediction("GRANT" if node.is_grant else "REVOKE", Effect.CATALOG)
    if node.targtype == enums.GrantTargetType.ACL_TARGET_ALL_IN_SCHEMA:
        return unknown_statement("GRANT ALL IN SCHEMA", cat, node, "locks every table of the schema")
    if node.targtype != enums.GrantTargetType.ACL_TARGET_OBJECT or node.objtype is None:
        return p
    rule = GRANT.rule(node.objtype)
    if rule.mode is not None and rule.refine is not None and rule.refine(cat):
        for r in node.objects or ():
            p.lock(rv(cat, r), rule.mode)
    return p


LOCK = Table[int, NoRefine](
    title="LOCK TABLE",
    key="IN ... MODE (pglast LockStmt.mode)",
    locked="each table named",
    source='PostgreSQL documentation, LOCK and "Explicit Locking"',
    rows={
        1: Rule(ACCESS_SHARE),
        2: Rule(ROW_SHARE),
        3: Rule(ROW_EXCLUSIVE),
        4: Rule(SHARE_UPDATE_EXCLUSIVE),
        5: Rule(SHARE),
        6: Rule(SHARE_ROW_EXCLUSIVE),
        7: Rule(EXCLUSIVE),
        8: Rule(ACCESS_EXCLUSIVE),
    },
)


def lock(node: ast.LockStmt, cat: Catalog) -> Prediction:
    p = Prediction("LOCK TABLE", Effect.CATALOG)
    mode = LOCK.rule(node.mode or 8).mode
    assert mode is not None
    for r in node.relations or ():
        p.lock(rv(cat, r), mode)
    return p


PREDICT: dict[type[ast.Node], Handler] = {
    ast.CreateTrigStmt: trigger,
    ast.CreatePolicyStmt: policy,
    ast.AlterPolicyStmt: policy,
    ast.CommentStmt: comment,
    ast.GrantStmt: grant,
    ast.LockStmt: lock,
}
