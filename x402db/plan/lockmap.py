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

from .locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    ANY,
    EFFECTS,
    FOR_SHARE,
    FOR_UPDATE,
    KEY_SHARE,
    MODES,
    NO_KEY_UPDATE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    strongest,
    strongest_row,
)

_SYSTEM = ("pg_catalog", "information_schema", "pg_toast")


class Catalog(Protocol):
    """What the map needs to know about the database, as it will be when the statement runs."""

    def qualify(self, schema: str | None, name: str) -> str: ...
    def exists(self, relation: str) -> bool: ...
    def is_new(self, relation: str) -> bool: ...  # created by a statement planned before this one
    def index_table(self, schema: str | None, index: str) -> str | None: ...
    def foreign_keys(self, table: str) -> dict[str, tuple[str, tuple[str, ...]]]: ...  # name -> (referenced, columns)
    def referencing(self, table: str) -> list[str]: ...  # tables with a foreign key to `table`
    def sequences(
        self, table: str
    ) -> dict[str, str]: ...  # sequence -> the column whose default or identity draws from it
    def referencing_keys(
        self, table: str
    ) -> list[tuple[str, str, str, tuple[str, ...]]]: ...  # (table, on delete, on update, referenced cols)
    def volatile(self, function: str) -> bool: ...
    def constrained_domain(self, type_name: str) -> bool: ...  # a domain with CHECK or NOT NULL constraints
    def constraint_valid(self, table: str, name: str) -> bool: ...
    def has_object(self, kind: str, table: str, name: str) -> bool: ...  # a policy, trigger or rule on `table`
    def server_version(self) -> int: ...  # server_version_num
    def partitions(self, table: str) -> list[str]: ...  # every partition below `table`, recursively
    def key_columns(self, table: str) -> set[str]: ...  # columns of its unique indexes (a foreign key's target)
    def builtin(self, function: str) -> bool: ...  # can only resolve to a function of pg_catalog
    def user_code(
        self, table: str, event: str
    ) -> list[str]: ...  # non-builtin functions an INSERT/UPDATE/DELETE runs (triggers, defaults)
    def dependents(
        self, kind: str, name: str
    ) -> list[tuple[str, bool]]: ...  # (relation, dropped) a DROP ... CASCADE reaches
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
    validated: list[tuple[str, str]] = field(
        default_factory=list
    )  # table, constraint: NOT VALID ones added, or validated
    not_valid_added: list[tuple[str, str]] = field(default_factory=list)
    objects_added: list[tuple[str, str, str]] = field(default_factory=list)  # kind, table, name (policies, triggers)
    objects_dropped: list[tuple[str, str, str]] = field(default_factory=list)
    attached: list[tuple[str, str]] = field(default_factory=list)  # parent, partition
    domains: list[str] = field(default_factory=list)  # constrained domains this statement creates
    detached: list[tuple[str, str]] = field(default_factory=list)
    row_locks: dict[str, tuple[str, str]] = field(default_factory=dict)  # relation -> (row mode, which rows)
    functions: list[str] = field(default_factory=list)  # names of the functions this statement creates

    def lock_rows(self, relation: str | None, mode: str, rows: str) -> None:
        if relation is None or relation.split(".", 1)[0] in _SYSTEM:
            return
        held = self.row_locks.get(relation)
        if held is None or held[1] == "inserted":
            self.row_locks[relation] = (mode, rows)
        elif rows == "inserted":
            return
        else:  # the stronger mode; "all" rows over a subset
            self.row_locks[relation] = (strongest_row((held[0], mode)), "all" if "all" in (rows, held[1]) else held[1])

    def unknown(self, why: str) -> None:
        """It runs code the plan cannot see: it may lock anything and do anything."""
        self.known = False
        self.effect = "unknown"
        self.locks[ANY] = ACCESS_EXCLUSIVE
        self.note = "; ".join(n for n in (self.note, why) if n)

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
            yield from _range_vars(getattr(node, name), ctes)
    elif isinstance(node, tuple):
        for item in node:
            yield from _range_vars(item, ctes)


def _reads(p: Prediction, cat: Catalog, node) -> None:
    for rv in _range_vars(node):
        if rv.schemaname is None and rv.relname.startswith("pg_"):
            continue  # an unqualified pg_* name is a system catalog
        p.lock(_rv(cat, rv), ACCESS_SHARE)


def _partitions_too(p: Prediction, cat: Catalog, node, skip: str | None = None) -> None:
    """A query of a partitioned table (not ONLY) opens its partitions under the same lock: all of
    them, as the plan cannot tell which ones PostgreSQL prunes (an upper bound)."""
    for rv in _range_vars(node):
        rel = _rv(cat, rv)
        if rv.inh and rel != skip and rel in p.locks:
            for part in cat.partitions(rel):
                p.lock(part, p.locks[rel])


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
    AT.AT_ValidateConstraint,
    AT.AT_SetStatistics,
    AT.AT_SetOptions,
    AT.AT_ResetOptions,
    AT.AT_ClusterOn,
    AT.AT_DropCluster,
    AT.AT_AttachPartition,
    AT.AT_DetachPartitionFinalize,
}
_SHARE_ROW_EXCLUSIVE_CMDS = {
    AT.AT_EnableTrig,
    AT.AT_EnableAlwaysTrig,
    AT.AT_EnableReplicaTrig,
    AT.AT_DisableTrig,
    AT.AT_EnableTrigAll,
    AT.AT_DisableTrigAll,
    AT.AT_EnableTrigUser,
    AT.AT_DisableTrigUser,
}
_REWRITE_CMDS = {AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetAccessMethod, AT.AT_SetTableSpace, AT.AT_AddIdentity}
# Relation options whose change PostgreSQL allows under ShareUpdateExclusiveLock.
_LIGHT_RELOPTIONS = (
    "fillfactor",
    "autovacuum_",
    "toast.autovacuum_",
    "parallel_workers",
    "toast_tuple_target",
    "vacuum_index_cleanup",
    "vacuum_truncate",
    "log_autovacuum_min_duration",
    "user_catalog_table",
)


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
    serial = col.typeName and col.typeName.names[-1].sval in (
        "serial",
        "bigserial",
        "smallserial",
        "serial4",
        "serial8",
        "serial2",
    )
    # A domain with constraints is checked row by row: PostgreSQL rewrites the table, default or not.
    domain = col.typeName and cat.constrained_domain(".".join(n.sval for n in col.typeName.names))
    if (
        C.CONSTR_GENERATED in types
        or C.CONSTR_IDENTITY in types
        or serial
        or domain
        or _default_is_volatile(default, cat)
    ):
        p.worse("rewrite")
    elif (
        C.CONSTR_PRIMARY in types
        or C.CONSTR_UNIQUE in types
        or C.CONSTR_CHECK in types
        or (C.CONSTR_NOTNULL in types and default is None)
    ):
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
    if c.contype in (C.CONSTR_CHECK, C.CONSTR_PRIMARY, C.CONSTR_UNIQUE, C.CONSTR_EXCLUSION, C.CONSTR_NOTNULL):
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


# Subcommands that act on the named table alone, never on its partitions.
_NOT_RECURSING = {
    AT.AT_AttachPartition,
    AT.AT_DetachPartition,
    AT.AT_DetachPartitionFinalize,
    AT.AT_EnableRowSecurity,
    AT.AT_DisableRowSecurity,
    AT.AT_ForceRowSecurity,
    AT.AT_NoForceRowSecurity,
    AT.AT_ChangeOwner,
    AT.AT_ReplicaIdentity,
    AT.AT_GenericOptions,
}


def _alter_table(node: ast.AlterTableStmt, cat: Catalog) -> Prediction:
    table = _rv(cat, node.relation)
    p = Prediction("ALTER TABLE", "catalog")
    if node.missing_ok and not cat.exists(table):
        p.note = f"{table} does not exist: does nothing"
        return p
    if node.objtype == enums.ObjectType.OBJECT_INDEX:
        p.note = "an index only; its table is not locked"
        return p
    modes, recursing = [], []
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
        if st not in _NOT_RECURSING:
            recursing.append(mode)
    p.lock(table, strongest(modes))
    # On a partitioned table, a subcommand recurses to every partition under the same lock, and
    # a rewrite or scan happens there (the parent has no storage), unless ALTER TABLE ONLY.
    if recursing and node.relation.inh:
        for part in cat.partitions(table):
            p.lock(part, strongest(recursing))
    if not cat.is_new(table):
        # Run now, on every existing row: USING, a new column's default, a CHECK (SET DEFAULT only runs later).
        _user_calls(p, cat, tuple(c for c in node.cmds if c.subtype != AT.AT_ColumnDefault))
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
                    p.fk_added.append(
                        (table, c.conname or f"{node.relation.relname}_{elt.colname}_fkey", ref, (elt.colname,))
                    )
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
    p = Prediction(
        "CREATE INDEX CONCURRENTLY" if node.concurrent else "CREATE INDEX",
        "create" if cat.is_new(table) or not cat.exists(table) else "scan",
    )
    for rel in (table, *cat.partitions(table)):  # an index on a partitioned table is built on each partition
        p.lock(rel, SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE)
    if p.effect == "scan":  # its expressions and predicate run on every existing row
        _user_calls(p, cat, (node.indexParams, node.whereClause))
    return p


_RELATION_DROPS = {
    enums.ObjectType.OBJECT_TABLE,
    enums.ObjectType.OBJECT_VIEW,
    enums.ObjectType.OBJECT_MATVIEW,
    enums.ObjectType.OBJECT_FOREIGN_TABLE,
    enums.ObjectType.OBJECT_SEQUENCE,
}
_ON_TABLE = {enums.ObjectType.OBJECT_POLICY, enums.ObjectType.OBJECT_TRIGGER, enums.ObjectType.OBJECT_RULE}


_CASCADE_KINDS = {
    enums.ObjectType.OBJECT_SCHEMA: "schema",
    enums.ObjectType.OBJECT_TYPE: "type",
    enums.ObjectType.OBJECT_DOMAIN: "type",
}


def _cascade(p: Prediction, cat: Catalog, kind: str, name: str) -> bool:
    """CASCADE drops every object that depends on the one dropped, recursively (pg_depend): a
    relation among them is dropped, and the table of a dependent column, constraint, trigger,
    policy or rule is locked AccessExclusiveLock. False when the object cannot be resolved."""
    found = cat.dependents(kind, name)
    if found is None:
        return False
    for rel, dropped in found:
        p.lock(rel, ACCESS_EXCLUSIVE)
        if dropped and rel not in p.dropped:
            p.dropped.append(rel)
    return True


def _drop(node: ast.DropStmt, cat: Catalog) -> Prediction:
    O = enums.ObjectType
    what = node.removeType
    p = Prediction(f"DROP {what.name.removeprefix('OBJECT_')}", "drop")
    cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
    named = {cat.qualify(*_names(obj)) for obj in node.objects if what in _RELATION_DROPS}
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
            if cascade and not _cascade(p, cat, "relation", rel):  # created by this plan: pg_depend cannot know
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
        elif cascade and what in _CASCADE_KINDS:
            if isinstance(obj, ast.TypeName):
                name = ".".join(n.sval for n in obj.names)
            else:
                name = ".".join(o.sval for o in obj) if isinstance(obj, tuple) else getattr(obj, "sval", None)
            if name is None or not _cascade(p, cat, _CASCADE_KINDS[what], name):
                return _unknown(
                    p.kind + " CASCADE", cat, node, "CASCADE may drop tables, columns or triggers that depend on it"
                )
        elif cascade:
            return _unknown(
                p.kind + " CASCADE", cat, node, "CASCADE may drop tables, columns or triggers that depend on it"
            )
    if cascade:
        p.kind += " CASCADE"
        also = [r for r in p.dropped if r not in named]
        if also:
            p.note = "; ".join(n for n in (p.note, "also drops " + ", ".join(also)) if n)
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
    "CreateRoleStmt": "create",
    "AlterRoleStmt": "catalog",
    "DropRoleStmt": "drop",
    "GrantRoleStmt": "catalog",
    "AlterDefaultPrivilegesStmt": "catalog",
    "CreateFunctionStmt": "create",
    "AlterFunctionStmt": "catalog",
    "CreateEnumStmt": "create",
    "CompositeTypeStmt": "create",
    "CreateDomainStmt": "create",
    "DefineStmt": "create",
    "VariableSetStmt": "catalog",
    "CreateExtensionStmt": "create",
    "AlterRoleSetStmt": "catalog",
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
    if (
        node.targtype == enums.GrantTargetType.ACL_TARGET_OBJECT
        and node.objtype in _GRANT_ON_RELATIONS
        and cat.server_version() >= _GRANT_LOCKS_SINCE
    ):
        for rv in node.objects:
            p.lock(_rv(cat, rv), ACCESS_SHARE)
    elif node.targtype == enums.GrantTargetType.ACL_TARGET_ALL_IN_SCHEMA:
        return _unknown("GRANT ALL IN SCHEMA", cat, node, "locks every table of the schema")
    return p


def _walk(node):
    """Every node of a parse tree, depth first."""
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))
    elif isinstance(node, tuple):
        for item in node:
            yield from _walk(item)


def _calls(node):
    """The name of every function a statement's expressions call."""
    for n in _walk(node):
        if isinstance(n, ast.FuncCall):
            yield ".".join(part.sval for part in n.funcname)


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


def _user_calls(p: Prediction, cat: Catalog, node, extra=()) -> None:
    """A function outside pg_catalog runs code the plan cannot read: the statement is unknown.
    So does one that runs SQL text, and a view whose query calls such a function."""
    views = [f for rv in _range_vars(node) if cat.exists(_rv(cat, rv)) for f in cat.user_code(_rv(cat, rv), "SELECT")]
    found = sorted({f for f in _calls(node) if _opaque(cat, f)} | set(extra) | set(views))
    if found:
        p.unknown("calls " + ", ".join(f"{f}()" for f in found) + ", whose body the plan cannot see")


def _where_rows(where) -> str:
    if where is None:
        return "all"
    if isinstance(where, ast.A_Const) and isinstance(where.val, ast.Boolean) and where.val.boolval:
        return "all"
    if isinstance(where, ast.TypeCast) and isinstance(where.arg, ast.A_Const):
        return "all" if getattr(where.arg.val, "sval", None) in ("t", "true", "on", "yes", "1") else "where"
    return "where"


def _from_tables(items, ctes: set[str]):
    """The tables a FROM list names at its own level, with their aliases (sub-selects included,
    as a locking clause without OF reaches into them)."""
    for item in items or ():
        if isinstance(item, ast.RangeVar):
            if item.schemaname or item.relname not in ctes:
                yield item, (item.alias.aliasname if item.alias else item.relname)
        elif isinstance(item, ast.JoinExpr):
            yield from _from_tables((item.larg, item.rarg), ctes)
        elif isinstance(item, ast.RangeSubselect) and isinstance(item.subquery, ast.SelectStmt):
            for rv, _alias in _from_tables(item.subquery.fromClause, ctes):
                yield rv, (item.alias.aliasname if item.alias else None)


_LOCKING = {  # LockClauseStrength -> row lock mode
    enums.LockClauseStrength.LCS_FORKEYSHARE: KEY_SHARE,
    enums.LockClauseStrength.LCS_FORSHARE: FOR_SHARE,
    enums.LockClauseStrength.LCS_FORNOKEYUPDATE: NO_KEY_UPDATE,
    enums.LockClauseStrength.LCS_FORUPDATE: FOR_UPDATE,
}


def _data_modifying_ctes(p: Prediction, cat: Catalog, node) -> None:
    """WITH x AS (UPDATE ...) runs the UPDATE: its locks and row locks are the statement's."""
    for cte in (node.withClause.ctes if getattr(node, "withClause", None) else ()) or ():
        q = cte.ctequery
        handler = PREDICT.get(type(q)) if not isinstance(q, ast.SelectStmt) else None
        if handler is not None:
            inner = handler(q, cat)
            for rel, mode in inner.locks.items():
                p.lock(rel, mode)
            for rel, (mode, rows) in inner.row_locks.items():
                p.lock_rows(rel, mode, rows)
            if not inner.known:
                p.unknown(inner.note)


def _selects(node):
    """Every SELECT of a statement: itself, its sub-selects, its CTEs."""
    return (n for n in _walk(node) if isinstance(n, ast.SelectStmt))


def _locking_clauses(p: Prediction, cat: Catalog, node, ctes: set[str] = frozenset()) -> None:
    """SELECT ... FOR UPDATE/SHARE, wherever it appears (a sub-select of an UPDATE's WHERE, a CTE):
    RowShareLock on each table it locks, and a row lock on every row it returns, until COMMIT
    (the documentation, "Row-Level Locks")."""
    for sel in _selects(node):
        names = ctes | {c.ctename for c in (sel.withClause.ctes if sel.withClause else ()) or ()}
        for clause in sel.lockingClause or ():
            mode = _LOCKING[clause.strength]
            wanted = {rv.relname for rv in clause.lockedRels or ()}
            for rv, alias in _from_tables(sel.fromClause, names):
                if not wanted or alias in wanted or rv.relname in wanted:
                    p.lock(_rv(cat, rv), ROW_SHARE)
                    p.lock_rows(_rv(cat, rv), mode, "returned")
            if sel is node:
                p.kind = "SELECT " + mode


def _select(node: ast.SelectStmt, cat: Catalog) -> Prediction:
    p = Prediction("SELECT", "catalog")
    _reads(p, cat, node)
    _locking_clauses(p, cat, node)
    _partitions_too(p, cat, node)
    if p.locks:
        p.effect = "scan"
    _data_modifying_ctes(p, cat, node)
    _user_calls(p, cat, node)
    return p


def _update_mode(cat: Catalog, table: str, targets) -> str:
    """An UPDATE that changes a column of a unique index takes FOR UPDATE, any other FOR NO KEY UPDATE."""
    names = {t.name for t in targets or () if isinstance(t, ast.ResTarget) and t.name}
    return FOR_UPDATE if names & cat.key_columns(table) else NO_KEY_UPDATE


def _referencing_rows(
    p: Prediction, cat: Catalog, table: str, event: str, columns: set[str] | None, seen: frozenset = frozenset()
) -> None:
    """A DELETE, or an UPDATE of referenced columns, of `table` fires the foreign keys that
    reference it: NO ACTION and RESTRICT check the referencing rows (RowShareLock, FOR KEY SHARE),
    CASCADE, SET NULL and SET DEFAULT change them (RowExclusiveLock, and their own row locks), and a
    cascaded DELETE goes on to the tables that reference those, recursively."""
    for rel, on_delete, on_update, cols in cat.referencing_keys(table):
        if event == "UPDATE" and (columns is None or not columns & set(cols)):
            continue
        action = on_delete if event == "DELETE" else on_update
        if action in ("a", "r"):
            p.lock(rel, ROW_SHARE)
            p.lock_rows(rel, KEY_SHARE, "referencing")
        elif action == "c" and event == "DELETE":
            p.lock(rel, ROW_EXCLUSIVE)
            p.lock_rows(rel, FOR_UPDATE, "referencing")
            if rel not in seen:
                _referencing_rows(p, cat, rel, "DELETE", None, seen | {table})
        else:  # SET NULL / SET DEFAULT, or an ON UPDATE CASCADE: the referencing columns are updated
            p.lock(rel, ROW_EXCLUSIVE)
            p.lock_rows(rel, NO_KEY_UPDATE, "referencing")


def _write(node, cat: Catalog) -> Prediction:
    """INSERT, UPDATE, DELETE and MERGE: RowExclusiveLock on the table written, and a row lock on
    every existing row it changes or deletes, held until COMMIT."""
    p = Prediction(type(node).__name__.removesuffix("Stmt").upper(), "scan")
    _reads(p, cat, node)
    _locking_clauses(p, cat, node)
    table = _rv(cat, node.relation)
    p.lock(table, ROW_EXCLUSIVE)
    events = []
    if isinstance(node, ast.UpdateStmt):
        p.lock_rows(table, _update_mode(cat, table, node.targetList), _where_rows(node.whereClause))
        events = ["UPDATE"]
        _referencing_rows(p, cat, table, "UPDATE", {t.name for t in node.targetList or ()})
    elif isinstance(node, ast.DeleteStmt):
        p.lock_rows(table, FOR_UPDATE, _where_rows(node.whereClause))
        events = ["DELETE"]
        _referencing_rows(p, cat, table, "DELETE", None)
    elif isinstance(node, ast.InsertStmt):
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
    elif isinstance(node, ast.MergeStmt):
        modes = []
        for when in node.mergeWhenClauses or ():
            if when.commandType == enums.CmdType.CMD_DELETE:
                modes.append(FOR_UPDATE)
                events.append("DELETE")
            elif when.commandType == enums.CmdType.CMD_UPDATE:
                modes.append(_update_mode(cat, table, when.targetList))
                events.append("UPDATE")
            elif when.commandType == enums.CmdType.CMD_INSERT:
                events.append("INSERT")
        if modes:
            p.lock_rows(table, strongest_row(modes), "matched")
    if not isinstance(node, ast.DeleteStmt):
        # The foreign-key check of each written row reads the referenced table FOR KEY SHARE.
        if isinstance(node, ast.InsertStmt):
            targets = None
        elif isinstance(node, ast.MergeStmt):  # an INSERT action checks every key, an UPDATE the columns it sets
            whens = node.mergeWhenClauses or ()
            targets = (
                None
                if any(w.commandType == enums.CmdType.CMD_INSERT for w in whens)
                else {t.name for w in whens for t in w.targetList or ()}
            )
        else:
            targets = {t.name for t in node.targetList or ()}
        for ref, cols in cat.foreign_keys(table).values():
            if targets is None or targets & set(cols):
                p.lock(ref, ROW_SHARE)
                p.lock_rows(ref, KEY_SHARE, "referenced")
    # An INSERT opens only the partitions its rows are routed to (not predicted).
    _partitions_too(p, cat, node, skip=table if isinstance(node, ast.InsertStmt) else None)
    _data_modifying_ctes(p, cat, node)
    _user_calls(p, cat, node, [f for e in events for f in cat.user_code(table, e)] if cat.exists(table) else ())
    return p


def _truncate(node: ast.TruncateStmt, cat: Catalog) -> Prediction:
    """TRUNCATE empties each table named, its partitions, and with CASCADE every table that
    references one of them through a foreign key, recursively: AccessExclusiveLock on each."""
    p = Prediction("TRUNCATE", "rewrite")
    todo = [_rv(cat, rv) for rv in node.relations]
    cascade = node.behavior == enums.DropBehavior.DROP_CASCADE
    seen: list[str] = []
    while todo:
        rel = todo.pop(0)
        if rel in seen:
            continue
        seen.append(rel)
        p.lock(rel, ACCESS_EXCLUSIVE)
        if node.restart_seqs:  # RESTART IDENTITY resets the sequences its columns own
            for seq in cat.sequences(rel):
                p.lock(seq, ACCESS_EXCLUSIVE)
        todo += cat.partitions(rel)
        if cascade:
            todo += cat.referencing(rel)
    named = {_rv(cat, rv) for rv in node.relations}
    more = [r for r in seen if r not in named]
    if more:
        p.kind = "TRUNCATE CASCADE" if cascade else p.kind
        p.note = "also empties " + ", ".join(more)
    _user_calls(p, cat, (), [f for rel in seen if cat.exists(rel) for f in cat.user_code(rel, "TRUNCATE")])
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


def _create_function(node: ast.CreateFunctionStmt, _cat: Catalog) -> Prediction:
    p = Prediction("CreateFunction", "create")
    p.functions.append(node.funcname[-1].sval)  # a later call of that name may resolve to it
    return p


def _no_relation(effect: str):
    def predict_it(node, _cat: Catalog) -> Prediction:
        return Prediction(type(node).__name__.removesuffix("Stmt"), effect)

    return predict_it


# The lock map itself: one entry per statement kind. A kind that is not here is unknown.
PREDICT = {
    **{getattr(ast, kind): _no_relation(effect) for kind, effect in _NO_RELATION.items()},
    ast.CreateFunctionStmt: _create_function,
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
    ast.MergeStmt: _write,
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
        for rel, (mode, rows) in q.row_locks.items():
            p.lock_rows(rel, mode, rows)
        p.worse(q.effect)
        if not q.known:
            p.known = False
            p.note = "; ".join(n for n in (p.note, q.note) if n)
        p.created += q.created
        p.dropped += q.dropped
    if stmt.dynamic:
        p.known = False
        p.effect = "unknown"
        p.locks[ANY] = ACCESS_EXCLUSIVE
        p.note = "; ".join(n for n in ("runs dynamic SQL: " + "; ".join(stmt.dynamic), p.note) if n)
    return p
