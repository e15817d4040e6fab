"""CREATE TABLE and CREATE VIEW (the lock each clause takes, and on which relation), and the
statements that lock no relation at all: roles, schemas, functions, types, settings."""

from __future__ import annotations

from collections.abc import Callable

from pglast import ast, enums

from ..locks import ACCESS_EXCLUSIVE, ACCESS_SHARE, SHARE_ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, Effect
from .common import Handler, NoRefine, Rule, Table, dotted, reads, rv, unknown_statement
from .prediction import Catalog, Prediction

C = enums.ConstrType

CREATE_TABLE = Table[str, NoRefine](
    title="CREATE TABLE, CREATE VIEW",
    key="clause",
    locked="the relation the clause names",
    source="PostgreSQL documentation, CREATE TABLE (REFERENCES, LIKE, INHERITS, PARTITION OF); measured",
    rows={
        "the new table or view": Rule(ACCESS_EXCLUSIVE, Effect.CREATE),
        "REFERENCES (the referenced table)": Rule(SHARE_ROW_EXCLUSIVE, Effect.CREATE),
        "LIKE (the source table)": Rule(ACCESS_SHARE, Effect.CREATE),
        "INHERITS (each parent)": Rule(SHARE_UPDATE_EXCLUSIVE, Effect.CREATE),
        "PARTITION OF (the parent)": Rule(ACCESS_EXCLUSIVE, Effect.CREATE),
        "a view's query (each table read)": Rule(ACCESS_SHARE, Effect.CREATE),
    },
    notes=("CREATE TABLE IF NOT EXISTS of a table that exists locks nothing (effect catalog).",),
)


def _mode(clause: str) -> str:
    mode = CREATE_TABLE.rows[clause].mode
    assert mode is not None
    return mode


def _fk_name(node: ast.CreateStmt, conname: str | None, cols: tuple[str, ...]) -> str:
    """PostgreSQL's name for an unnamed foreign key: <table>_<columns>_fkey."""
    relname = node.relation.relname if node.relation else ""
    return conname or f"{relname}_{'_'.join(cols)}_fkey"


def _references(
    p: Prediction, cat: Catalog, node: ast.CreateStmt, table: str, c: ast.Constraint, cols: tuple[str, ...]
) -> None:
    ref = rv(cat, c.pktable)
    p.lock(ref, _mode("REFERENCES (the referenced table)"))
    p.changes.fk_added.append((table, _fk_name(node, c.conname, cols), ref, cols))


def create_table(node: ast.CreateStmt, cat: Catalog) -> Prediction:
    table = rv(cat, node.relation)
    p = Prediction("CREATE TABLE", Effect.CREATE)
    if node.if_not_exists and cat.exists(table):
        p.note = f"{table} exists: does nothing"
        p.effect = Effect.CATALOG
        return p
    p.lock(table, _mode("the new table or view"))
    p.changes.created.append(table)
    for elt in node.tableElts or ():
        if isinstance(elt, ast.ColumnDef):
            for c in elt.constraints or ():
                if c.contype == C.CONSTR_FOREIGN:
                    _references(p, cat, node, table, c, (elt.colname or "",))
        elif isinstance(elt, ast.Constraint) and elt.contype == C.CONSTR_FOREIGN:
            _references(p, cat, node, table, elt, tuple(a.sval for a in elt.fk_attrs or ()))
        elif isinstance(elt, ast.TableLikeClause):
            p.lock(rv(cat, elt.relation), _mode("LIKE (the source table)"))
    for parent in node.inhRelations or ():
        if node.partbound:
            p.lock(rv(cat, parent), _mode("PARTITION OF (the parent)"))
            p.changes.attached.append((rv(cat, parent), table))
        else:
            p.lock(rv(cat, parent), _mode("INHERITS (each parent)"))
    return p


def view(node: ast.ViewStmt, cat: Catalog) -> Prediction:
    p = Prediction("CREATE VIEW", Effect.CREATE)
    reads(p, cat, node.query)
    name = rv(cat, node.view)
    p.lock(name, _mode("the new table or view"))
    p.changes.created.append(name)
    return p


def create_schema(node: ast.CreateSchemaStmt, cat: Catalog) -> Prediction:
    if node.schemaElts:  # CREATE SCHEMA ... CREATE TABLE ...: its elements are not mapped
        return unknown_statement("CreateSchema", cat, node, "no lock map for CreateSchemaStmt")
    return Prediction("CREATE SCHEMA", Effect.CREATE)


# What such a statement leaves in the catalog that a later statement's prediction depends on.
Record = Callable[[Prediction, ast.Node], None]


def constrained_domain(p: Prediction, node: ast.Node) -> None:
    """A domain with constraints: a column added later with it rewrites its table."""
    if isinstance(node, ast.CreateDomainStmt) and node.constraints:
        p.changes.domains.append(dotted(node.domainname))


def function_name(p: Prediction, node: ast.Node) -> None:
    """Its name: a later call of that name may resolve to it rather than to a builtin."""
    if isinstance(node, ast.CreateFunctionStmt) and node.funcname:
        p.changes.functions.append(node.funcname[-1].sval)


NO_RELATION = Table[type[ast.Node], Record](
    title="Statements that lock no relation",
    key="statement (pglast node)",
    locked="none",
    source="PostgreSQL documentation: these commands lock catalog rows, not user relations",
    rows={
        ast.CreateRoleStmt: Rule(None, Effect.CREATE),
        ast.AlterRoleStmt: Rule(None),
        ast.DropRoleStmt: Rule(None, Effect.DROP),
        ast.GrantRoleStmt: Rule(None),
        ast.AlterDefaultPrivilegesStmt: Rule(None),
        ast.CreateFunctionStmt: Rule(None, Effect.CREATE, function_name),
        ast.AlterFunctionStmt: Rule(None),
        ast.CreateEnumStmt: Rule(None, Effect.CREATE),
        ast.CompositeTypeStmt: Rule(None, Effect.CREATE),
        ast.CreateDomainStmt: Rule(None, Effect.CREATE, constrained_domain),
        ast.DefineStmt: Rule(None, Effect.CREATE),
        ast.VariableSetStmt: Rule(None),
        ast.CreateExtensionStmt: Rule(None, Effect.CREATE),
        ast.AlterRoleSetStmt: Rule(None),
    },
)


def no_relation(node: ast.Node, _cat: Catalog) -> Prediction:
    rule = NO_RELATION.rule(type(node))
    p = Prediction(type(node).__name__.removesuffix("Stmt"), rule.effect)
    if rule.refine is not None:
        rule.refine(p, node)
    return p


PREDICT: dict[type[ast.Node], Handler] = {
    **{kind: no_relation for kind in NO_RELATION.rows},
    ast.CreateStmt: create_table,
    ast.ViewStmt: view,
    ast.CreateSchemaStmt: create_schema,
}
