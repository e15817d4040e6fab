"""The database as the plan sees it, read the way the plan reads everything: inside its READ ONLY
transaction, never queued behind a lock (lock_timeout 20ms; a read that would wait is reported as
blocked, not waited for). The target is detected that way too, and the live catalog is overlaid
with what the statements planned so far create and drop, so statement N is predicted against the
database statement N-1 leaves.

Every catalog read is a query on pg_catalog (AccessShareLock on catalog tables only); none opens a
user relation, so none can queue behind a migration holding AccessExclusiveLock on one. The only
reads of user relations are the sizes and the guards' counts, through `Reader`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pgerr

from ..errors import BundleError
from ..migrate.target import Target, detect
from .lockmap import CatalogChanges
from .rules.index import predicate_shape
from .rules.prediction import IndexShape

PLAN_LOCK_TIMEOUT = "20ms"  # a plan never queues: writers queued behind it would wait too
PLAN_STATEMENT_TIMEOUT = "30s"
WOULD_WAIT = (
    "plan: reading the catalog would wait on a lock another session holds; nothing was changed. "
    "See pg_locks / pg_stat_activity, then run plan again"
)


class Reader:
    """Catalog reads inside the plan's transaction; a read that would wait on a lock fails at
    once (lock_timeout) inside its own savepoint, and is reported instead of waited for."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.blocked: list[str] = []

    def value(self, what: str, query: str, params: tuple[object, ...] = ()) -> tuple[Any, str | None]:
        """The first column of the first row (None if no row), and "blocked" when a lock stopped the read."""
        try:
            with self.conn.transaction():
                row = self.conn.execute(query, params).fetchone()
                return row[0] if row else None, None
        except pgerr.LockNotAvailable:
            self.blocked.append(f"{what}: another session holds a conflicting lock; not read")
            return None, "blocked"
        except (pgerr.UndefinedTable, pgerr.UndefinedColumn):
            return 0, None


_SIZE = """
SELECT c.oid, CASE WHEN c.relkind <> 'p' THEN CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END
                   ELSE (SELECT sum(p.reltuples)::bigint FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid
                         WHERE t.isleaf AND p.reltuples >= 0) END,
       CASE WHEN c.relkind <> 'p' THEN c.relpages::bigint
            ELSE (SELECT sum(p.relpages)::bigint FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid) END
         * current_setting('block_size')::bigint,
       c.relkind = 'p'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s
"""
_TREE_SIZE = "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(%s) WHERE relid <> %s"


class Sizes:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.cache: dict[str, tuple[int | None, int | None]] = {}

    def of(self, relation: str) -> tuple[int | None, int | None]:
        if relation not in self.cache:
            schema, _, name = relation.partition(".")
            row = self.reader.conn.execute(_SIZE, (schema, name)).fetchone()
            if row is None:
                self.cache[relation] = (None, None)
            else:
                oid, rows, pages_bytes, partitioned = row
                # pg_total_relation_size opens the table (AccessShareLock); if a DDL holds it,
                # fall back to the page count pg_class recorded at the last VACUUM/ANALYZE.
                # A partitioned table has no storage of its own: its figures are its partitions'.
                query = _TREE_SIZE if partitioned else "SELECT pg_total_relation_size(%s)"
                total, blocked = self.reader.value(f"size of {relation}", query, (oid, oid) if partitioned else (oid,))
                self.cache[relation] = (rows, pages_bytes if blocked else total)
        return self.cache[relation]


def detect_target(conn: psycopg.Connection, requested: str | None) -> Target:
    """The target, read the way the plan reads everything: read only, never queued behind a lock
    (detection reads the ledger, which a concurrent DDL may hold)."""
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL lock_timeout = '{PLAN_LOCK_TIMEOUT}'")
            return detect(conn, requested)
    except pgerr.LockNotAvailable:
        raise BundleError(WOULD_WAIT) from None


_RELATION = """
SELECT format('%%s.%%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %s AND (n.nspname = %s OR (%s::text IS NULL AND n.nspname = ANY(current_schemas(false))))
ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1
"""
_INDEX_TABLE = """
SELECT format('%%s.%%s', tn.nspname, t.relname) FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace
JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE i.relname = %s AND (n.nspname = %s OR (%s::text IS NULL AND n.nspname = ANY(current_schemas(false))))
LIMIT 1
"""
_FOREIGN_KEYS = """
SELECT con.conname, format('%%s.%%s', rn.nspname, r.relname),
       ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey))
FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_class r ON r.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.contype = 'f' AND tn.nspname = %s AND t.relname = %s
"""
_REFERENCING = """
SELECT DISTINCT format('%%s.%%s', tn.nspname, t.relname)
FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_class r ON r.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.contype = 'f' AND rn.nspname = %s AND r.relname = %s AND con.conrelid <> con.confrelid
"""
# The sequences a table's columns draw from: identity and serial (owned) sequences, and any a
# column default calls nextval() on. column: the column, or NULL for a default's sequence we
# cannot tie to one.
_SEQUENCES = """
SELECT format('%%s.%%s', n.nspname, s.relname), a.attname::text
FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = %s::regclass
  AND d.deptype IN ('a', 'i')
UNION
SELECT format('%%s.%%s', n.nspname, s.relname), a.attname::text
FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
WHERE ad.adrelid = %s::regclass
"""
# The foreign keys that reference a table: the referencing table, its ON DELETE and ON UPDATE
# actions (a no action, r restrict, c cascade, n set null, d set default), the referenced columns.
_REFERENCING_KEYS = """
SELECT format('%%s.%%s', tn.nspname, t.relname), con.confdeltype::text, con.confupdtype::text,
       ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = con.confrelid AND a.attnum = ANY(con.confkey))
FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE con.contype = 'f' AND con.confrelid = %s::regclass AND con.conparentid = 0
ORDER BY 1
"""
_PARTITIONS = """
SELECT format('%%s.%%s', n.nspname, c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE pn.nspname = %s AND p.relname = %s AND p.relkind = 'p'
"""
_OBJECTS = {
    "policy": "SELECT 1 FROM pg_policy o WHERE o.polrelid = %s::regclass AND o.polname = %s",
    "trigger": "SELECT 1 FROM pg_trigger o WHERE o.tgrelid = %s::regclass AND o.tgname = %s AND NOT o.tgisinternal",
    "rule": "SELECT 1 FROM pg_rewrite o WHERE o.ev_class = %s::regclass AND o.rulename = %s",
}
_VOLATILE = """
SELECT coalesce(bool_or(p.provolatile = 'v'), true) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = %s AND (n.nspname = %s OR (%s::text IS NULL AND n.nspname = ANY(current_schemas(true))))
"""

_CONSTRAINED_DOMAIN = """
SELECT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE t.typname = %s AND t.typtype = 'd' AND (n.nspname = %s OR (%s::text IS NULL AND n.nspname = ANY(current_schemas(true))))
  AND (t.typnotnull OR EXISTS (SELECT 1 FROM pg_constraint c WHERE c.contypid = t.oid)))
"""

# Columns of the unique indexes a foreign key can reference (not partial, no expression): an
# UPDATE of one of them takes FOR UPDATE rather than FOR NO KEY UPDATE.
_KEY_COLUMNS = """
SELECT DISTINCT a.attname::text FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)
WHERE x.indrelid = %s::regclass AND x.indisunique AND x.indpred IS NULL AND x.indexprs IS NULL
"""
# An unqualified name is a builtin only if pg_catalog has it and no other schema of the search
# path has a function of that name (an overload there, e.g. public.lower(int), could win).
_BUILTIN = """
SELECT EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = %s)
  AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE p.proname = %s AND n.nspname <> 'pg_catalog' AND n.nspname = ANY(current_schemas(true)))
"""
# What an INSERT, UPDATE, DELETE or TRUNCATE of the table runs besides itself: its enabled user
# triggers for that event (tgtype bits: 4 INSERT, 8 DELETE, 16 UPDATE, 32 TRUNCATE) and, for an
# INSERT or UPDATE, the non-builtin functions its column defaults and generated columns, its
# CHECK constraints and its index expressions call (pg_depend), evaluated on each row written.
_USER_CODE = """
SELECT DISTINCT format('%%s.%%s', n.nspname, p.proname) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgtype & %s <> 0
UNION
SELECT DISTINCT format('%%s.%%s', n.nspname, p.proname) FROM pg_attrdef d
JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid AND dep.refclassid = 'pg_proc'::regclass
JOIN pg_proc p ON p.oid = dep.refobjid JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE d.adrelid = %s::regclass AND %s AND n.nspname <> 'pg_catalog'
UNION
SELECT DISTINCT format('%%s.%%s', n.nspname, p.proname) FROM pg_depend dep
JOIN pg_proc p ON p.oid = dep.refobjid JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE dep.refclassid = 'pg_proc'::regclass AND n.nspname <> 'pg_catalog' AND %s AND (
  (dep.classid = 'pg_constraint'::regclass AND dep.objid IN (SELECT oid FROM pg_constraint WHERE conrelid = %s::regclass))
  OR (dep.classid = 'pg_class'::regclass AND dep.objid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)))
"""
# The valid indexes of a table: key columns in order (NULL for an expression; INCLUDE columns
# left out) and the predicate as pg_get_expr prints it.
_INDEXES = """
SELECT ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, n)
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum AND k.attnum > 0
             WHERE k.n <= x.indnkeyatts ORDER BY k.n),
       pg_get_expr(x.indpred, x.indrelid)
FROM pg_index x WHERE x.indrelid = %s::regclass AND x.indisvalid
"""
_EVENT_BITS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}
# The non-builtin functions a view's query calls, through the views it reads, recursively.
_VIEW_CODE = """
WITH RECURSIVE v(oid) AS (
  SELECT %s::regclass::oid
  UNION
  SELECT d.refobjid FROM v JOIN pg_rewrite r ON r.ev_class = v.oid
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
  WHERE d.refobjid <> v.oid
)
SELECT DISTINCT format('%%s.%%s', n.nspname, p.proname) FROM v JOIN pg_rewrite r ON r.ev_class = v.oid
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_proc'::regclass
JOIN pg_proc p ON p.oid = d.refobjid JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname <> 'pg_catalog'
"""
# Everything a DROP ... CASCADE of an object removes: its dependents in pg_depend, recursively
# (an object internal to another, such as a view's rule, takes its owner with it), each mapped
# to the relation it is or belongs to. dropped: the relation itself goes.
_DEPENDENTS = """
WITH RECURSIVE dep(classid, objid, objsubid) AS (
  SELECT %s::regclass, %s::oid, 0
  UNION
  SELECT CASE WHEN fwd THEN d.classid ELSE d.refclassid END, CASE WHEN fwd THEN d.objid ELSE d.refobjid END,
         CASE WHEN fwd THEN d.objsubid ELSE 0 END
  FROM dep JOIN pg_depend d
    ON (d.refclassid = dep.classid AND d.refobjid = dep.objid AND (dep.objsubid = 0 OR d.refobjsubid = dep.objsubid)
        AND d.deptype IN ('n', 'a', 'i'))
    OR (d.classid = dep.classid AND d.objid = dep.objid AND d.objsubid = dep.objsubid AND d.deptype = 'i')
  CROSS JOIN LATERAL (SELECT d.refclassid = dep.classid AND d.refobjid = dep.objid AND d.deptype IN ('n', 'a', 'i') AS fwd) f
), rel(oid, dropped) AS (
  SELECT objid, objsubid = 0 FROM dep WHERE classid = 'pg_class'::regclass
  UNION ALL SELECT r.ev_class, false FROM dep JOIN pg_rewrite r ON r.oid = dep.objid WHERE dep.classid = 'pg_rewrite'::regclass
  UNION ALL SELECT c.conrelid, false FROM dep JOIN pg_constraint c ON c.oid = dep.objid WHERE dep.classid = 'pg_constraint'::regclass
  UNION ALL SELECT t.tgrelid, false FROM dep JOIN pg_trigger t ON t.oid = dep.objid WHERE dep.classid = 'pg_trigger'::regclass
  UNION ALL SELECT o.polrelid, false FROM dep JOIN pg_policy o ON o.oid = dep.objid WHERE dep.classid = 'pg_policy'::regclass
  UNION ALL SELECT a.adrelid, false FROM dep JOIN pg_attrdef a ON a.oid = dep.objid WHERE dep.classid = 'pg_attrdef'::regclass
)
SELECT format('%%s.%%s', n.nspname, c.relname), bool_or(rel.dropped)
FROM rel JOIN pg_class c ON c.oid = rel.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
GROUP BY 1 ORDER BY 1
"""
_OBJECT_ADDRESS = {
    "relation": ("pg_class", "SELECT %s::regclass::oid"),
    "schema": ("pg_namespace", "SELECT oid FROM pg_namespace WHERE nspname = %s"),
    "type": ("pg_type", "SELECT to_regtype(%s)::oid"),
}


def _split(relation: str) -> tuple[str, str]:
    schema, _, name = relation.partition(".")
    return schema, name


def _quote(relation: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in _split(relation))


class LiveCatalog:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.created: set[str] = set()
        self.dropped: set[str] = set()
        self._fks: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}
        self._current_schema: str | None = None
        self._objects: dict[tuple[str, str, str], bool] = {}
        self._version: int | None = None
        self._valid: dict[tuple[str, str], bool] = {}
        self._domains: set[str] = set()  # constrained domains the planned statements create
        self._parts: dict[str, set[str]] = {}  # direct partitions, as the statements planned so far leave them
        self._functions: set[str] = set()  # names of the functions the planned statements create
        self._indexes: dict[str, list[IndexShape]] = {}  # as the statements planned so far leave them

    def _one(self, query: str, *args: object) -> Any:
        row = self.conn.execute(query, args).fetchone()
        return row[0] if row else None

    def _planned(self, relation: str) -> bool:
        """Created or dropped by a statement planned so far: pg_catalog does not describe it as the run will."""
        return relation in self.created or relation in self.dropped

    def _in_pg_catalog(self, relation: str) -> bool:
        """pg_catalog describes it as the run will find it: it exists, and no planned statement made or removed it."""
        return not self._planned(relation) and self.exists(relation)

    def qualify(self, schema: str | None, name: str) -> str:
        if schema:
            return f"{schema}.{name}"
        found = self._one(_RELATION, name, None, None)
        if found and found not in self.dropped:
            return found
        if self._current_schema is None:
            self._current_schema = self._one("SELECT current_schema()") or "public"
        return f"{self._current_schema}.{name}"

    def is_new(self, relation: str) -> bool:
        return relation in self.created

    def exists(self, relation: str) -> bool:
        if relation in self.created:
            return True
        if relation in self.dropped:
            return False
        schema, name = _split(relation)
        return self._one(_RELATION, name, schema, schema) is not None

    def index_table(self, schema: str | None, index: str) -> str | None:
        table = self._one(_INDEX_TABLE, index, schema, schema)
        return table if table and self.exists(table) else None

    def foreign_keys(self, table: str) -> dict[str, tuple[str, tuple[str, ...]]]:
        if table not in self._fks:
            rows = [] if self._planned(table) else self.conn.execute(_FOREIGN_KEYS, _split(table)).fetchall()
            self._fks[table] = {name: (ref, tuple(cols)) for name, ref, cols in rows}
        return {n: (ref, cols) for n, (ref, cols) in self._fks[table].items() if ref not in self.dropped}

    def referencing(self, table: str) -> list[str]:
        rows = self.conn.execute(_REFERENCING, _split(table)).fetchall()
        return [r[0] for r in rows if r[0] not in self.dropped]

    def sequences(self, table: str) -> dict[str, str]:
        if not self._in_pg_catalog(table):
            return {}
        rows = self.conn.execute(_SEQUENCES, (_quote(table), _quote(table))).fetchall()
        return {seq: col for seq, col in rows if seq not in self.dropped}

    def referencing_keys(self, table: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
        if not self._in_pg_catalog(table):
            return []
        rows = self.conn.execute(_REFERENCING_KEYS, (_quote(table),)).fetchall()
        return [
            (rel, on_delete, on_update, tuple(cols))
            for rel, on_delete, on_update, cols in rows
            if rel not in self.dropped
        ]

    def volatile(self, function: str) -> bool:
        schema, _, name = function.rpartition(".")
        return bool(self._one(_VOLATILE, name, schema or None, schema or None))

    def constrained_domain(self, type_name: str) -> bool:
        if type_name in self._domains or type_name.rpartition(".")[2] in self._domains:
            return True
        schema, _, name = type_name.rpartition(".")
        return bool(self._one(_CONSTRAINED_DOMAIN, name, schema or None, schema or None))

    def has_object(self, kind: str, table: str, name: str) -> bool:
        key = (kind, table, name)
        if key not in self._objects:
            self._objects[key] = bool(self._in_pg_catalog(table) and self._one(_OBJECTS[kind], _quote(table), name))
        return self._objects[key] and table not in self.dropped

    def constraint_valid(self, table: str, name: str) -> bool:
        if (table, name) not in self._valid:
            fresh = self._planned(table)
            row = (
                None
                if fresh
                else self._one(
                    "SELECT convalidated FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                    _quote(table),
                    name,
                )
            )
            # On a table this plan creates, a constraint not added NOT VALID is valid.
            self._valid[(table, name)] = fresh or bool(row)
        return self._valid[(table, name)]

    def _direct_partitions(self, table: str) -> set[str]:
        if table not in self._parts:
            rows = [] if self._planned(table) else self.conn.execute(_PARTITIONS, _split(table)).fetchall()
            self._parts[table] = {r[0] for r in rows}
        return self._parts[table]

    def partitions(self, table: str) -> list[str]:
        out, todo = [], [table]
        while todo:
            for child in sorted(self._direct_partitions(todo.pop())):
                if child not in self.dropped:
                    out.append(child)
                    todo.append(child)
        return out

    def key_columns(self, table: str) -> set[str]:
        if not self._in_pg_catalog(table):
            return set()
        return {r[0] for r in self.conn.execute(_KEY_COLUMNS, (_quote(table),)).fetchall()}

    def builtin(self, function: str) -> bool:
        schema, _, name = function.rpartition(".")
        if schema and schema != "pg_catalog":
            return False
        if not schema and name in self._functions:
            return False
        # Qualified pg_catalog.f is a builtin whatever other schemas hold.
        return bool(self._one(_BUILTIN, name, "" if schema else name))

    def user_code(self, table: str, event: str) -> list[str]:
        if not self._in_pg_catalog(table):
            return []
        if event == "SELECT":
            return [r[0] for r in self.conn.execute(_VIEW_CODE, (_quote(table),)).fetchall()]
        writes = event in ("INSERT", "UPDATE")
        rows = self.conn.execute(
            _USER_CODE, (_quote(table), _EVENT_BITS[event], _quote(table), writes, writes, _quote(table), _quote(table))
        ).fetchall()
        return [r[0] for r in rows]

    def dependents(self, kind: str, name: str) -> list[tuple[str, bool]] | None:
        if kind == "relation" and self._planned(name):
            return [] if name in self.dropped else None  # pg_depend does not know what the plan created
        catalog, lookup = _OBJECT_ADDRESS[kind]
        oid = self._one(lookup, _quote(name) if kind == "relation" else name)
        if oid is None:
            return None
        rows = self.conn.execute(_DEPENDENTS, (catalog, oid)).fetchall()
        return [(rel, dropped) for rel, dropped in rows if rel not in self.dropped]

    def index_shapes(self, table: str) -> list[IndexShape]:
        if table not in self._indexes:
            rows = [] if not self._in_pg_catalog(table) else self.conn.execute(_INDEXES, (_quote(table),)).fetchall()
            self._indexes[table] = [(tuple(keys), predicate_shape(pred)) for keys, pred in rows]
        return list(self._indexes[table])

    def server_version(self) -> int:
        if self._version is None:
            self._version = int(self._one("SELECT current_setting('server_version_num')"))
        return self._version

    def apply(self, changes: CatalogChanges) -> None:
        for key in changes.not_valid_added:
            self._valid[key] = False
        for key in changes.validated:
            self._valid[key] = True
        for kind, table, name in changes.objects_added:
            self._objects[(kind, table, name)] = True
        for kind, table, name in changes.objects_dropped:
            self._objects[(kind, table, name)] = False
        for rel in changes.created:
            self.created.add(rel)
            self.dropped.discard(rel)
            self._fks[rel] = {}
            self._parts[rel] = set()
            self._indexes[rel] = []
        for table, name, ref, cols in changes.fk_added:
            self.foreign_keys(table)
            self._fks[table][name] = (ref, cols)
        for table, name, _cols in changes.fk_dropped:
            self.foreign_keys(table)
            self._fks[table].pop(name, None)
        self._functions.update(changes.functions)
        for table, shape in changes.indexes_added:
            self.index_shapes(table)
            self._indexes[table].append(shape)
        for name in changes.domains:
            self._domains |= {name, name.rpartition(".")[2]}
        for parent, part in changes.attached:
            self._direct_partitions(parent).add(part)
        for parent, part in changes.detached:
            self._direct_partitions(parent).discard(part)
        for rel in changes.dropped:
            self.dropped.add(rel)
            self.created.discard(rel)
            self._fks[rel] = {}
            self._indexes[rel] = []
