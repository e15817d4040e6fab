"""What every family's rules share: a table row (`Rule`) and a table (`Table`), and the reading of
a parse tree (the relations a statement names, the functions it calls). pglast's nodes are typed
loosely (every field optional); the parse tree walkers take `Any` because they walk any node."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pglast import ast

from ..locks import ACCESS_SHARE, Effect, Mode
from .prediction import Catalog, Prediction

K = TypeVar("K")
# A statement family's entry point. Each takes its own node class; a map keyed by class cannot say
# so, hence Any.
Handler = Callable[[Any, Catalog], Prediction]
NoRefine = Callable[[], None]  # a table whose rows have nothing that depends on the statement's content
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rule(Generic[F]):
    """One row of a table: the lock mode taken and the least the statement does to existing rows.
    `refine` is the part that depends on the statement's content (its docstring says how), a
    small function of the family's own signature. mode None: no relation lock of its own."""

    mode: Mode | None
    effect: Effect = Effect.CATALOG
    refine: F | None = None
    recurses: bool = True  # ALTER TABLE: the subcommand is also run, under the same lock, on each partition


@dataclass(frozen=True)
class Table(Generic[K, F]):
    """A family's lock table, as PostgreSQL documents it: `rows` keyed by the statement's
    subcommand or kind (a pglast enum where there is one), `default` for every other key."""

    title: str
    key: str  # what the rows are keyed by
    locked: str  # which relation the mode is taken on
    source: str  # where PostgreSQL documents it
    rows: Mapping[K, Rule[F]]
    default: Rule[F] | None = None
    notes: tuple[str, ...] = field(default=())

    def rule(self, key: K) -> Rule[F]:
        found = self.rows.get(key, self.default)
        if found is None:
            raise KeyError(f"{self.title}: no rule for {key!r}")
        return found


def rv(cat: Catalog, node: Any) -> str:
    """The qualified name of a RangeVar, resolved on the search path as the run will."""
    return cat.qualify(node.schemaname, node.relname)


def names(objs: Any) -> tuple[str | None, str]:
    """(schema or None, name) of a dotted name given as a list of String nodes."""
    parts = [o.sval for o in objs]
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def dotted(objs: Any) -> str:
    return ".".join(n.sval for n in objs)


def range_vars(node: Any, ctes: set[str] | None = None) -> Iterator[ast.RangeVar]:
    """Every table a query reads (CTE names excluded)."""
    ctes = set() if ctes is None else ctes
    if isinstance(node, ast.WithClause):
        ctes |= {c.ctename for c in node.ctes or ()}
    if isinstance(node, ast.LockingClause):
        return  # FOR UPDATE OF x names an alias of the FROM list, not a table
    if isinstance(node, ast.RangeVar):
        if node.schemaname or node.relname not in ctes:
            yield node
        return
    if isinstance(node, ast.Node):
        with_clause = getattr(node, "withClause", None)
        if with_clause is not None:  # its names hide tables wherever the statement uses them
            ctes = ctes | {c.ctename for c in with_clause.ctes or ()}
        for name in node:
            yield from range_vars(getattr(node, name), ctes)
    elif isinstance(node, tuple):
        for item in node:
            yield from range_vars(item, ctes)


def reads(p: Prediction, cat: Catalog, node: Any) -> None:
    """Every table a statement's queries read: AccessShareLock."""
    for r in range_vars(node):
        if r.schemaname is None and (r.relname or "").startswith("pg_"):
            continue  # an unqualified pg_* name is a system catalog
        p.lock(rv(cat, r), ACCESS_SHARE)


def partitions_too(p: Prediction, cat: Catalog, node: Any, skip: str | None = None) -> None:
    """A query of a partitioned table (not ONLY) opens its partitions under the same lock: all of
    them, as the plan cannot tell which ones PostgreSQL prunes (an upper bound)."""
    for r in range_vars(node):
        rel = rv(cat, r)
        if r.inh and rel != skip and rel in p.locks:
            for part in cat.partitions(rel):
                p.lock(part, p.locks[rel])


def unknown_statement(kind: str, cat: Catalog, node: Any, why: str) -> Prediction:
    """A statement the rules do not map: AccessExclusiveLock on every relation it names."""
    p = Prediction(kind, Effect.UNKNOWN)
    p.unknown(why, on=[rv(cat, r) for r in range_vars(node)])
    return p


def walk(node: Any) -> Iterator[ast.Node]:
    """Every node of a parse tree, depth first."""
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from walk(getattr(node, name))
    elif isinstance(node, tuple):
        for item in node:
            yield from walk(item)


def _calls(node: Any) -> Iterator[str]:
    """The name of every function a statement's expressions call."""
    for n in walk(node):
        if isinstance(n, ast.FuncCall):
            yield dotted(n.funcname)


# Functions of pg_catalog that run the SQL text they are given: as opaque as a user function.
_RUNS_SQL = {
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
}


def _opaque(cat: Catalog, function: str) -> bool:
    return function.rpartition(".")[2] in _RUNS_SQL or not cat.builtin(function)


def user_calls(p: Prediction, cat: Catalog, node: Any, extra: tuple[str, ...] | list[str] = ()) -> None:
    """A function outside pg_catalog runs code the plan cannot read: the statement is unknown.
    So does one that runs SQL text, and a view whose query calls such a function."""
    views = [f for r in range_vars(node) if cat.exists(rv(cat, r)) for f in cat.user_code(rv(cat, r), "SELECT")]
    found = sorted({f for f in _calls(node) if _opaque(cat, f)} | set(extra) | set(views))
    if found:
        p.unknown("calls " + ", ".join(f"{f}()" for f in found) + ", whose body the plan cannot see")
