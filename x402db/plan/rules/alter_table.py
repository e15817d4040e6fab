"""ALTER TABLE: the lock each subcommand takes, as ALTER TABLE's page documents it per subcommand
and tablecmds.c's AlterTableGetLockLevel decides it. The statement takes the strongest lock of its
subcommands; on a partitioned table (not ONLY) the subcommands that recurse take it on every
partition too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pglast import ast, enums

from ..locks import (
    ACCESS_EXCLUSIVE,
    ROW_SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    Effect,
    Mode,
    strongest,
)
from .common import Handler, Rule, Table, dotted, rv, user_calls
from .index import serves
from .prediction import Catalog, Prediction

AT = enums.AlterTableType
C = enums.ConstrType

# What a subcommand's content decides: a lock other than its row's (returned), a worse effect, a
# lock on another relation, a catalog change. None keeps the row's lock.
Refine = Callable[[Prediction, Catalog, str, ast.AlterTableCmd], Mode | None]

# ---- the subcommands whose content matters ---------------------------------------------------

_SERIAL = ("serial", "bigserial", "smallserial", "serial4", "serial8", "serial2")
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


def _default_is_volatile(expr: Any, cat: Catalog) -> bool:
    """Volatile defaults force a rewrite when a column is added; constants and stable or
    immutable functions are stored once in the catalog (PostgreSQL 11+)."""
    if expr is None or isinstance(expr, ast.A_Const):
        return False
    if isinstance(expr, ast.TypeCast):
        return _default_is_volatile(expr.arg, cat)
    if isinstance(expr, ast.FuncCall):
        return cat.volatile(dotted(expr.funcname)) or any(_default_is_volatile(a, cat) for a in expr.args or ())
    if isinstance(expr, ast.SQLValueFunction):
        return False
    return True  # an expression we do not analyse: assume the worst


def _add_column_effect(cat: Catalog, col: ast.ColumnDef) -> Effect:
    cons = col.constraints or ()
    types = {c.contype for c in cons}
    default = next((c.raw_expr for c in cons if c.contype == C.CONSTR_DEFAULT), None)
    type_names = (col.typeName.names if col.typeName else None) or ()
    serial = bool(type_names) and type_names[-1].sval in _SERIAL
    # A domain with constraints is checked row by row: PostgreSQL rewrites the table, default or not.
    domain = bool(type_names) and cat.constrained_domain(dotted(type_names))
    if types & {C.CONSTR_GENERATED, C.CONSTR_IDENTITY} or serial or domain or _default_is_volatile(default, cat):
        return Effect.REWRITE
    if types & {C.CONSTR_PRIMARY, C.CONSTR_UNIQUE, C.CONSTR_CHECK} or (C.CONSTR_NOTNULL in types and default is None):
        return Effect.SCAN
    return Effect.CATALOG


def _unindexed(p: Prediction, cat: Catalog, table: str, ref: str, columns: tuple[str, ...]) -> None:
    # A new table is empty until COMMIT: its lookups cost nothing yet.
    if columns and cat.exists(table) and not cat.is_new(table):
        if not any(serves(shape, columns) for shape in cat.index_shapes(table)):
            p.unindexed_fks.append((table, columns, ref))


def add_column(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """Rewrites for a volatile default, a generated, identity or serial column, or a constrained
    domain; scans for a PRIMARY KEY, UNIQUE, CHECK or NOT NULL without default; a REFERENCES
    takes ShareRowExclusiveLock on the referenced table and scans unless NOT VALID, and, as no
    index can serve a column that does not exist yet, makes each DELETE from the referenced table
    read the whole table (the plan says so)."""
    col = cmd.def_
    assert isinstance(col, ast.ColumnDef)  # the grammar: ADD COLUMN carries a column definition
    p.worse(_add_column_effect(cat, col))
    for c in col.constraints or ():
        if c.contype == C.CONSTR_FOREIGN:
            ref = rv(cat, c.pktable)
            p.lock(ref, SHARE_ROW_EXCLUSIVE)
            p.changes.fk_added.append((table, c.conname or "", ref, (col.colname or "",)))
            _unindexed(p, cat, table, ref, (col.colname or "",))
            if not c.skip_validation:
                p.worse(Effect.SCAN)
    return None


def add_constraint(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """FOREIGN KEY: ShareRowExclusiveLock on both tables, and when no index of the table (in the
    catalog, or built by an earlier statement) leads with its columns, the plan says that each
    DELETE from the referenced table will read the whole table once it commits. Any constraint
    scans the table unless NOT VALID or USING INDEX (the index exists)."""
    c = cmd.def_
    assert isinstance(c, ast.Constraint)  # the grammar: ADD CONSTRAINT carries a constraint
    key = (table, c.conname or "")
    if c.contype == C.CONSTR_FOREIGN:
        ref = rv(cat, c.pktable)
        p.lock(ref, SHARE_ROW_EXCLUSIVE)
        p.changes.fk_added.append((table, c.conname or "", ref, tuple(a.sval for a in c.fk_attrs or ())))
        _unindexed(p, cat, table, ref, tuple(a.sval for a in c.fk_attrs or ()))
        if c.skip_validation:
            p.changes.not_valid_added.append(key)
        else:
            p.worse(Effect.SCAN)
            p.changes.validated.append(key)
        return SHARE_ROW_EXCLUSIVE
    if c.indexname:
        return None
    if c.skip_validation:
        p.changes.not_valid_added.append(key)
        return None
    p.changes.validated.append(key)
    if c.contype in (C.CONSTR_CHECK, C.CONSTR_PRIMARY, C.CONSTR_UNIQUE, C.CONSTR_EXCLUSION, C.CONSTR_NOTNULL):
        p.worse(Effect.SCAN)
    return None


def validate_constraint(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """Scans unless the constraint is already valid (then it returns at once); a foreign key's
    check reads the referenced table under RowShareLock."""
    name = cmd.name or ""
    if not cat.constraint_valid(table, name):
        p.worse(Effect.SCAN)
        p.changes.validated.append((table, name))
        fk = cat.foreign_keys(table).get(name)
        if fk and fk[0] != table:
            p.lock(fk[0], ROW_SHARE)
    return None


def _drop_fk(p: Prediction, cat: Catalog, table: str, name: str | None = None, column: str | None = None) -> None:
    # Dropping a foreign key removes its triggers on the referenced table too, which takes
    # AccessExclusiveLock there (RemoveTriggerById).
    for conname, (ref, cols) in cat.foreign_keys(table).items():
        if (name is not None and conname == name) or (column is not None and column in cols):
            if ref != table:
                p.lock(ref, ACCESS_EXCLUSIVE)
            p.changes.fk_dropped.append((table, conname, cols))


def drop_constraint(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """A foreign key's referenced table: AccessExclusiveLock (its triggers there are dropped)."""
    _drop_fk(p, cat, table, name=cmd.name)
    return None


def drop_column(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """The referenced table of a foreign key on the column: AccessExclusiveLock (its triggers there go)."""
    _drop_fk(p, cat, table, column=cmd.name)
    return None


def relation_options(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """ShareUpdateExclusiveLock when every option set or reset is one PostgreSQL allows under it
    (fillfactor, autovacuum_*, parallel_workers, ...)."""
    options = cmd.def_ if isinstance(cmd.def_, tuple) else ()
    found = [d.defname if not d.defnamespace else f"{d.defnamespace}.{d.defname}" for d in options]
    return SHARE_UPDATE_EXCLUSIVE if found and all(n.startswith(_LIGHT_RELOPTIONS) for n in found) else None


def _partition(cat: Catalog, cmd: ast.AlterTableCmd) -> str:
    bound = cmd.def_
    assert isinstance(bound, ast.PartitionCmd)  # the grammar: ATTACH/DETACH PARTITION name ...
    return rv(cat, bound.name)


def attach_partition(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """The partition: AccessExclusiveLock (it is scanned to check the bound)."""
    part = _partition(cat, cmd)
    p.lock(part, ACCESS_EXCLUSIVE)
    p.changes.attached.append((table, part))
    return None


def detach_partition(p: Prediction, cat: Catalog, table: str, cmd: ast.AlterTableCmd) -> Mode | None:
    """The partition: AccessExclusiveLock (CONCURRENTLY: in its second transaction). CONCURRENTLY
    takes ShareUpdateExclusiveLock on the parent."""
    part = _partition(cat, cmd)
    p.lock(part, ACCESS_EXCLUSIVE)
    p.changes.detached.append((table, part))
    concurrent = isinstance(cmd.def_, ast.PartitionCmd) and cmd.def_.concurrent
    return SHARE_UPDATE_EXCLUSIVE if concurrent and cmd.subtype == AT.AT_DetachPartition else None


# ---- the table -------------------------------------------------------------------------------

_AE = Rule[Refine](ACCESS_EXCLUSIVE)
_SUE = Rule[Refine](SHARE_UPDATE_EXCLUSIVE)
_SRE = Rule[Refine](SHARE_ROW_EXCLUSIVE)
_REWRITE = Rule[Refine](ACCESS_EXCLUSIVE, Effect.REWRITE)
_ALONE = Rule[Refine](ACCESS_EXCLUSIVE, recurses=False)  # acts on the named table only

ALTER_TABLE = Table[enums.AlterTableType, Refine](
    title="ALTER TABLE",
    key="subcommand (pglast AlterTableType)",
    locked="the table (and, unless ONLY, its partitions, for a subcommand that recurses)",
    source='PostgreSQL documentation, ALTER TABLE ("An ACCESS EXCLUSIVE lock is acquired unless explicitly noted")',
    rows={
        AT.AT_AddColumn: Rule(ACCESS_EXCLUSIVE, refine=add_column),
        AT.AT_AlterColumnType: _REWRITE,
        AT.AT_SetLogged: _REWRITE,
        AT.AT_SetUnLogged: _REWRITE,
        AT.AT_SetAccessMethod: _REWRITE,
        AT.AT_SetTableSpace: _REWRITE,
        AT.AT_AddIdentity: _REWRITE,
        AT.AT_SetNotNull: Rule(ACCESS_EXCLUSIVE, Effect.SCAN),
        AT.AT_AddConstraint: Rule(ACCESS_EXCLUSIVE, refine=add_constraint),
        AT.AT_ReAddConstraint: Rule(ACCESS_EXCLUSIVE, refine=add_constraint),
        AT.AT_ValidateConstraint: Rule(SHARE_UPDATE_EXCLUSIVE, refine=validate_constraint),
        AT.AT_DropConstraint: Rule(ACCESS_EXCLUSIVE, refine=drop_constraint),
        AT.AT_DropColumn: Rule(ACCESS_EXCLUSIVE, refine=drop_column),
        AT.AT_SetStatistics: _SUE,
        AT.AT_SetOptions: _SUE,
        AT.AT_ResetOptions: _SUE,
        AT.AT_ClusterOn: _SUE,
        AT.AT_DropCluster: _SUE,
        AT.AT_SetRelOptions: Rule(ACCESS_EXCLUSIVE, refine=relation_options),
        AT.AT_ResetRelOptions: Rule(ACCESS_EXCLUSIVE, refine=relation_options),
        AT.AT_EnableTrig: _SRE,
        AT.AT_EnableAlwaysTrig: _SRE,
        AT.AT_EnableReplicaTrig: _SRE,
        AT.AT_DisableTrig: _SRE,
        AT.AT_EnableTrigAll: _SRE,
        AT.AT_DisableTrigAll: _SRE,
        AT.AT_EnableTrigUser: _SRE,
        AT.AT_DisableTrigUser: _SRE,
        AT.AT_AttachPartition: Rule(SHARE_UPDATE_EXCLUSIVE, Effect.SCAN, attach_partition, recurses=False),
        AT.AT_DetachPartition: Rule(ACCESS_EXCLUSIVE, refine=detach_partition, recurses=False),
        AT.AT_DetachPartitionFinalize: Rule(SHARE_UPDATE_EXCLUSIVE, refine=detach_partition, recurses=False),
        AT.AT_EnableRowSecurity: _ALONE,
        AT.AT_DisableRowSecurity: _ALONE,
        AT.AT_ForceRowSecurity: _ALONE,
        AT.AT_NoForceRowSecurity: _ALONE,
        AT.AT_ChangeOwner: _ALONE,
        AT.AT_ReplicaIdentity: _ALONE,
        AT.AT_GenericOptions: _ALONE,
    },
    default=_AE,
    notes=(
        "The statement takes the strongest lock of its subcommands.",
        "ALTER TABLE IF EXISTS of a missing table, and ALTER TABLE on an index, lock no table.",
        "Unless the table is new, a function its subcommands call (USING, a default, a CHECK) makes it unknown.",
    ),
)


def alter_table(node: ast.AlterTableStmt, cat: Catalog) -> Prediction:
    table = rv(cat, node.relation)
    p = Prediction("ALTER TABLE", Effect.CATALOG)
    if node.missing_ok and not cat.exists(table):
        p.note = f"{table} does not exist: does nothing"
        return p
    if node.objtype == enums.ObjectType.OBJECT_INDEX:
        p.note = "an index only; its table is not locked"
        return p
    modes: list[str] = []
    recursing: list[str] = []
    for cmd in node.cmds or ():
        rule = ALTER_TABLE.rule(cmd.subtype)
        assert rule.mode is not None  # every ALTER TABLE subcommand locks the table
        mode = (rule.refine(p, cat, table, cmd) if rule.refine else None) or rule.mode
        p.worse(rule.effect)
        modes.append(mode)
        if rule.recurses:
            recursing.append(mode)
    p.lock(table, strongest(modes))
    # On a partitioned table, a subcommand recurses to every partition under the same lock, and
    # a rewrite or scan happens there (the parent has no storage), unless ALTER TABLE ONLY.
    if recursing and node.relation is not None and node.relation.inh:
        for part in cat.partitions(table):
            p.lock(part, strongest(recursing))
    if not cat.is_new(table):
        # Run now, on every existing row: USING, a new column's default, a CHECK (SET DEFAULT only runs later).
        user_calls(p, cat, tuple(c for c in node.cmds or () if c.subtype != AT.AT_ColumnDefault))
    return p


PREDICT: dict[type[ast.Node], Handler] = {ast.AlterTableStmt: alter_table}
