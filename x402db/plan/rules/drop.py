"""DROP: the lock by the kind of object dropped (pglast ObjectType). A relation goes with its
partitions; CASCADE reaches whatever depends on it (pg_depend), and is unknown for an object whose
dependents the plan cannot resolve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pglast import ast, enums

from ..locks import ACCESS_EXCLUSIVE, Effect, Mode
from .common import Handler, Rule, Table, dotted, names, unknown_statement
from .index import drop_index
from .prediction import Catalog, Prediction

OT = enums.ObjectType

# Drops one of the statement's objects under the row's lock; False when the statement is unknown.
Refine = Callable[[Prediction, Catalog, ast.DropStmt, Any, Mode | None], bool]
_CASCADE_UNKNOWN = "CASCADE may drop tables, columns or triggers that depend on it"


def _cascade(p: Prediction, cat: Catalog, kind: str, name: str) -> bool:
    """CASCADE drops every object that depends on the one dropped, recursively (pg_depend): a
    relation among them is dropped, and the table of a dependent column, constraint, trigger,
    policy or rule is locked AccessExclusiveLock. False when the object cannot be resolved."""
    found = cat.dependents(kind, name)
    if found is None:
        return False
    for rel, dropped in found:
        p.lock(rel, ACCESS_EXCLUSIVE)
        if dropped and rel not in p.changes.dropped:
            p.changes.dropped.append(rel)
    return True


def drop_relation(p: Prediction, cat: Catalog, node: ast.DropStmt, obj: Any, mode: Mode | None) -> bool:
    """Its partitions too; the referenced table of each of its foreign keys AccessExclusiveLock
    (their triggers there go); CASCADE: everything that depends on it."""
    assert mode is not None
    rel = cat.qualify(*names(obj))
    if not cat.exists(rel):
        p.note = f"{rel} does not exist: does nothing" if node.missing_ok else p.note
        return True
    for part in (rel, *cat.partitions(rel)):
        p.lock(part, mode)
        p.changes.dropped.append(part)
    for conname, (ref, cols) in cat.foreign_keys(rel).items():
        if ref != rel:
            p.lock(ref, ACCESS_EXCLUSIVE)
        p.changes.fk_dropped.append((rel, conname, cols))
    if node.behavior == enums.DropBehavior.DROP_CASCADE and not _cascade(p, cat, "relation", rel):
        for other in cat.referencing(rel):  # created by this plan: pg_depend cannot know
            p.lock(other, ACCESS_EXCLUSIVE)
    return True


def drop_table_object(p: Prediction, cat: Catalog, node: ast.DropStmt, obj: Any, mode: Mode | None) -> bool:
    """Its table; IF EXISTS of an absent one returns before locking the table."""
    assert mode is not None and node.removeType is not None
    parts = [o.sval for o in obj]
    table = cat.qualify(parts[-3] if len(parts) > 2 else None, parts[-2])
    kind = node.removeType.name.removeprefix("OBJECT_").lower()
    if cat.exists(table) and (cat.has_object(kind, table, parts[-1]) or not node.missing_ok):
        p.lock(table, mode)
        p.changes.objects_dropped.append((kind, table, parts[-1]))
    else:
        p.note = f"no {kind} {parts[-1]} on {table}: does nothing"
    return True


def _drop_cascading(kind: str) -> Refine:
    def drop_with_dependents(p: Prediction, cat: Catalog, node: ast.DropStmt, obj: Any, mode: Mode | None) -> bool:
        """No lock of its own; CASCADE: its dependents (pg_depend), unknown when it cannot be resolved."""
        if node.behavior != enums.DropBehavior.DROP_CASCADE:
            return True
        if isinstance(obj, ast.TypeName):
            name: str | None = dotted(obj.names)
        else:
            name = ".".join(o.sval for o in obj) if isinstance(obj, tuple) else getattr(obj, "sval", None)
        return name is not None and _cascade(p, cat, kind, name)

    return drop_with_dependents


_RELATION = Rule[Refine](ACCESS_EXCLUSIVE, Effect.DROP, drop_relation)
_TABLE_OBJECT = Rule[Refine](ACCESS_EXCLUSIVE, Effect.CATALOG, drop_table_object)

DROP = Table[enums.ObjectType, Refine](
    title="DROP",
    key="object type (pglast ObjectType)",
    locked="the relation dropped, or the table a policy, trigger or rule is on",
    source="PostgreSQL documentation, DROP TABLE, DROP INDEX, DROP POLICY, DROP TRIGGER, DROP RULE; pg_depend",
    rows={
        OT.OBJECT_TABLE: _RELATION,
        OT.OBJECT_VIEW: _RELATION,
        OT.OBJECT_MATVIEW: _RELATION,
        OT.OBJECT_FOREIGN_TABLE: _RELATION,
        OT.OBJECT_SEQUENCE: _RELATION,
        OT.OBJECT_INDEX: Rule(None, Effect.DROP, drop_index),
        OT.OBJECT_POLICY: _TABLE_OBJECT,
        OT.OBJECT_TRIGGER: _TABLE_OBJECT,
        OT.OBJECT_RULE: _TABLE_OBJECT,
        OT.OBJECT_SCHEMA: Rule(None, Effect.DROP, _drop_cascading("schema")),
        OT.OBJECT_TYPE: Rule(None, Effect.DROP, _drop_cascading("type")),
        OT.OBJECT_DOMAIN: Rule(None, Effect.DROP, _drop_cascading("type")),
    },
    default=Rule(None, Effect.DROP),
    notes=("Any other object dropped with CASCADE is unknown: its dependents are not resolved.",),
)


def drop(node: ast.DropStmt, cat: Catalog) -> Prediction:
    what = node.removeType
    assert what is not None
    rule = DROP.rule(what)
    p = Prediction(f"DROP {what.name.removeprefix('OBJECT_')}", rule.effect)
    cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
    objects = node.objects or ()
    named = {cat.qualify(*names(obj)) for obj in objects} if rule.refine is drop_relation else set()
    for obj in objects:
        if rule.refine is None and not cascade:
            continue
        if rule.refine is None or not rule.refine(p, cat, node, obj, rule.mode):
            return unknown_statement(p.kind + " CASCADE", cat, node, _CASCADE_UNKNOWN)
    if cascade:
        p.kind += " CASCADE"
        also = [r for r in p.changes.dropped if r not in named]
        if also:
            p.note = "; ".join(n for n in (p.note, "also drops " + ", ".join(also)) if n)
    return p


PREDICT: dict[type[ast.Node], Handler] = {ast.DropStmt: drop}
