"""Every row of every lock table (x402db/plan/rules/), checked without a server against an
in-memory catalog, plus the facts PostgreSQL's documentation states outright. The proof against
pg_locks (tests/test_plan_proof.py) checks the same rules on real servers, statement by statement."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from pglast import ast, enums, parse_sql

from tests.utils.fake_catalog import FakeCatalog
from x402db.plan import rules
from x402db.plan.lockmap import Prediction, predict
from x402db.plan.locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    ANY,
    FOR_UPDATE,
    KEY_SHARE,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    Effect,
)
from x402db.plan.rules import reference
from x402db.plan.rules.alter_table import ALTER_TABLE
from x402db.plan.rules.common import Table
from x402db.plan.rules.create import CREATE_TABLE, NO_RELATION
from x402db.plan.rules.dml import DML, LOCKING, ROW_LOCK
from x402db.plan.rules.drop import DROP
from x402db.plan.rules.index import CREATE_INDEX, DROP_INDEX
from x402db.plan.rules.table_objects import COMMENT, GRANT, LOCK, ON_TABLE
from x402db.plan.view import writers_sentence

AT = enums.AlterTableType
OT = enums.ObjectType
LCS = enums.LockClauseStrength
T, R, PT, PT1 = "public.t", "public.r", "public.pt", "public.pt1"


def world(**overrides: Any) -> FakeCatalog:
    """t (with a foreign key to r, a NOT VALID constraint, a policy, a trigger, a rule and an
    index), r, a partitioned pt with partition pt1 (and pt9, not attached), views, a sequence."""
    cat = FakeCatalog(
        relations={T, R, PT, PT1, "public.pt9", "public.v", "public.m", "public.f", "public.s"},
        indexes={"public.i": T},
        fks={T: {"t_r_fkey": (R, ("r_id",))}},
        invalid={(T, "k_nv"), (T, "t_r_fkey")},
        objects={("policy", T, "p"), ("trigger", T, "g"), ("rule", T, "ru")},
        parts={PT: [PT1]},
        keys={R: {"id"}, T: {"id"}},
        referencing_keys_of={R: [(T, "a", "a", ("id",))]},
    )
    for name, value in overrides.items():
        setattr(cat, name, value)
    return cat


def plan(sql: str, cat: FakeCatalog | None = None) -> Prediction:
    (raw,) = parse_sql(sql)
    return predict(raw.stmt, cat or world())


# ---- the facts the documentation states ----------------------------------------------------

FACTS = [
    # (statement, its locks, its effect)
    ("ALTER TABLE t ADD COLUMN c int", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t ADD COLUMN c int DEFAULT 0", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t ADD COLUMN c float DEFAULT random()", {T: ACCESS_EXCLUSIVE}, Effect.REWRITE),
    ("ALTER TABLE t ADD COLUMN c int NOT NULL", {T: ACCESS_EXCLUSIVE}, Effect.SCAN),
    ("ALTER TABLE t ADD COLUMN c serial", {T: ACCESS_EXCLUSIVE}, Effect.REWRITE),
    ("ALTER TABLE t ALTER COLUMN a TYPE bigint", {T: ACCESS_EXCLUSIVE}, Effect.REWRITE),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", {T: ACCESS_EXCLUSIVE}, Effect.SCAN),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 1", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t ALTER COLUMN a SET STATISTICS 100", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t SET (fillfactor = 70)", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t SET (autovacuum_enabled = false)", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t CLUSTER ON i", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t DISABLE TRIGGER ALL", {T: SHARE_ROW_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t ENABLE TRIGGER g", {T: SHARE_ROW_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t VALIDATE CONSTRAINT k_nv", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.SCAN),
    ("ALTER TABLE t VALIDATE CONSTRAINT t_r_fkey", {R: ROW_SHARE, T: SHARE_UPDATE_EXCLUSIVE}, Effect.SCAN),
    ("ALTER TABLE t VALIDATE CONSTRAINT k_valid", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    (
        "ALTER TABLE t ADD CONSTRAINT t_r2 FOREIGN KEY (r_id) REFERENCES r (id)",
        {R: SHARE_ROW_EXCLUSIVE, T: SHARE_ROW_EXCLUSIVE},
        Effect.SCAN,
    ),
    (
        "ALTER TABLE t ADD CONSTRAINT t_r2 FOREIGN KEY (r_id) REFERENCES r (id) NOT VALID",
        {R: SHARE_ROW_EXCLUSIVE, T: SHARE_ROW_EXCLUSIVE},
        Effect.CATALOG,
    ),
    ("ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0)", {T: ACCESS_EXCLUSIVE}, Effect.SCAN),
    ("ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t DROP CONSTRAINT t_r_fkey", {R: ACCESS_EXCLUSIVE, T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t DROP COLUMN r_id", {R: ACCESS_EXCLUSIVE, T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE pt ADD COLUMN z int", {PT: ACCESS_EXCLUSIVE, PT1: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE ONLY pt ADD COLUMN z int", {PT: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("ALTER TABLE pt ENABLE ROW LEVEL SECURITY", {PT: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    (
        "ALTER TABLE pt ATTACH PARTITION pt9 FOR VALUES FROM (0) TO (10)",
        {"public.pt9": ACCESS_EXCLUSIVE, PT: SHARE_UPDATE_EXCLUSIVE},
        Effect.SCAN,
    ),
    ("ALTER TABLE pt DETACH PARTITION pt1", {PT1: ACCESS_EXCLUSIVE, PT: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    (
        "ALTER TABLE pt DETACH PARTITION pt1 CONCURRENTLY",
        {PT1: ACCESS_EXCLUSIVE, PT: SHARE_UPDATE_EXCLUSIVE},
        Effect.CATALOG,
    ),
    ("CREATE INDEX i2 ON t (a)", {T: SHARE}, Effect.SCAN),
    ("CREATE INDEX CONCURRENTLY i2 ON t (a)", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.SCAN),
    ("CREATE INDEX i2 ON pt (a)", {PT: SHARE, PT1: SHARE}, Effect.SCAN),
    ("CREATE INDEX i2 ON new_table (a)", {"public.new_table": SHARE}, Effect.CREATE),
    ("DROP INDEX i", {T: ACCESS_EXCLUSIVE}, Effect.DROP),
    ("DROP INDEX CONCURRENTLY i", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.DROP),
    ("DROP INDEX IF EXISTS missing", {}, Effect.DROP),
    ("DROP TABLE t", {T: ACCESS_EXCLUSIVE, R: ACCESS_EXCLUSIVE}, Effect.DROP),
    ("DROP TABLE pt", {PT: ACCESS_EXCLUSIVE, PT1: ACCESS_EXCLUSIVE}, Effect.DROP),
    ("DROP POLICY p ON t", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("DROP POLICY IF EXISTS nope ON t", {}, Effect.CATALOG),
    ("DROP FUNCTION f()", {}, Effect.DROP),
    (
        "CREATE TRIGGER g2 BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        {T: SHARE_ROW_EXCLUSIVE},
        Effect.CATALOG,
    ),
    ("CREATE POLICY p2 ON t USING (a IN (SELECT id FROM r))", {R: ACCESS_SHARE, T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    ("COMMENT ON TABLE t IS 'x'", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    ("COMMENT ON COLUMN t.a IS 'x'", {T: SHARE_UPDATE_EXCLUSIVE}, Effect.CATALOG),
    ("COMMENT ON CONSTRAINT k ON t IS 'x'", {T: ACCESS_SHARE}, Effect.CATALOG),
    ("COMMENT ON SCHEMA public IS 'x'", {}, Effect.CATALOG),
    ("GRANT SELECT ON t TO PUBLIC", {T: ACCESS_SHARE}, Effect.CATALOG),
    ("LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE", {T: SHARE_ROW_EXCLUSIVE}, Effect.CATALOG),
    ("LOCK TABLE t", {T: ACCESS_EXCLUSIVE}, Effect.CATALOG),
    (
        "CREATE TABLE n (id int REFERENCES r (id))",
        {"public.n": ACCESS_EXCLUSIVE, R: SHARE_ROW_EXCLUSIVE},
        Effect.CREATE,
    ),
    (
        "CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (10) TO (20)",
        {"public.pt2": ACCESS_EXCLUSIVE, PT: ACCESS_EXCLUSIVE},
        Effect.CREATE,
    ),
    ("CREATE TABLE IF NOT EXISTS t (a int)", {}, Effect.CATALOG),
    ("SELECT * FROM t", {T: ACCESS_SHARE}, Effect.SCAN),
    ("SELECT 1", {}, Effect.CATALOG),
    ("INSERT INTO t (id) VALUES (1)", {T: ROW_EXCLUSIVE, R: ROW_SHARE}, Effect.SCAN),
    ("UPDATE t SET a = 1", {T: ROW_EXCLUSIVE}, Effect.SCAN),
    ("DELETE FROM r WHERE id = 1", {R: ROW_EXCLUSIVE, T: ROW_SHARE}, Effect.SCAN),
    ("TRUNCATE t", {T: ACCESS_EXCLUSIVE}, Effect.REWRITE),
    ("TRUNCATE r CASCADE", {R: ACCESS_EXCLUSIVE, T: ACCESS_EXCLUSIVE}, Effect.REWRITE),
    ("CREATE ROLE someone", {}, Effect.CREATE),
    ("VACUUM t", {T: ACCESS_EXCLUSIVE}, Effect.UNKNOWN),  # no rule: unknown, the worst lock on what it names
    ("SELECT pg_sleep(1)", {}, Effect.CATALOG),
]


@pytest.mark.parametrize(("sql", "locks", "effect"), FACTS, ids=[f[0] for f in FACTS])
def test_documented_fact(sql: str, locks: dict[str, str], effect: str) -> None:
    p = plan(sql)
    assert (p.locks, p.effect) == (locks, effect)


def test_row_locks_of_writes_and_locking_clauses() -> None:
    assert plan("SELECT * FROM t FOR UPDATE").row_locks == {T: (FOR_UPDATE, "returned")}
    assert plan("SELECT * FROM t FOR UPDATE").kind == "SELECT FOR UPDATE"
    assert plan("UPDATE t SET a = 1 WHERE id = 2").row_locks == {T: ("FOR NO KEY UPDATE", "where")}
    assert plan("UPDATE t SET id = 1").row_locks == {T: (FOR_UPDATE, "all")}
    assert plan("DELETE FROM r WHERE id = 1").row_locks == {R: (FOR_UPDATE, "where"), T: (KEY_SHARE, "referencing")}
    assert plan("INSERT INTO t (id) VALUES (1)").row_locks == {
        T: (FOR_UPDATE, "inserted"),
        R: (KEY_SHARE, "referenced"),
    }


def test_unknown_code_locks_anything() -> None:
    cat = world(user_functions={"public.f_ddl"})
    p = plan("SELECT public.f_ddl()", cat)
    assert (p.known, p.effect, p.locks) == (False, Effect.UNKNOWN, {ANY: ACCESS_EXCLUSIVE})
    assert "public.f_ddl()" in p.note
    assert not plan("UPDATE t SET a = 1", world(code={(T, "UPDATE"): ["public.trg"]})).known


def test_a_drop_cascade_of_an_unresolved_object_is_unknown() -> None:
    p = plan("DROP SCHEMA gone CASCADE")
    assert (p.kind, p.effect, p.locks) == ("DROP SCHEMA CASCADE", Effect.UNKNOWN, {ANY: ACCESS_EXCLUSIVE})
    p = plan("DROP SCHEMA s CASCADE", world(depends={("schema", "s"): [(T, True)]}))
    assert (p.locks, p.changes.dropped) == ({T: ACCESS_EXCLUSIVE}, [T])


def test_a_foreign_key_no_index_serves_is_named_with_what_it_costs() -> None:
    """Once in force, a foreign key makes each DELETE from the referenced table look up the
    referencing rows; the plan names a key whose lookup no index serves, whether the index is in
    the catalog or built by an earlier statement, and only then."""
    fk = "ALTER TABLE t ADD CONSTRAINT t_r2 FOREIGN KEY (r_id) REFERENCES r (id) NOT VALID"
    assert plan(fk).unindexed_fks == [(T, ("r_id",), R)]
    assert plan("ALTER TABLE t ADD COLUMN r2 int REFERENCES r (id)").unindexed_fks == [(T, ("r2",), R)]
    assert plan("CREATE TABLE n (id int REFERENCES r (id))").unindexed_fks == []  # empty until COMMIT
    serving = {
        "a plain index": ((("r_id",), frozenset())),
        "its leading column": ((("r_id", "id"), frozenset())),
        "partial, IS NOT NULL": ((("r_id",), frozenset({"r_id"}))),
    }
    for why, shape in serving.items():
        assert plan(fk, world(index_shapes_of={T: [shape]})).unindexed_fks == [], why
    useless = {
        "a later column": ((("id", "r_id"), frozenset())),
        "another predicate": ((("r_id",), None)),
        "an expression": (((None,), frozenset())),
    }
    for why, shape in useless.items():
        assert plan(fk, world(index_shapes_of={T: [shape]})).unindexed_fks == [(T, ("r_id",), R)], why
    # An index an earlier statement builds serves it; its predicate is read from the statement.
    cat = world()
    for sql, expected in [
        ("CREATE INDEX CONCURRENTLY i2 ON t (r_id) WHERE r_id > 0", []),
        (fk, [(T, ("r_id",), R)]),
        ("CREATE INDEX CONCURRENTLY i3 ON t (r_id) WHERE r_id IS NOT NULL", []),
        (fk, []),
    ]:
        (raw,) = parse_sql(sql)
        p = predict(raw.stmt, cat)
        cat.apply(p.changes)
        assert p.unindexed_fks == expected, sql
    sizes = type("S", (), {"of": lambda self, rel: (1_000_000, 1 << 27)})()
    sentence = writers_sentence(plan(fk), "transaction", set(), {}, sizes, "1s")
    assert "from COMMIT on, until an index on public.t (r_id) exists, each DELETE from public.r" in sentence
    assert "reads every row of public.t (~1,000,000 rows, 128.0 MB)" in sentence


# ---- every row of every table ------------------------------------------------------------

# One statement per row: (the table, the row's key, a statement of that row, the relation that
# takes the row's lock, or None for a row that locks none). Its content leaves the row's lock
# and effect as they are; the facts above check what content changes.
_AT_SAMPLES: dict[enums.AlterTableType | None, str | None] = {
    AT.AT_AddColumn: "ALTER TABLE pt ADD COLUMN c int",
    AT.AT_AlterColumnType: "ALTER TABLE pt ALTER COLUMN a TYPE bigint",
    AT.AT_SetLogged: "ALTER TABLE pt SET LOGGED",
    AT.AT_SetUnLogged: "ALTER TABLE pt SET UNLOGGED",
    AT.AT_SetAccessMethod: "ALTER TABLE pt SET ACCESS METHOD heap",
    AT.AT_SetTableSpace: "ALTER TABLE pt SET TABLESPACE elsewhere",
    AT.AT_AddIdentity: "ALTER TABLE pt ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY",
    AT.AT_SetNotNull: "ALTER TABLE pt ALTER COLUMN a SET NOT NULL",
    AT.AT_AddConstraint: "ALTER TABLE pt ADD CONSTRAINT k CHECK (a > 0) NOT VALID",
    AT.AT_ReAddConstraint: None,  # internal to PostgreSQL: no SQL produces it (see below)
    AT.AT_ValidateConstraint: "ALTER TABLE pt VALIDATE CONSTRAINT k_valid",
    AT.AT_DropConstraint: "ALTER TABLE pt DROP CONSTRAINT k",
    AT.AT_DropColumn: "ALTER TABLE pt DROP COLUMN a",
    AT.AT_SetStatistics: "ALTER TABLE pt ALTER COLUMN a SET STATISTICS 100",
    AT.AT_SetOptions: "ALTER TABLE pt ALTER COLUMN a SET (n_distinct = 5)",
    AT.AT_ResetOptions: "ALTER TABLE pt ALTER COLUMN a RESET (n_distinct)",
    AT.AT_ClusterOn: "ALTER TABLE pt CLUSTER ON i",
    AT.AT_DropCluster: "ALTER TABLE pt SET WITHOUT CLUSTER",
    AT.AT_SetRelOptions: "ALTER TABLE pt SET (security_barrier = true)",
    AT.AT_ResetRelOptions: "ALTER TABLE pt RESET (security_barrier)",
    AT.AT_EnableTrig: "ALTER TABLE pt ENABLE TRIGGER g",
    AT.AT_EnableAlwaysTrig: "ALTER TABLE pt ENABLE ALWAYS TRIGGER g",
    AT.AT_EnableReplicaTrig: "ALTER TABLE pt ENABLE REPLICA TRIGGER g",
    AT.AT_DisableTrig: "ALTER TABLE pt DISABLE TRIGGER g",
    AT.AT_EnableTrigAll: "ALTER TABLE pt ENABLE TRIGGER ALL",
    AT.AT_DisableTrigAll: "ALTER TABLE pt DISABLE TRIGGER ALL",
    AT.AT_EnableTrigUser: "ALTER TABLE pt ENABLE TRIGGER USER",
    AT.AT_DisableTrigUser: "ALTER TABLE pt DISABLE TRIGGER USER",
    AT.AT_AttachPartition: "ALTER TABLE pt ATTACH PARTITION pt9 FOR VALUES FROM (0) TO (10)",
    AT.AT_DetachPartition: "ALTER TABLE pt DETACH PARTITION pt1",
    AT.AT_DetachPartitionFinalize: "ALTER TABLE pt DETACH PARTITION pt1 FINALIZE",
    AT.AT_EnableRowSecurity: "ALTER TABLE pt ENABLE ROW LEVEL SECURITY",
    AT.AT_DisableRowSecurity: "ALTER TABLE pt DISABLE ROW LEVEL SECURITY",
    AT.AT_ForceRowSecurity: "ALTER TABLE pt FORCE ROW LEVEL SECURITY",
    AT.AT_NoForceRowSecurity: "ALTER TABLE pt NO FORCE ROW LEVEL SECURITY",
    AT.AT_ChangeOwner: "ALTER TABLE pt OWNER TO someone",
    AT.AT_ReplicaIdentity: "ALTER TABLE pt REPLICA IDENTITY FULL",
    AT.AT_GenericOptions: "ALTER FOREIGN TABLE pt OPTIONS (ADD x 'y')",
    None: "ALTER TABLE pt ALTER COLUMN a SET DEFAULT 1",  # any other subcommand: ACCESS EXCLUSIVE
}
SAMPLES: list[tuple[Table[Any, Any], Any, str | None, str | None]] = [
    *((ALTER_TABLE, k, sql, PT) for k, sql in _AT_SAMPLES.items()),
    (CREATE_INDEX, False, "CREATE INDEX i2 ON t (a)", T),
    (CREATE_INDEX, True, "CREATE INDEX CONCURRENTLY i2 ON t (a)", T),
    (DROP_INDEX, False, "DROP INDEX i", T),
    (DROP_INDEX, True, "DROP INDEX CONCURRENTLY i", T),
    (DROP, OT.OBJECT_TABLE, "DROP TABLE r", R),
    (DROP, OT.OBJECT_VIEW, "DROP VIEW v", "public.v"),
    (DROP, OT.OBJECT_MATVIEW, "DROP MATERIALIZED VIEW m", "public.m"),
    (DROP, OT.OBJECT_FOREIGN_TABLE, "DROP FOREIGN TABLE f", "public.f"),
    (DROP, OT.OBJECT_SEQUENCE, "DROP SEQUENCE s", "public.s"),
    (DROP, OT.OBJECT_INDEX, "DROP INDEX i", None),  # DROP INDEX's own table says which lock
    (DROP, OT.OBJECT_POLICY, "DROP POLICY p ON t", T),
    (DROP, OT.OBJECT_TRIGGER, "DROP TRIGGER g ON t", T),
    (DROP, OT.OBJECT_RULE, "DROP RULE ru ON t", T),
    (DROP, OT.OBJECT_SCHEMA, "DROP SCHEMA sch", None),
    (DROP, OT.OBJECT_TYPE, "DROP TYPE ty", None),
    (DROP, OT.OBJECT_DOMAIN, "DROP DOMAIN dom", None),
    (DROP, None, "DROP FUNCTION f()", None),
    (CREATE_TABLE, "the new table or view", "CREATE TABLE n (a int)", "public.n"),
    (CREATE_TABLE, "REFERENCES (the referenced table)", "CREATE TABLE n (a int REFERENCES r (id))", R),
    (CREATE_TABLE, "LIKE (the source table)", "CREATE TABLE n (LIKE t)", T),
    (CREATE_TABLE, "INHERITS (each parent)", "CREATE TABLE n () INHERITS (t)", T),
    (CREATE_TABLE, "PARTITION OF (the parent)", "CREATE TABLE n PARTITION OF pt FOR VALUES FROM (5) TO (6)", PT),
    (CREATE_TABLE, "a view's query (each table read)", "CREATE VIEW nv AS SELECT id FROM t", T),
    (ON_TABLE, ast.CreateTrigStmt, "CREATE TRIGGER g2 AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f()", T),
    (ON_TABLE, ast.CreatePolicyStmt, "CREATE POLICY p2 ON t USING (true)", T),
    (ON_TABLE, ast.AlterPolicyStmt, "ALTER POLICY p ON t USING (false)", T),
    (COMMENT, OT.OBJECT_TABLE, "COMMENT ON TABLE t IS 'x'", T),
    (COMMENT, OT.OBJECT_VIEW, "COMMENT ON VIEW v IS 'x'", "public.v"),
    (COMMENT, OT.OBJECT_MATVIEW, "COMMENT ON MATERIALIZED VIEW m IS 'x'", "public.m"),
    (COMMENT, OT.OBJECT_FOREIGN_TABLE, "COMMENT ON FOREIGN TABLE f IS 'x'", "public.f"),
    (COMMENT, OT.OBJECT_SEQUENCE, "COMMENT ON SEQUENCE s IS 'x'", "public.s"),
    (COMMENT, OT.OBJECT_COLUMN, "COMMENT ON COLUMN t.a IS 'x'", T),
    (COMMENT, OT.OBJECT_POLICY, "COMMENT ON POLICY p ON t IS 'x'", T),
    (COMMENT, OT.OBJECT_TRIGGER, "COMMENT ON TRIGGER g ON t IS 'x'", T),
    (COMMENT, OT.OBJECT_RULE, "COMMENT ON RULE ru ON t IS 'x'", T),
    (COMMENT, OT.OBJECT_TABCONSTRAINT, "COMMENT ON CONSTRAINT k ON t IS 'x'", T),
    (COMMENT, None, "COMMENT ON FUNCTION f() IS 'x'", None),
    (GRANT, OT.OBJECT_TABLE, "GRANT SELECT ON t TO someone", T),
    (GRANT, OT.OBJECT_SEQUENCE, "GRANT USAGE ON SEQUENCE s TO someone", "public.s"),
    (GRANT, None, "GRANT USAGE ON SCHEMA public TO someone", None),
    (LOCK, 1, "LOCK TABLE t IN ACCESS SHARE MODE", T),
    (LOCK, 2, "LOCK TABLE t IN ROW SHARE MODE", T),
    (LOCK, 3, "LOCK TABLE t IN ROW EXCLUSIVE MODE", T),
    (LOCK, 4, "LOCK TABLE t IN SHARE UPDATE EXCLUSIVE MODE", T),
    (LOCK, 5, "LOCK TABLE t IN SHARE MODE", T),
    (LOCK, 6, "LOCK TABLE t IN SHARE ROW EXCLUSIVE MODE", T),
    (LOCK, 7, "LOCK TABLE t IN EXCLUSIVE MODE", T),
    (LOCK, 8, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", T),
    (DML, ast.SelectStmt, "SELECT a FROM t", T),
    (DML, ast.InsertStmt, "INSERT INTO r (id) VALUES (1)", R),
    (DML, ast.UpdateStmt, "UPDATE r SET note = 'x'", R),
    (DML, ast.DeleteStmt, "DELETE FROM t", T),
    (DML, ast.MergeStmt, "MERGE INTO t USING r ON t.id = r.id WHEN MATCHED THEN DO NOTHING", T),
    (DML, ast.TruncateStmt, "TRUNCATE t", T),
    (LOCKING, LCS.LCS_FORKEYSHARE, "SELECT * FROM t FOR KEY SHARE", T),
    (LOCKING, LCS.LCS_FORSHARE, "SELECT * FROM t FOR SHARE", T),
    (LOCKING, LCS.LCS_FORNOKEYUPDATE, "SELECT * FROM t FOR NO KEY UPDATE", T),
    (LOCKING, LCS.LCS_FORUPDATE, "SELECT * FROM t FOR UPDATE", T),
    (NO_RELATION, ast.CreateRoleStmt, "CREATE ROLE someone", None),
    (NO_RELATION, ast.AlterRoleStmt, "ALTER ROLE someone NOLOGIN", None),
    (NO_RELATION, ast.DropRoleStmt, "DROP ROLE someone", None),
    (NO_RELATION, ast.GrantRoleStmt, "GRANT someone TO other", None),
    (NO_RELATION, ast.AlterDefaultPrivilegesStmt, "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO someone", None),
    (NO_RELATION, ast.CreateFunctionStmt, "CREATE FUNCTION f2() RETURNS int LANGUAGE sql AS 'SELECT 1'", None),
    (NO_RELATION, ast.AlterFunctionStmt, "ALTER FUNCTION f() STABLE", None),
    (NO_RELATION, ast.CreateEnumStmt, "CREATE TYPE mood AS ENUM ('a')", None),
    (NO_RELATION, ast.CompositeTypeStmt, "CREATE TYPE pair AS (a int, b int)", None),
    (NO_RELATION, ast.CreateDomainStmt, "CREATE DOMAIN pos AS int CHECK (VALUE > 0)", None),
    (NO_RELATION, ast.DefineStmt, "CREATE AGGREGATE agg (int) (SFUNC = int4pl, STYPE = int)", None),
    (NO_RELATION, ast.VariableSetStmt, "SET search_path = public", None),
    (NO_RELATION, ast.CreateExtensionStmt, "CREATE EXTENSION pgcrypto", None),
    (NO_RELATION, ast.AlterRoleSetStmt, "ALTER ROLE someone SET search_path = public", None),
]
TABLES = list(reference.TABLES)


def _id(sample: tuple[Table[Any, Any], Any, str | None, str | None]) -> str:
    return f"{sample[0].title}: {reference.key_label(sample[1]) if sample[1] is not None else 'any other'}"


def test_every_table_is_on_the_reference_page_and_every_row_has_a_sample() -> None:
    defined = [
        value
        for info in pkgutil.iter_modules(rules.__path__)
        for value in vars(importlib.import_module(f"{rules.__name__}.{info.name}")).values()
        if isinstance(value, Table)
    ]
    assert {id(t) for t in defined} == {id(t) for t in TABLES} == {id(s[0]) for s in SAMPLES}
    for table in TABLES:
        keys = {key for t, key, _sql, _rel in SAMPLES if t is table}
        assert keys - {None} == set(table.rows), table.title
        assert (None in keys) == (table.default is not None), f"{table.title}: its default row needs a sample"


@pytest.mark.parametrize("sample", SAMPLES, ids=[_id(s) for s in SAMPLES])
def test_every_row(sample: tuple[Table[Any, Any], Any, str | None, str | None]) -> None:
    table, key, sql, relation = sample
    rule = table.rule(key) if key is not None else table.default
    assert rule is not None
    if sql is None:  # a subcommand no SQL produces: the same statement as its twin, re-keyed
        (raw,) = parse_sql("ALTER TABLE pt ADD CONSTRAINT k CHECK (a > 0) NOT VALID")
        raw.stmt.cmds[0].subtype = key
        p = predict(raw.stmt, world())
    else:
        p = plan(sql)
    if table is DROP and key == OT.OBJECT_INDEX:  # DROP's index row defers to DROP INDEX's table
        assert rule.mode is None and p.locks == {T: DROP_INDEX.rule(False).mode}
    elif relation is None:
        assert rule.mode is None and p.locks == {}
    else:
        assert p.locks.get(relation) == rule.mode, p.locks
    assert p.effect == rule.effect
    if table is ALTER_TABLE:  # pt has one partition, pt1: a subcommand that recurses locks it too
        assert (PT1 in p.locks) == (
            rule.recurses or key == AT.AT_DetachPartition or key == AT.AT_DetachPartitionFinalize
        )
    if table is LOCKING:
        assert p.row_locks[T] == (ROW_LOCK[key], "returned")


def test_grant_locks_a_table_only_from_postgresql_16() -> None:
    assert plan("GRANT SELECT ON t TO someone", world(version=150000)).locks == {}
    assert plan("GRANT SELECT ON t TO someone", world(version=160000)).locks == {T: ACCESS_SHARE}


# ---- the reference page ----------------------------------------------------------------


def test_the_reference_page_is_generated_from_the_tables() -> None:
    committed = reference.PAGE.read_text() if reference.PAGE.exists() else ""
    assert committed == reference.page(), (
        f"{reference.PAGE.relative_to(reference.ROOT)} is stale: regenerate it with `{reference.COMMAND}`"
    )
