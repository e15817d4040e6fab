"""SQL text to statements, with PostgreSQL's own parser (pglast, the libpg_query binding).

The engine executes exactly the statements `split` returns and the planner describes exactly
those, so plan and apply can never disagree on where a statement ends (dollar quoting, comments,
semicolons inside strings). DO blocks are opened with PL/pgSQL's own parser too: 005 alters
x402_resources from inside one, and a plan that stopped at "DO" would hide that lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_plpgsql, parse_sql
from pglast.parser import ParseError

from ..errors import UsageError

# PL/pgSQL expression parse modes (libpg_query's RawParseMode): 0 is a whole statement,
# 2 an expression, 3-5 the right-hand side of an assignment.
_PARSE_STATEMENT, _PARSE_TYPE = 0, 1


@dataclass(frozen=True)
class Statement:
    sql: str
    node: ast.Node = field(compare=False, repr=False)
    # For a DO block: the statements its body runs (IF branches included: the plan assumes
    # every branch runs, which can only over-state its locks), and whether it runs dynamic SQL.
    inner: tuple[Statement, ...] = ()
    dynamic: tuple[str, ...] = ()  # the EXECUTE expressions a DO body holds, as written

    @property
    def kind(self) -> str:
        return type(self.node).__name__


def _parse(text: str, where: str) -> list[tuple[str, ast.Node]]:
    try:
        raw = parse_sql(text)
    except ParseError as exc:
        raise UsageError(f"{where}: PostgreSQL cannot parse it: {exc}") from None
    # pglast turns libpg_query's byte offsets into character offsets (a test pins it).
    out = []
    for r in raw:
        assert r.stmt is not None  # libpg_query gives every statement it returns its node
        start = r.stmt_location or 0
        end = start + r.stmt_len if r.stmt_len else len(text)
        out.append((text[start:end].strip(), r.stmt))
    return out


def _strip_leading_comments(sql: str) -> str:
    # libpg_query starts a statement after the previous semicolon, comments included.
    lines = sql.splitlines()
    while lines and (not lines[0].strip() or lines[0].strip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines).strip()


def statements(text: str, where: str = "SQL") -> tuple[Statement, ...]:
    """Every top-level statement of `text`, in order, as PostgreSQL would run them."""
    out = []
    for sql, node in _parse(text, where):
        sql = _strip_leading_comments(sql)
        if isinstance(node, ast.DoStmt):
            inner, dynamic = _do_body(node, where)
            out.append(Statement(sql, node, inner, dynamic))
        else:
            out.append(Statement(sql, node))
    return tuple(out)


def split(text: str, where: str = "SQL") -> tuple[str, ...]:
    return tuple(s.sql for s in statements(text, where))


def controls_transaction(stmt: Statement) -> bool:
    """BEGIN, COMMIT, ROLLBACK, SAVEPOINT...: in a migration file, a COMMIT would commit part of
    the engine's one transaction and leave the rest to run outside any, with the ledger wrong."""
    return isinstance(stmt.node, ast.TransactionStmt)


def outside_transaction_only(stmt: Statement) -> bool:
    """Statements PostgreSQL refuses inside a transaction block (PreventInTransactionBlock)."""
    n = stmt.node
    if isinstance(
        n,
        (
            ast.VacuumStmt,
            ast.CreatedbStmt,
            ast.DropdbStmt,
            ast.AlterSystemStmt,
            ast.CreateTableSpaceStmt,
            ast.DropTableSpaceStmt,
            ast.CreateSubscriptionStmt,
            ast.DropSubscriptionStmt,
        ),
    ):
        return True
    if isinstance(n, (ast.IndexStmt, ast.DropStmt)):
        return bool(n.concurrent)
    if isinstance(n, ast.ReindexStmt):
        return any(p.defname == "concurrently" for p in n.params or ())
    if isinstance(n, ast.AlterTableStmt):
        return any(
            c.subtype == enums.AlterTableType.AT_DetachPartition and c.def_ is not None and c.def_.concurrent
            for c in n.cmds or ()
        )
    return False


def _do_body(node: ast.DoStmt, where: str) -> tuple[tuple[Statement, ...], tuple[str, ...]]:
    body, language = None, "plpgsql"
    for arg in node.args or ():
        if arg.defname == "as":
            body = arg.arg.sval
        elif arg.defname == "language":
            language = arg.arg.sval
    if body is None:
        return (), ()
    if language.lower() != "plpgsql":
        return (), (f"DO block in language {language}",)
    tag = "$x402_do$"
    while tag in body:
        tag = tag[:-1] + "_$"
    try:
        tree = parse_plpgsql(f"CREATE FUNCTION pg_temp.x402_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}")
    except ParseError as exc:
        raise UsageError(f"{where}: PostgreSQL cannot parse a DO block: {exc}") from None
    inner: list[Statement] = []
    dynamic: list[str] = []
    _walk(tree, inner, dynamic, where)
    return tuple(inner), tuple(dynamic)


def _walk(value: object, inner: list[Statement], dynamic: list[str], where: str) -> None:
    if isinstance(value, list):
        for item in value:
            _walk(item, inner, dynamic, where)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key in ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "PLpgSQL_stmt_open") and isinstance(item, dict):
            expr = item.get("query") or item.get("dynquery")
            if expr:
                dynamic.append(expr["PLpgSQL_expr"]["query"])
                continue
        if key == "PLpgSQL_expr" and isinstance(item, dict) and "query" in item:
            query, mode = item["query"], item.get("parseMode", _PARSE_STATEMENT)
            if mode == _PARSE_TYPE:
                continue
            if mode != _PARSE_STATEMENT:
                # An expression or an assignment's right-hand side: it runs as a SELECT.
                query = "SELECT " + (query.split(":=", 1)[1] if ":=" in query and mode > 2 else query)
            inner.extend(statements(query, where))
            continue
        _walk(item, inner, dynamic, where)


@dataclass(frozen=True)
class ForeignKeyUse:
    """A foreign key a statement adds or drops, as far as the text says: what the engine must
    lock on the table it references before anything else (migrate/lock_order.py)."""

    table: str  # the referencing table for a drop; the referenced one for an add
    constraint: str | None = None  # a drop of this named constraint (it may be no foreign key)
    column: str | None = None  # a drop of this column, and of any foreign key over it
    added: bool = False  # True: `table` is the referenced table of a foreign key being added


def _qualified(rv: ast.RangeVar) -> str:
    return ".".join(_quote(p) for p in (rv.schemaname, rv.relname) if p)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def foreign_key_uses(stmt: Statement) -> tuple[ForeignKeyUse, ...]:
    """The foreign keys `stmt` (a DO block's body included) adds or may drop. Adding or dropping
    one locks its referenced table too, which is the table the application locks first."""
    out: list[ForeignKeyUse] = []
    for s in (stmt, *stmt.inner):
        n = s.node
        for c in _nodes(n, ast.Constraint):
            if c.contype == enums.ConstrType.CONSTR_FOREIGN and c.pktable is not None:
                out.append(ForeignKeyUse(_qualified(c.pktable), added=True))
        if isinstance(n, ast.AlterTableStmt) and n.relation is not None:
            table = _qualified(n.relation)
            for cmd in n.cmds or ():
                if cmd.subtype == enums.AlterTableType.AT_DropConstraint:
                    out.append(ForeignKeyUse(table, constraint=cmd.name))
                elif cmd.subtype == enums.AlterTableType.AT_DropColumn:
                    out.append(ForeignKeyUse(table, column=cmd.name))
        elif isinstance(n, ast.DropStmt) and n.removeType == enums.ObjectType.OBJECT_TABLE:
            for obj in n.objects or ():
                out.append(ForeignKeyUse(".".join(_quote(p.sval) for p in obj)))
    return tuple(out)


def _nodes(value: object, kind: type[ast.Node]) -> Iterator[Any]:
    if isinstance(value, kind):
        yield value
    if isinstance(value, ast.Node):
        for attr in getattr(value, "__slots__", ()):  # pglast keeps each node's fields there
            yield from _nodes(getattr(value, attr, None), kind)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _nodes(item, kind)
