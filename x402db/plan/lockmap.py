"""The lock map: which relation locks a statement takes, and what it does to existing rows.

The map follows PostgreSQL's documentation ("Explicit Locking", and each command's page: ALTER
TABLE's per-subcommand levels, CREATE INDEX [CONCURRENTLY], CREATE TRIGGER, COMMENT, ...) and
tablecmds.c's AlterTableGetLockLevel. tests/test_plan_proof.py runs every statement of sql/ on
PostgreSQL 15 and 18 and compares pg_locks with what this module says, so a wrong entry fails.

Only tables (and views, sequences, foreign tables) are named; an index's or TOAST table's lock
goes with its table. A statement the map does not know is `unknown`: AccessExclusiveLock on
every relation it names, or on "*" (any relation) when it names none it can resolve.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pglast import ast, enums

from .locks import (ACCESS_EXCLUSIVE, ACCESS_SHARE, ANY, EFFECTS, MODES, ROW_EXCLUSIVE, ROW_SHARE, SHARE,
                    SHARE_ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, strongest)

_SYSTEM = ("pg_catalog", "information_schema", "pg_toast")


class Catalog(Protocol):
    """What the map needs to know about the database, as it will be when the statement runs."""

    def qualify(self, schema: str | None, name: str) -> str: ...
    def exists(self, relation: str) -> bool: ...
    def is_new(self, relation: str) -> bool: ...  # created by a statement planned before this one
    def index_table(self, schema: str | None, index: str) -> str | None: ...
    def foreign_keys(self, table: str) -> dict[str, tuple[str, tuple[str, ...]]]: ...  # name -> (referenced, columns)
    def referencing(self, table: str) -> list[str]: ...  # tables with a foreign key to `table`
    def volatile(self, function: str) -> bool: ...
    def constrained_domain(self, type_name: str) -> bool: ...  # a domain with CHECK or NOT NULL constraints
    def constraint_valid(self, table: str, name: str) -> bool: ...
    def has_object(self, kind: str, table: str, name: str) -> bool: ...  # a policy, trigger or rule on `table`
    def server_version(self) -> int: ...  # server_version_num
    def partitions(self, table: str) -> list[str]: ...  # every partition below `table`, recursively
    def apply(self, p: "Prediction") -> None: ...  # the statement ran: relations and keys it made or removed


@dataclass
class Prediction:
    kind: str
    effect: str
    locks: dict[str, str] = field(default_factory=dict)
    known: bool = True
    note: str = ""
    created: list[str] = field(default_factory=list)  # relations this statement creates
    dropped: list[str] = field(default_factory=list)
    fk_added: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)  # table, name, referenced, cols
    fk_dropped: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)  # table, name, columns
    validated: list[tuple[str, str]] = field(default_factory=list)  # table, constraint: NOT VALID ones added, or validated
    not_valid_added: list[tuple[str, str]] = field(default_factory=list)
    objects_added: list[tuple[str, str, str]] = field(default_factory=list)  # kind, table, name (policies, triggers)
    objects_dropped: list[tuple[str, str, str]] = field(default_factory=list)
    attached: list[tuple[str, str]] = field(default_factory=list)  # parent, partition
    domains: list[str] = field(default_factory=list)  # constrained domains this statement creates
    detached: list[tuple[str, str]] = field(default_factory=list)

    def lock(self, relation: str | None, mode: str) -> None:
        if relation is None or relation.split(".", 1)[0] in _SYSTEM:
            return
        held = self.locks.get(relation)
        self.locks[relation] = mode if held is None else strongest((held, mode))

    def worse(self, effect: str) -> None:
        self.effect = max(self.effect, effect, key=EFFECTS.index)


def _rv(cat: Catalog, rv: ast.RangeVar) -> str:
    return cat.qualify(rv.schemaname, rv.relname)


def _names(objs) -> tuple[str | None, str]:
    parts = [o.sval for o in objs]
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def _range_vars(node, ctes: set[str] | None = None):
    """Every table a query reads (CTE names excluded)."""
    ctes = set() if ctes is None else ctes
    if isinstance(node, ast.WithClause):
        ctes |= {c.ctename for c in node.ctes or ()}
    if isinstance(node, ast.RangeVar):
        if node.schemaname or node.relname not in ctes:
            yield node
        return
    if isinstance(node, ast.Node):
        for name in node:
            yield from _range_vars(getattr(node, name), ctes)
    elif isinstance(node, tuple):
        for item in node:
            yield from _range_vars(item, ctes)


def _reads(p: Prediction, cat: Catalog, node) -> None:
    for rv in _range_vars(node):
        if rv.schemaname is None and rv.relname.startswith("pg_"):
            continue  # an unqualified pg_* name is a system catalog
        p.lock(_rv(cat, rv), ACCESS_SHARE)


def _unknown(kind: str, cat: Catalog, node, why: str) -> Prediction:
    p = Prediction(kind, "unknown", known=False, note=why)
    for rv in _range_vars(node):
        p.lock(_rv(cat, rv), ACCESS_EXCLUSIVE)
    if not p.locks:
        p.locks[ANY] = ACCESS_EXCLUSIVE
    return p


# ---- ALTER TABLE ---------------------------------------------------------------------------

AT = enums.AlterTableType
_SHARE_UPDATE_EXCLUSIVE_CMDS = {
    AT.AT_ValidateConstraint, AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions,
    AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_AttachPartition, AT.AT_DetachPartitionFinalize,
}
_SHARE_ROW_EXCLUSIVE_CMDS = {
    AT.AT_EnableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_DisableTrig,
    AT.AT_EnableTrigAll, AT.AT_DisableTrigAll, AT.AT_EnableTrigUser, AT.AT_DisableTrigUser,
}
_REWRITE_CMDS = {AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetAccessMethod, AT.AT_SetTableSpace, AT.AT_AddIdentity}
# Relation options whose change PostgreSQL allows under ShareUpdateExclusiveLock.
_LIGHT_RELOPTIONS = ("fillfactor", "autovacuum_", "toast.autovacuum_", "parallel_workers", "toast_tuple_target",
                     "vacuum_index_cleanup", "vacuum_truncate", "log_autovacuum_min_duration", "user_catalog_table")


def _default_is_volatile(expr, cat: Catalog) -> bool:
    """Volatile defaults force a rewrite when a column is added; constants and stable or
    immutable functions are stored once in the catalog (PostgreSQL 11+)."""
    if expr is None or isinstance(expr, ast.A_Const):
        return False
    if isinstance(expr, ast.TypeCast):
        return _default_is_volatile(expr.arg, cat)
    if isinstance(expr, ast.FuncCall):
        name = ".".join(n.sval for n in expr.funcname)
        return cat.volatile(name) or any(_default_is_volatile(a, cat) for a in expr.args or ())
    if isinstance(expr, ast.SQLValueFunction):
        return False
    return True  # an expression we do not analyse: assume the worst


def _add_column(p: Prediction, cat: Catalog, table: str, col: ast.ColumnDef) -> None:
    cons = col.constraints or ()
    types = {c.contype for c in cons}
    C = enums.ConstrType
    default = next((c.raw_expr for c in cons if c.contype == C.CONSTR_DEFAULT), None)
    serial = col.typeName and col.typeName.names[-1].sval in ("serial", "bigserial", "smallserial", "serial4", "serial8", "serial2")
    # A domain with constraints is checked row by row: PostgreSQL rewrites the table, default or not.
    domain = col.typeName and cat.constrained_domain(".".join(n.sval for n in col.typeName.names))
    if C.CONSTR_GENERATED in types or C.CONSTR_IDENTITY in types or serial or domain or _default_is_volatile(default, cat):
        p.worse("rewrite")
    elif C.CONSTR_PRIMARY in types or C.CONSTR_UNIQUE in types or C.CONSTR_CHECK in types or (
            C.CONSTR_NOTNULL in types and default is None):
        p.worse("scan")
    for c in cons:
        if c.contype == C.CONSTR_FOREIGN:
            ref = _rv(cat, c.pktable)
            p.lock(ref, SHARE_ROW_EXCLUSIVE)
            p.fk_added.append((table, c.conname or "", ref, (col.colname,)))
            if not c.skip_validation:
                p.worse("scan")


def _add_constraint(p: Prediction, cat: Catalog, table: str, c: ast.Constraint) -> str:
    C = enums.ConstrType
    if c.contype == C.CONSTR_FOREIGN:
        ref = _rv(cat, c.pktable)
        p.lock(ref, SHARE_ROW_EXCLUSIVE)
        p.fk_added.append((table, c.conname or "", ref, tuple(a.sval for a in c.fk_attrs or ())))
        if c.skip_validation:
            p.not_valid_added.append((table, c.conname or ""))
        else:
            p.worse("scan")
            p.validated.append((table, c.conname or ""))
        return SHARE_ROW_EXCLUSIVE
    if c.indexname:  # ... USING INDEX: the index already exists
        return ACCESS_EXCLUSIVE
    if c.skip_validation:
        p.not_valid_added.append((table, c.conname or ""))
        return ACCESS_EXCLUSIVE
    p.validated.append((table, c.conname or ""))
    if c.contype in (C.CONSTR_CHECK, C.CONSTR_PRIMARY, C.CONSTR_UNIQUE,
                                               C.CONSTR_EXCLUSION, C.CONSTR_NOTNULL):
        p.worse("scan")
    return ACCESS_EXCLUSIVE


def _drop_fk(p: Prediction, cat: Catalog, table: str, name: str | None = None, column: str | None = None) -> None:
    # Dropping a foreign key removes its triggers on the referenced table too, which takes
    # AccessExclusiveLock there (RemoveTriggerById).
    for conname, (ref, cols) in cat.foreign_keys(table).items():
        if (name is not None and conname == name) or (column is not None and column in cols):
            if ref != table:
                p.lock(ref, ACCESS_EXCLUSIVE)
            p.fk_dropped.append((table, conname, cols))


def _alter_table(node: ast.AlterTableStmt, cat: Catalog) -> Prediction:
    table = _rv(cat, node.relation)
    p = Prediction("ALTER TABLE", "catalog")
    if node.missing_ok and not cat.exists(table):
        p.note = f"{table} does not exist: does nothing"
        return p
    if node.objtype == enums.ObjectType.OBJECT_INDEX:
        p.note = "an index only; its table is not locked"
        return p
    modes = []
    for cmd in node.cmds:
        st = cmd.subtype
        if st in (AT.AT_AttachPartition, AT.AT_DetachPartition, AT.AT_DetachPartitionFinalize):
            # The partition itself is locked AccessExclusiveLock whatever the parent gets (a
            # concurrent detach takes it in its second transaction); attaching scans it to check
            # the bound unless a constraint already proves it.
            part = _rv(cat, cmd.def_.name)
            p.lock(part, ACCESS_EXCLUSIVE)
            if st == AT.AT_AttachPartition:
                p.worse("scan")
                p.attached.append((table, part))
            else:
                p.detached.append((table, part))
        if st in _SHARE_UPDATE_EXCLUSIVE_CMDS:
            mode = SHARE_UPDATE_EXCLUSIVE
            if st == AT.AT_ValidateConstraint and not cat.constraint_valid(table, cmd.name):
                # An already valid constraint returns at once: no scan, no lock on the referenced table.
                p.worse("scan")
                p.validated.append((table, cmd.name))
                fk = cat.foreign_keys(table).get(cmd.name)
                if fk and fk[0] != table:
                    p.lock(fk[0], ROW_SHARE)
        elif st in _SHARE_ROW_EXCLUSIVE_CMDS:
            mode = SHARE_ROW_EXCLUSIVE
        elif st in (AT.AT_SetRelOptions, AT.AT_ResetRelOptions):
            names = [d.defname if not d.defnamespace else f"{d.defnamespace}.{d.defname}" for d in cmd.def_ or ()]
            light = names and all(n.startswith(_LIGHT_RELOPTIONS) for n in names)
            mode = SHARE_UPDATE_EXCLUSIVE if light else ACCESS_EXCLUSIVE
        elif st == AT.AT_DetachPartition:
            mode = SHARE_UPDATE_EXCLUSIVE if cmd.def_ and cmd.def_.concurrent else ACCESS_EXCLUSIVE
        elif st in (AT.AT_AddConstraint, AT.AT_ReAddConstraint):
            mode = _add_constraint(p, cat, table, cmd.def_)
        else:
            mode = ACCESS_EXCLUSIVE
            if st == AT.AT_AddColumn:
                _add_column(p, cat, table, cmd.def_)
            elif st == AT.AT_AlterColumnType or st in _REWRITE_CMDS:
                p.worse("rewrite")
            elif st == AT.AT_SetNotNull:
                p.worse("scan")
            elif st == AT.AT_DropConstraint:
                _drop_fk(p, cat, table, name=cmd.name)
            elif st == AT.AT_DropColumn:
                _drop_fk(p, cat, table, column=cmd.name)
        modes.append(mode)
    p.lock(table, strongest(modes))
    return p


# ---- the other statements ------------------------------------------------------------------

def _create_table(node: ast.CreateStmt, cat: Catalog) -> Prediction:
    table = _rv(cat, node.relation)
    p = Prediction("CREATE TABLE", "create")
    if node.if_not_exists and cat.exists(table):
        p.note = f"{table} exists: does nothing"
        p.effect = "catalog"
        return p
    p.lock(table, ACCESS_EXCLUSIVE)
    p.created.append(table)
    C = enums.ConstrType
    for elt in node.tableElts or ():
        if isinstance(elt, ast.ColumnDef):
            for c in elt.constraints or ():
                if c.contype == C.CONSTR_FOREIGN:
                    ref = _rv(cat, c.pktable)
                    p.lock(ref, SHARE_ROW_EXCLUSIVE)
                    p.fk_added.append((table, c.conname or f"{node.relation.relname}_{elt.colname}_fkey", ref, (elt.colname,)))
        elif isinstance(elt, ast.Constraint) and elt.contype == C.CONSTR_FOREIGN:
            ref = _rv(cat, elt.pktable)
            p.lock(ref, SHARE_ROW_EXCLUSIVE)
            cols = tuple(a.sval for a in elt.fk_attrs or ())
            p.fk_added.append((table, elt.conname or f"{node.relation.relname}_{'_'.join(cols)}_fkey", ref, cols))
        elif isinstance(elt, ast.TableLikeClause):
            p.lock(_rv(cat, elt.relation), ACCESS_SHARE)
    for parent in node.inhRelations or ():
        p.lock(_rv(cat, parent), ACCESS_EXCLUSIVE if node.partbound else SHARE_UPDATE_EXCLUSIVE)
        if node.partbound:
            p.attached.append((_rv(cat, parent), table))
    return p


def _index(node: ast.IndexStmt, cat: Catalog) -> Prediction:
    table = _rv(cat, node.relation)
    p = Prediction("CREATE INDEX CONCURRENTLY" if node.concurrent else "CREATE INDEX",
                   "create" if cat.is_new(table) or not cat.exists(table) else "scan")
    for rel in (table, *cat.partitions(table)):  # an index on a partitioned table is built on each partition
        p.lock(rel, SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE)
    return p


_RELATION_DROPS = {
    enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_VIEW, enums.ObjectType.OBJECT_MATVIEW,
    enums.ObjectType.OBJECT_FOREIGN_TABLE, enums.ObjectType.OBJECT_SEQUENCE,
}
_ON_TABLE = {enums.ObjectType.OBJECT_POLICY, enums.ObjectType.OBJECT_TRIGGER, enums.ObjectType.OBJECT_RULE}


def _drop(node: ast.DropStmt, cat: Catalog) -> Prediction:
    O = enums.ObjectType
    what = node.removeType
    p = Prediction(f"DROP {what.name.removeprefix('OBJECT_')}", "drop")
    cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
    for obj in node.objects:
        if what in _RELATION_DROPS:
            rel = cat.qualify(*_names(obj))
            if not cat.exists(rel):
                p.note = f"{rel} does not exist: does nothing" if node.missing_ok else p.note
                continue
            for part in (rel, *cat.partitions(rel)):  # a partitioned table's partitions go with it
                p.lock(part, ACCESS_EXCLUSIVE)
                p.dropped.append(part)
            for conname, (ref, cols) in cat.foreign_keys(rel).items():
                if ref != rel:
                    p.lock(ref, ACCESS_EXCLUSIVE)
                p.fk_dropped.append((rel, conname, cols))
            if cascade:
                for other in cat.referencing(rel):
                    p.lock(other, ACCESS_EXCLUSIVE)
        elif what == O.OBJECT_INDEX:
            table = cat.index_table(*_names(obj))
            if table is None:
                p.note = "the index does not exist: does nothing" if node.missing_ok else p.note
                continue
            p.lock(table, SHARE_UPDATE_EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE)
        elif what in _ON_TABLE:
            parts = [o.sval for o in obj]
            table = cat.qualify(parts[-3] if len(parts) > 2 else None, parts[-2])
            kind = what.name.removeprefix("OBJECT_").lower()
            # IF EXISTS on an absent policy or trigger returns before locking the table.
            if cat.exists(table) and (cat.has_object(kind, table, parts[-1]) or not node.missing_ok):
                p.lock(table, ACCESS_EXCLUSIVE)
                p.objects_dropped.append((kind, table, parts[-1]))
            else:
                p.note = f"no {kind} {parts[-1]} on {table}: does nothing"
        elif cascade:
            return _unknown(p.kind + " CASCADE", cat, node, "CASCADE may drop tables, columns or triggers that depend on it")
    if what in _ON_TABLE:
        p.effect = "catalog"
    return p


def _comment(node: ast.CommentStmt, cat: Catalog) -> Prediction:
    O = enums.ObjectType
    p = Prediction("COMMENT", "catalog")
    parts = [o.sval for o in node.object] if isinstance(node.object, tuple) else []
    if node.objtype in (O.OBJECT_TABLE, O.OBJECT_VIEW, O.OBJECT_MATVIEW, O.OBJECT_FOREIGN_TABLE, O.OBJECT_SEQUENCE):
        p.lock(cat.qualify(parts[-2] if len(parts) > 1 else None, parts[-1]), SHARE_UPDATE_EXCLUSIVE)
    elif node.objtype in (O.OBJECT_COLUMN, O.OBJECT_POLICY, O.OBJECT_TRIGGER, O.OBJECT_RULE):
        p.lock(cat.qualify(parts[-3] if len(parts) > 2 else None, parts[-2]), SHARE_UPDATE_EXCLUSIVE)
    elif node.objtype == O.OBJECT_TABCONSTRAINT:  # measured: a constraint's table is only read-locked
        p.lock(cat.qualify(parts[-3] if len(parts) > 2 else None, parts[-2]), ACCESS_SHARE)
    return p


def _policy(node, cat: Catalog) -> Prediction:
    p = Prediction("CREATE POLICY" if isinstance(node, ast.CreatePolicyStmt) else "ALTER POLICY", "catalog")
    _reads(p, cat, (node.qual, node.with_check))
    table = _rv(cat, node.table)
    p.lock(table, ACCESS_EXCLUSIVE)
    p.objects_added.append(("policy", table, node.policy_name))
    return p


# Statements that lock no relation: roles, schemas, functions, privileges on non-tables.
_GRANT_LOCKS_SINCE = 160000
_GRANT_ON_RELATIONS = {enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_SEQUENCE}
_NO_RELATION = {
    "CreateRoleStmt": "create", "AlterRoleStmt": "catalog", "DropRoleStmt": "drop", "GrantRoleStmt": "catalog",
    "AlterDefaultPrivilegesStmt": "catalog", "CreateFunctionStmt": "create", "AlterFunctionStmt": "catalog",
    "CreateEnumStmt": "create", "CompositeTypeStmt": "create", "CreateDomainStmt": "create", "DefineStmt": "create",
    "VariableSetStmt": "catalog", "CreateExtensionStmt": "create", "AlterRoleSetStmt": "catalog",
}


def _trigger(node: ast.CreateTrigStmt, cat: Catalog) -> Prediction:
    p = Prediction("CREATE TRIGGER", "catalog")
    table = _rv(cat, node.relation)
    p.lock(table, SHARE_ROW_EXCLUSIVE)
    p.objects_added.append(("trigger", table, node.trigname))
    return p


def _lock(node: ast.LockStmt, cat: Catalog) -> Prediction:
    p = Prediction("LOCK TABLE", "catalog")
    for rv in node.relations:
        p.lock(_rv(cat, rv), MODES[node.mode - 1])
    return p


def _grant(node: ast.GrantStmt, cat: Catalog) -> Prediction:
    # GRANT and REVOKE rewrite the object's catalog row (its ACL). From PostgreSQL 16 on,
    # they look a table up under AccessShareLock first (measured: 15 takes none, 18 does).
    p = Prediction("GRANT" if node.is_grant else "REVOKE", "catalog")
    if (node.targtype == enums.GrantTargetType.ACL_TARGET_OBJECT and node.objtype in _GRANT_ON_RELATIONS
            and cat.server_version() >= _GRANT_LOCKS_SINCE):
        for rv in node.objects:
            p.lock(_rv(cat, rv), ACCESS_SHARE)
    elif node.targtype == enums.GrantTargetType.ACL_TARGET_ALL_IN_SCHEMA:
        return _unknown("GRANT ALL IN SCHEMA", cat, node, "locks every table of the schema")
    return p


def _select(node: ast.SelectStmt, cat: Catalog) -> Prediction:
    p = Prediction("SELECT", "catalog")
    _reads(p, cat, node)
    if p.locks:
        p.effect = "scan"
    return p


def _write(node, cat: Catalog) -> Prediction:
    """INSERT, UPDATE and DELETE."""
    p = Prediction(type(node).__name__.removesuffix("Stmt").upper(), "scan")
    _reads(p, cat, node)
    table = _rv(cat, node.relation)
    p.lock(table, ROW_EXCLUSIVE)
    if not isinstance(node, ast.DeleteStmt):
        # The foreign-key check of each written row reads the referenced table FOR KEY SHARE.
        # (A DELETE's or a key UPDATE's checks on referencing tables are not modelled.)
        targets = None if isinstance(node, ast.InsertStmt) else {t.name for t in node.targetList or ()}
        for ref, cols in cat.foreign_keys(table).values():
            if targets is None or targets & set(cols):
                p.lock(ref, ROW_SHARE)
    return p


def _truncate(node: ast.TruncateStmt, cat: Catalog) -> Prediction:
    p = Prediction("TRUNCATE", "rewrite")
    for rv in node.relations:
        p.lock(_rv(cat, rv), ACCESS_EXCLUSIVE)
    return p


def _create_schema(node: ast.CreateSchemaStmt, cat: Catalog) -> Prediction:
    if node.schemaElts:  # CREATE SCHEMA ... CREATE TABLE ...: its elements are not mapped
        return _unknown("CreateSchema", cat, node, "no lock map for CreateSchemaStmt")
    return Prediction("CREATE SCHEMA", "create")


def _view(node: ast.ViewStmt, cat: Catalog) -> Prediction:
    p = Prediction("CREATE VIEW", "create")
    _reads(p, cat, node.query)
    view = _rv(cat, node.view)
    p.lock(view, ACCESS_EXCLUSIVE)
    p.created.append(view)
    return p


def _domain(node: ast.CreateDomainStmt, cat: Catalog) -> Prediction:
    p = Prediction("CreateDomain", "create")
    if node.constraints:
        p.domains.append(".".join(n.sval for n in node.domainname))
    return p


def _no_relation(effect: str):
    def predict_it(node, _cat: Catalog) -> Prediction:
        return Prediction(type(node).__name__.removesuffix("Stmt"), effect)
    return predict_it


# The lock map itself: one entry per statement kind. A kind that is not here is unknown.
PREDICT = {
    **{getattr(ast, kind): _no_relation(effect) for kind, effect in _NO_RELATION.items()},
    ast.AlterTableStmt: _alter_table,
    ast.CreateStmt: _create_table,
    ast.IndexStmt: _index,
    ast.DropStmt: _drop,
    ast.CommentStmt: _comment,
    ast.CreatePolicyStmt: _policy,
    ast.AlterPolicyStmt: _policy,
    ast.CreateTrigStmt: _trigger,
    ast.LockStmt: _lock,
    ast.GrantStmt: _grant,
    ast.SelectStmt: _select,
    ast.InsertStmt: _write,
    ast.UpdateStmt: _write,
    ast.DeleteStmt: _write,
    ast.TruncateStmt: _truncate,
    ast.CreateSchemaStmt: _create_schema,
    ast.ViewStmt: _view,
    ast.CreateDomainStmt: _domain,
}


def predict(node: ast.Node, cat: Catalog) -> Prediction:
    """The locks and effect of one (non-DO) statement, given the database it will run on."""
    handler = PREDICT.get(type(node))
    if handler is None:
        kind = type(node).__name__
        return _unknown(kind.removesuffix("Stmt"), cat, node, f"no lock map for {kind}")
    return handler(node, cat)


def simulate(stmt, cat: Catalog) -> Prediction:
    """Predict one parsed statement (sqlparse.Statement) and apply it to `cat`, so the next
    statement is predicted against the database as this one leaves it. A DO block is the union
    of the statements its body runs; EXECUTE of dynamic SQL makes it unknown."""
    if not isinstance(stmt.node, ast.DoStmt):
        p = predict(stmt.node, cat)
        cat.apply(p)
        return p
    p = Prediction("DO", "catalog")
    for inner in stmt.inner:
        q = simulate(inner, cat)
        for rel, mode in q.locks.items():
            p.lock(rel, mode)
        p.worse(q.effect)
        p.known &= q.known
        p.created += q.created
        p.dropped += q.dropped
    if stmt.dynamic:
        p.known = False
        p.effect = "unknown"
        p.locks[ANY] = ACCESS_EXCLUSIVE
        p.note = "runs dynamic SQL: " + "; ".join(stmt.dynamic)
    return p
