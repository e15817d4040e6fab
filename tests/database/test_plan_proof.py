"""The proof: every statement of every migration in sql/, up and down, on both targets and on
PostgreSQL 15 and 18, runs against a real server, and the locks PostgreSQL actually held (pg_locks)
must equal what the plan predicted, relation by relation. Effects too: `rewrite` means the
table's relfilenode changed, `catalog` that it did not and no sequential scan was counted.

A new migration whose statements the lock map gets wrong fails here."""

from __future__ import annotations

import psycopg

from tests.utils import lockprobe
from x402db import db
from x402db.migrate import files as migrations
from x402db.migrate import ledger, sqlparse
from x402db.migrate.engine import BASE, Engine
from x402db.migrate.target import detect
from x402db.plan import locks
from x402db.plan.locks import ANY, MODES
from x402db.plan.planner import Planner


def _plan(dsn: str, direction: str, sql_dir=None):
    """The plan `migrate.py plan` prints, for the whole run: every pending migration up, or every
    applied one down to base."""
    with db.connect(dsn) as conn:
        ms = migrations.load(sql_dir) if sql_dir else migrations.load()
        engine = Engine(conn, ms, detect(conn))
        plan = Planner(engine).build(direction, to=BASE if direction == "down" else None, allow_data_loss=True)
    return [(m.version, st) for m in plan.migrations for st in m.statements]


def _observe(conn, watcher, blocker, phase: str, statement: str) -> lockprobe.Observed:
    # A no-transaction statement that PostgreSQL would also run in a transaction block takes the
    # same locks either way, and the session's own pg_locks is exact; the others are watched.
    if phase == "no-transaction" and sqlparse.outside_transaction_only(sqlparse.statements(statement)[0]):
        return lockprobe.watched(conn, watcher, statement, blocker)
    return lockprobe.in_transaction(conn, statement)


def _check(version, st, observed: lockprobe.Observed) -> list[str]:
    where = f"{version} [{st.phase}] {st.sql.splitlines()[0][:70]!r}"
    predicted = {lock.relation: lock.mode for lock in st.locks}
    errors = []
    if st.effect != "unknown":
        if predicted != observed.locks:
            errors.append(f"{where}: predicted {predicted}, PostgreSQL held {observed.locks}")
    else:
        for rel, mode in observed.locks.items():
            bound = predicted.get(rel) or predicted.get(ANY)
            if bound is None or MODES.index(mode) > MODES.index(bound):
                errors.append(f"{where}: unknown statement under-predicted {rel}: held {mode}, shown {bound}")
    touched = set(predicted) - {ANY}
    if st.effect == "rewrite" and not (observed.rewritten & touched):
        errors.append(f"{where}: predicted rewrite, but no relfilenode changed")
    if st.effect not in ("rewrite", "unknown") and observed.rewritten:
        errors.append(f"{where}: predicted {st.effect}, but {observed.rewritten} got a new relfilenode")
    if st.effect == "catalog" and observed.scanned & touched:
        errors.append(f"{where}: predicted catalog-only, but {observed.scanned & touched} was scanned")
    return errors


def _prove(dsn: str, direction: str, sql_dir=None) -> list[str]:
    with db.connect(dsn) as conn:
        target = detect(conn).name
    statements = _plan(dsn, direction, sql_dir)
    assert statements, "no statement to prove"
    errors = []
    with db.connect(dsn) as conn, db.connect(dsn) as watcher, db.connect(dsn) as blocker:
        ledger.ensure(conn)  # as the engine does before any migration: its private schema
        for version, st in statements:
            observed = _observe(conn, watcher, blocker, st.phase, st.sql)
            errors += _check(version, st, observed)
        _bookkeep(conn, direction, sql_dir, {v for v, _ in statements}, target)
    return errors


def _bookkeep(conn, direction, sql_dir, versions, target) -> None:
    """The ledger rows the engine would have written, so that the down plan sees what ran."""
    ms = {m.version: m for m in (migrations.load(sql_dir) if sql_dir else migrations.load())}
    with conn.transaction():
        ledger.ensure(conn)
        for v in sorted(versions):
            if direction == "up":
                ledger.record(
                    conn,
                    version=v,
                    name=ms[v].name,
                    checksum=ms[v].checksum,
                    kind="applied",
                    target=target,
                    applied_by="proof",
                    execution_ms=0,
                )
            else:
                ledger.forget(conn, v)


def test_every_prediction_matches_pg_locks_postgres_target(empty_db):
    errors = _prove(empty_db, "up") + _prove(empty_db, "down")
    assert errors == [], "\n".join(errors)


def test_every_prediction_matches_pg_locks_supabase_target(supabase_db):
    errors = _prove(supabase_db, "up") + _prove(supabase_db, "down")
    assert errors == [], "\n".join(errors)


# Statements sql/ does not use today, one per map entry a future migration is likely to need.
# Each is proven the same way, so the map's entries are checked before a migration relies on them.
_WIDER_UP = """
CREATE TABLE public.p_parent (id int PRIMARY KEY, v text);
CREATE TABLE public.p_child (id int PRIMARY KEY, parent_id int, note text);
INSERT INTO public.p_parent SELECT g, g::text FROM generate_series(1, 50) g;
INSERT INTO public.p_child SELECT g, g, NULL FROM generate_series(1, 50) g;
ALTER TABLE public.p_child ADD COLUMN c_now timestamptz DEFAULT now();
ALTER TABLE public.p_child ADD COLUMN c_uuid uuid DEFAULT gen_random_uuid();
CREATE DOMAIN public.p_positive AS int CHECK (VALUE > 0);
ALTER TABLE public.p_child ADD COLUMN c_pos public.p_positive DEFAULT 5;
ALTER TABLE public.p_child ADD COLUMN c_pos2 public.p_positive;
ALTER TABLE public.p_child ALTER COLUMN note SET DEFAULT 'x';
ALTER TABLE public.p_child ALTER COLUMN id SET NOT NULL;
ALTER TABLE public.p_child ALTER COLUMN note TYPE varchar(20);
ALTER TABLE public.p_child ADD CONSTRAINT p_child_parent_fkey FOREIGN KEY (parent_id) REFERENCES public.p_parent (id);
INSERT INTO public.p_child (id, parent_id) VALUES (51, 1);
UPDATE public.p_child SET parent_id = 2 WHERE id = 51;
UPDATE public.p_child SET note = 'n' WHERE id = 51;
ALTER TABLE public.p_child ADD CONSTRAINT p_child_note_check CHECK (note <> '') NOT VALID;
ALTER TABLE public.p_child ADD CONSTRAINT p_child_id_check CHECK (id > 0);
ALTER TABLE public.p_child SET (fillfactor = 90);
ALTER TABLE public.p_child DISABLE TRIGGER ALL;
ALTER TABLE public.p_child ENABLE TRIGGER ALL;
CREATE INDEX p_child_note_idx ON public.p_child (note);
COMMENT ON CONSTRAINT p_child_id_check ON public.p_child IS 'positive';
LOCK TABLE public.p_parent IN EXCLUSIVE MODE;
GRANT SELECT ON public.p_child TO PUBLIC;
CREATE VIEW public.p_view AS SELECT id FROM public.p_child;
ALTER TABLE public.p_child RENAME COLUMN note TO note2;
CREATE TABLE public.p_part (id int, k int) PARTITION BY RANGE (k);
CREATE TABLE public.p_part1 (id int, k int);
INSERT INTO public.p_part1 VALUES (1, 5);
ALTER TABLE public.p_part ATTACH PARTITION public.p_part1 FOR VALUES FROM (0) TO (10);
CREATE TABLE public.p_part2 PARTITION OF public.p_part FOR VALUES FROM (10) TO (20);
ALTER TABLE public.p_part DETACH PARTITION public.p_part2;
CREATE TABLE public.p_part3 PARTITION OF public.p_part FOR VALUES FROM (20) TO (30) PARTITION BY RANGE (id);
CREATE TABLE public.p_part31 PARTITION OF public.p_part3 FOR VALUES FROM (0) TO (100);
CREATE INDEX p_part_k_idx ON public.p_part (k);
CLUSTER public.p_parent USING p_parent_pkey;
REINDEX TABLE public.p_parent;
-- x402:no-transaction
ALTER TABLE public.p_child VALIDATE CONSTRAINT p_child_note_check;
ALTER TABLE public.p_child VALIDATE CONSTRAINT p_child_parent_fkey;
CREATE INDEX CONCURRENTLY p_child_note2_idx ON public.p_child (note2);
VACUUM public.p_child;
"""
_WIDER_DOWN = """
DROP VIEW public.p_view;
ALTER TABLE public.p_child DROP CONSTRAINT p_child_parent_fkey;
ALTER TABLE public.p_child DROP COLUMN c_uuid;
DROP INDEX public.p_child_note_idx;
DELETE FROM public.p_child WHERE id > 40;
UPDATE public.p_child SET note2 = 'y' WHERE id < 3;
TRUNCATE public.p_child;
DROP TABLE public.p_child;
DROP TABLE public.p_parent;
CREATE INDEX p_part_id_idx ON public.p_part (id);
DROP TABLE public.p_part, public.p_part2;
"""


def test_wider_statement_set_matches_pg_locks(empty_db, tmp_path):
    (tmp_path / "900_wider.up.sql").write_text(_WIDER_UP)
    (tmp_path / "900_wider.down.sql").write_text(_WIDER_DOWN)
    errors = _prove(empty_db, "up", tmp_path)
    assert errors == [], "\n".join(errors)
    errors = _prove(empty_db, "down", tmp_path)
    assert errors == [], "\n".join(errors)


def test_a_wrong_map_entry_fails_the_proof(empty_db, monkeypatch):
    """The proof can fail: with COMMENT mapped to AccessExclusiveLock (PostgreSQL takes
    ShareUpdateExclusiveLock), every COMMENT of 005 is reported."""
    from pglast import ast

    from x402db.plan import lockmap, locks

    real = lockmap.PREDICT[ast.CommentStmt]

    def wrong(node, cat):
        p = real(node, cat)
        p.locks = {rel: locks.ACCESS_EXCLUSIVE for rel in p.locks}
        return p

    monkeypatch.setitem(lockmap.PREDICT, ast.CommentStmt, wrong)
    errors = _prove(empty_db, "up")
    assert errors and all("COMMENT" in e for e in errors), errors
    assert len(errors) == 10


# ---- a second session: does it wait exactly when the plan says? ----------------------------

_PROBE_TIMEOUT = "300ms"


def _waits(dsn: str, sql: str) -> bool:
    """Whether `sql`, run by another session, waits on a lock (it gives up after a moment)."""
    with psycopg.connect(dsn) as other:
        other.execute(f"SET lock_timeout = '{_PROBE_TIMEOUT}'")
        try:
            other.execute(sql)
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            other.rollback()
    return False


def _quoted(rel: str) -> str:
    return ".".join(f'"{part}"' for part in rel.split(".", 1))


def _second_session(dsn: str, version, st, probes) -> list[str]:
    """With the statement's transaction still open: a reader and a writer of each relation it
    locks wait exactly when the plan's lock modes say; each row probe (another session writing
    one affected row) waits exactly when the plan's row locks say."""
    from x402db.plan.locks import blocks_reads, blocks_writes

    where = f"{version} {st.sql.splitlines()[0][:70]!r}"
    errors = []
    if st.effect == "unknown":
        return errors  # the plan says: assume the worst; any wait is what it promised
    for lock in st.locks:
        if lock.new or lock.relation == ANY:
            continue
        rel = _quoted(lock.relation)
        with psycopg.connect(dsn, autocommit=True) as other:
            kind = other.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (rel,)).fetchone()
        if kind is None:
            continue  # dropped by this statement and not visible... as a name
        reader, writer = (
            (f"SELECT 1 FROM {rel}", f"SELECT nextval('{rel}')")
            if kind[0] == "S"
            else (f"LOCK TABLE {rel} IN ACCESS SHARE MODE", f"LOCK TABLE {rel} IN ROW EXCLUSIVE MODE")
        )
        for what, probe, predicted in (
            ("read", reader, blocks_reads(lock.mode)),
            ("write", writer, blocks_writes(lock.mode)),
        ):
            if _waits(dsn, probe) != predicted:
                errors.append(
                    f"{where}: plan says a {what} of {lock.relation} {'waits' if predicted else 'does not wait'} "
                    f"under {lock.mode}; it {'did not' if predicted else 'did'}"
                )
    for probe, rel, label in probes:
        table = {lock.relation: lock.mode for lock in st.locks}.get(rel)
        predicted = (table is not None and blocks_writes(table)) or any(
            label in r.waits for r in st.row_locks if r.relation == rel
        )
        if _waits(dsn, probe) != predicted:
            errors.append(
                f"{where}: plan says {probe!r} {'waits' if predicted else 'does not wait'} "
                f"(row locks {[(r.relation, r.mode, r.rows) for r in st.row_locks]}); it "
                f"{'did not' if predicted else 'did'}"
            )
    return errors


def _prove_live(dsn: str, setup: str, cases, tmp_path) -> tuple[list, list[str]]:
    """Plan `cases` (statement, probes) as one migration over the database `setup` builds, then
    run each statement in an open transaction: pg_locks must equal the plan, and a second
    session must wait exactly when the plan says. Returns the plan's steps and the errors."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(setup)
    (tmp_path / "900_live.up.sql").write_text("\n".join(sql for sql, _ in cases) + "\n")
    (tmp_path / "900_live.down.sql").write_text("SELECT 1;\n")
    statements = _plan(dsn, "up", tmp_path)
    steps = [st for _v, st in statements if st.source == "file"]
    assert len(steps) == len(cases), [st.sql for st in steps]
    errors = []
    with db.connect(dsn) as conn:
        for st, (_sql, probes) in zip(steps, cases, strict=True):
            with conn.transaction():
                errors += _check("900", st, lockprobe.in_open_transaction(conn, st.sql))
                errors += _second_session(dsn, "900", st, probes)
    return steps, errors


_ROWS_SETUP = """
CREATE TABLE public.r_parent (id int PRIMARY KEY, v text);
CREATE TABLE public.r_child (id int PRIMARY KEY, parent_id int REFERENCES public.r_parent (id), note text);
INSERT INTO public.r_parent SELECT g, g::text FROM generate_series(1, 20) g;
INSERT INTO public.r_child SELECT g, g, NULL FROM generate_series(1, 20) g;
CREATE TABLE public.r_cchild (id int PRIMARY KEY, parent_id int REFERENCES public.r_parent (id) ON DELETE CASCADE, note text);
CREATE TABLE public.r_gchild (id int PRIMARY KEY, cchild_id int REFERENCES public.r_cchild (id) ON DELETE CASCADE, note text);
INSERT INTO public.r_parent VALUES (21, '21');
INSERT INTO public.r_cchild VALUES (21, 21, NULL);
INSERT INTO public.r_gchild VALUES (21, 21, NULL);
ANALYZE public.r_parent, public.r_child;
"""
_UPD_CHILD = ("UPDATE public.r_child SET note = 'b' WHERE id = 1", "public.r_child", "UPDATE")
_DEL_CHILD = ("DELETE FROM public.r_child WHERE id = 1", "public.r_child", "DELETE")
_UPD_PARENT = ("UPDATE public.r_parent SET v = 'b' WHERE id = 1", "public.r_parent", "UPDATE")
_DEL_PARENT = ("DELETE FROM public.r_parent WHERE id = 1", "public.r_parent", "DELETE")
_FK_INSERT = (
    "INSERT INTO public.r_child VALUES (500, 1, 'fk')",
    "public.r_parent",
    "a foreign-key check (INSERT or UPDATE of a row referencing it)",
)
_ROW_CASES = [
    ("UPDATE public.r_child SET note = 'a' WHERE true;", [_UPD_CHILD, _DEL_CHILD, _UPD_PARENT]),
    ("UPDATE public.r_child SET note = 'a' WHERE id = 1;", [_UPD_CHILD]),
    (
        "DELETE FROM public.r_child WHERE id = 20;",
        [("UPDATE public.r_child SET note = 'b' WHERE id = 20", "public.r_child", "UPDATE")],
    ),
    ("SELECT * FROM public.r_child WHERE id = 1 FOR UPDATE;", [_UPD_CHILD]),
    ("SELECT * FROM public.r_child WHERE id = 1 FOR NO KEY UPDATE;", [_UPD_CHILD, _DEL_CHILD]),
    ("SELECT * FROM public.r_child c WHERE c.id = 1 FOR KEY SHARE OF c;", [_UPD_CHILD, _DEL_CHILD]),
    ("SELECT * FROM public.r_parent WHERE id = 1 FOR SHARE;", [_FK_INSERT, _UPD_PARENT]),
    ("SELECT * FROM public.r_child WHERE id = 1;", [_UPD_CHILD, _DEL_CHILD]),
    # Each also inserts a new row, whose foreign-key check takes RowShareLock on r_parent.
    (
        "INSERT INTO public.r_child VALUES (1, 1, 'c'), (300, 3, 'c') ON CONFLICT (id) DO UPDATE SET note = 'c';",
        [_UPD_CHILD],
    ),
    ("INSERT INTO public.r_child VALUES (1, 1, 'c'), (301, 3, 'c') ON CONFLICT DO NOTHING;", [_UPD_CHILD]),
    (
        "INSERT INTO public.r_child VALUES (200, 2, 'n');",
        [
            ("DELETE FROM public.r_parent WHERE id = 2", "public.r_parent", "DELETE"),
            ("UPDATE public.r_parent SET v = 'b' WHERE id = 2", "public.r_parent", "UPDATE"),
            ("INSERT INTO public.r_child VALUES (200, 3, 'dup')", "public.r_child", locks.SAME_KEY_INSERT),
        ],
    ),
    (
        "MERGE INTO public.r_child t USING (VALUES (1)) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET note = 'm';",
        [_UPD_CHILD],
    ),
    ("WITH u AS (UPDATE public.r_child SET note = 'w' WHERE id = 1 RETURNING id) SELECT * FROM u;", [_UPD_CHILD]),
    ("LOCK TABLE public.r_child IN SHARE MODE;", [_UPD_CHILD]),
    (
        "DO $$ BEGIN UPDATE public.r_child SET note = 'd' WHERE id = 2; END $$;",
        [("UPDATE public.r_child SET note = 'b' WHERE id = 2", "public.r_child", "UPDATE")],
    ),
    (
        "SELECT * FROM public.r_parent WHERE id IN (SELECT parent_id FROM public.r_child WHERE id = 3 FOR UPDATE);",
        [
            ("UPDATE public.r_child SET note = 'b' WHERE id = 3", "public.r_child", "UPDATE"),
            ("UPDATE public.r_parent SET v = 'b' WHERE id = 3", "public.r_parent", "UPDATE"),
        ],
    ),
    (
        "UPDATE public.r_parent SET v = 'u' WHERE id IN (SELECT parent_id FROM public.r_child WHERE id = 4 FOR KEY SHARE);",
        [
            ("DELETE FROM public.r_child WHERE id = 4", "public.r_child", "DELETE"),
            ("UPDATE public.r_child SET note = 'b' WHERE id = 4", "public.r_child", "UPDATE"),
        ],
    ),
    # The foreign keys that reference r_parent: r_child's NO ACTION checks (RowShareLock), r_cchild's
    # ON DELETE CASCADE deletes its rows, and r_gchild's, one level further.
    (
        "DELETE FROM public.r_parent WHERE id = 21;",
        [
            ("UPDATE public.r_cchild SET note = 'b' WHERE id = 21", "public.r_cchild", "UPDATE"),
            ("UPDATE public.r_gchild SET note = 'b' WHERE id = 21", "public.r_gchild", "UPDATE"),
        ],
    ),
]


def test_row_locks_make_a_second_session_wait_as_the_plan_says(empty_db, tmp_path):
    steps, errors = _prove_live(empty_db, _ROWS_SETUP, _ROW_CASES, tmp_path)
    assert errors == [], "\n".join(errors)
    backfill = steps[0]
    assert [(r.relation, r.mode, r.rows, r.until) for r in backfill.row_locks] == [
        ("public.r_child", "FOR NO KEY UPDATE", "all", "COMMIT")
    ]
    assert "no writer waits" not in backfill.writers and "until COMMIT" in backfill.writers
    assert (
        locks.TAKERS[locks.SHARE_UPDATE_EXCLUSIVE] not in backfill.writers
    )  # RowExclusiveLock does not conflict with VACUUM
    for st in steps:
        if st.row_locks and any(r.rows != "inserted" for r in st.row_locks):
            assert "no writer waits" not in st.writers, st
    assert steps[3].locks[0].mode == "RowShareLock" and steps[3].row_locks[0].mode == "FOR UPDATE"
    assert steps[7].row_locks == [] and steps[9].row_locks[0].rows == "inserted"
    assert {r.relation: (r.mode, r.rows) for r in steps[-1].row_locks} == {
        "public.r_parent": ("FOR UPDATE", "where"),
        "public.r_child": ("FOR KEY SHARE", "referencing"),
        "public.r_cchild": ("FOR UPDATE", "referencing"),
        "public.r_gchild": ("FOR UPDATE", "referencing"),
    }


_CASCADE_SETUP = """
CREATE TABLE public.c_a (id int PRIMARY KEY);
CREATE TABLE public.c_b (id int PRIMARY KEY, a_id int REFERENCES public.c_a (id));
CREATE TABLE public.c_c (id int PRIMARY KEY, b_id int REFERENCES public.c_b (id));
CREATE TABLE public.c_free (id int PRIMARY KEY);
INSERT INTO public.c_a SELECT g FROM generate_series(1, 10) g;
INSERT INTO public.c_b SELECT g, g FROM generate_series(1, 10) g;
INSERT INTO public.c_c SELECT g, g % 10 + 1 FROM generate_series(1, 1000) g;
CREATE VIEW public.c_view AS SELECT id FROM public.c_a;
CREATE VIEW public.c_view2 AS SELECT id FROM public.c_view;
ALTER TABLE public.c_free ENABLE ROW LEVEL SECURITY;
CREATE POLICY c_free_p ON public.c_free USING (id IN (SELECT id FROM public.c_a));
CREATE SCHEMA c_s;
CREATE TABLE c_s.t (id int);
CREATE VIEW public.c_sview AS SELECT id FROM c_s.t;
CREATE TYPE public.c_mood AS ENUM ('a', 'b');
CREATE TABLE public.c_typed (id int, m public.c_mood);
ANALYZE public.c_a, public.c_b, public.c_c;
"""
_CASCADE_CASES = [
    ("TRUNCATE public.c_a CASCADE;", [("INSERT INTO public.c_c VALUES (5000, 1)", "public.c_c", "INSERT")]),
    ("DROP TABLE public.c_a CASCADE;", []),
    ("DROP SCHEMA c_s CASCADE;", []),
    ("DROP TYPE public.c_mood CASCADE;", []),  # drops the column c_typed.m
]


def test_truncate_and_drop_cascade_reach_every_dependent(empty_db, tmp_path):
    steps, errors = _prove_live(empty_db, _CASCADE_SETUP, _CASCADE_CASES, tmp_path)
    assert errors == [], "\n".join(errors)
    truncate, drop, schema, type_ = steps
    assert [lock.relation for lock in type_.locks] == ["public.c_typed"] and type_.effect == "drop"
    assert {lock.relation: lock.mode for lock in truncate.locks} == {
        f"public.{t}": "AccessExclusiveLock" for t in ("c_a", "c_b", "c_c")
    }
    assert max(lock.rows_estimate or 0 for lock in truncate.locks) == 1000 and "c_c" in truncate.writers
    assert {lock.relation for lock in drop.locks} == {
        "public.c_a",
        "public.c_b",
        "public.c_view",
        "public.c_view2",
        "public.c_free",
    }
    assert {lock.relation for lock in schema.locks} == {"c_s.t", "public.c_sview"}


_CALL_SETUP = """
CREATE TABLE public.f_t (id int PRIMARY KEY, note text);
INSERT INTO public.f_t SELECT g, NULL FROM generate_series(1, 10) g;
CREATE FUNCTION public.f_ddl() RETURNS void LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE public.f_t ADD COLUMN IF NOT EXISTS x int; END $$;
CREATE FUNCTION public.f_text() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE TABLE public.f_trig (id int PRIMARY KEY, note text);
INSERT INTO public.f_trig VALUES (1, NULL);
CREATE FUNCTION public.f_trig_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN LOCK TABLE public.f_t; RETURN NEW; END $$;
CREATE TRIGGER f_trig_tg BEFORE UPDATE ON public.f_trig FOR EACH ROW EXECUTE FUNCTION public.f_trig_fn();
CREATE FUNCTION public.lower(n int) RETURNS int LANGUAGE sql AS $$ SELECT n $$;  -- an overload of a builtin's name
CREATE FUNCTION public.f_len(t text) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT length(t) $$;
CREATE TABLE public.f_checked (id int PRIMARY KEY, note text CHECK (public.f_len(note) < 100));
CREATE TABLE public.f_indexed (id int PRIMARY KEY, note text);
CREATE INDEX f_indexed_len ON public.f_indexed (public.f_len(note));
CREATE VIEW public.f_view AS SELECT public.f_text() AS t;
CREATE VIEW public.f_view2 AS SELECT t FROM public.f_view;
"""
_CALL_CASES = [
    ("SELECT public.f_ddl();", []),
    ("SELECT f_text();", []),
    ("INSERT INTO public.f_t VALUES (100, public.f_text());", []),
    ("UPDATE public.f_t SET note = f_text() WHERE id = 1;", []),
    ("UPDATE public.f_trig SET note = 'x' WHERE id = 1;", []),
    ("ALTER TABLE public.f_t ADD COLUMN y text DEFAULT public.f_text();", []),
    (
        "SELECT now(), pg_catalog.lower('A'), count(*) FROM public.f_t;",
        [("UPDATE public.f_t SET note = 'q' WHERE id = 2", "public.f_t", "UPDATE")],
    ),
    ("CREATE TABLE public.f_new (id int DEFAULT public.f_text()::int);", []),
    ("ALTER TABLE public.f_t ALTER COLUMN note SET DEFAULT public.f_text();", []),
    ("DO $$ BEGIN PERFORM public.f_ddl(); END $$;", []),
    ("DO $$ DECLARE n text; BEGIN n := public.f_text(); END $$;", []),
    ("SELECT * FROM public.f_view2;", []),  # a view's query runs the function
    ("INSERT INTO public.f_checked VALUES (1, 'a');", []),  # its CHECK calls f_len
    ("SELECT lower(1);", []),  # public.lower(int), not pg_catalog.lower(text)
    ("CREATE FUNCTION upper(n int) RETURNS int LANGUAGE sql AS $$ SELECT n $$;", []),
    ("SELECT upper(2);", []),  # created by this very migration
    ("INSERT INTO public.f_indexed VALUES (1, 'a');", []),  # its index expression calls f_len
    (
        "SELECT * FROM ts_stat('SELECT to_tsvector(coalesce(note, ''x'')) FROM public.f_t');",
        [],
    ),  # a builtin that runs SQL text
]


def test_a_call_of_a_non_builtin_function_is_unknown(empty_db, tmp_path):
    steps, errors = _prove_live(empty_db, _CALL_SETUP, _CALL_CASES, tmp_path)
    assert errors == [], "\n".join(errors)
    effects = [st.effect for st in steps]
    assert effects[:6] == ["unknown"] * 6, [(st.sql, st.effect) for st in steps]
    assert "public.f_ddl()" in steps[0].note and "public.f_trig_fn()" in steps[4].note
    assert [lock.relation for lock in steps[0].locks] == [ANY]
    assert effects[6:] == ["scan", "create", "catalog"] + ["unknown"] * 5 + ["create"] + ["unknown"] * 3


_PART_SETUP = """
CREATE TABLE public.pt (id int, k int, note text) PARTITION BY RANGE (k);
CREATE TABLE public.pt1 PARTITION OF public.pt FOR VALUES FROM (0) TO (100);
CREATE TABLE public.pt2 PARTITION OF public.pt FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id);
CREATE TABLE public.pt21 PARTITION OF public.pt2 FOR VALUES FROM (0) TO (1000000);
INSERT INTO public.pt SELECT g, g % 200, 'x' FROM generate_series(1, 2000) g;
ANALYZE public.pt;
"""
_PART_CASES = [
    ("ALTER TABLE public.pt ADD COLUMN z int;", []),
    ("ALTER TABLE public.pt ALTER COLUMN note TYPE int USING length(note);", []),
    ("ALTER TABLE public.pt ALTER COLUMN note SET NOT NULL;", []),
    ("ALTER TABLE ONLY public.pt ALTER COLUMN note SET DEFAULT 0;", []),
    ("ALTER TABLE public.pt ENABLE ROW LEVEL SECURITY;", []),
    ("ALTER TABLE public.pt ADD CONSTRAINT pt_k_check CHECK (k >= 0);", []),
    (
        "UPDATE public.pt SET note = 1 WHERE true;",
        [("UPDATE public.pt SET note = 2 WHERE id = 1", "public.pt", "UPDATE")],
    ),
    ("SELECT count(*) FROM public.pt;", []),
    ("SELECT count(*) FROM ONLY public.pt;", []),
    ("TRUNCATE public.pt;", []),
]


def test_alter_table_on_a_partitioned_table_reaches_its_partitions(empty_db, tmp_path):
    steps, errors = _prove_live(empty_db, _PART_SETUP, _PART_CASES, tmp_path)
    assert errors == [], "\n".join(errors)
    add = {lock.relation: lock for lock in steps[0].locks}
    assert set(add) == {"public.pt", "public.pt1", "public.pt2", "public.pt21"}
    assert add["public.pt"].rows_estimate == 2000 and add["public.pt"].bytes > 0
    assert steps[1].effect == "rewrite" and {lock.relation for lock in steps[1].locks} == set(add)
    assert [lock.relation for lock in steps[3].locks] == [lock.relation for lock in steps[4].locks] == ["public.pt"]


def test_a_wrong_row_conflict_fails_the_proof(empty_db, tmp_path, monkeypatch):
    """The row-lock proof can fail: with FOR KEY SHARE said to conflict with nothing, the plan
    says a DELETE of a row locked FOR KEY SHARE does not wait; the second session's does."""
    monkeypatch.setitem(locks.ROW_CONFLICTS, locks.KEY_SHARE, frozenset())
    cases = [("SELECT * FROM public.r_child c WHERE c.id = 1 FOR KEY SHARE OF c;", [_UPD_CHILD, _DEL_CHILD])]
    _steps, errors = _prove_live(empty_db, _ROWS_SETUP, cases, tmp_path)
    assert len(errors) == 1 and "DELETE FROM public.r_child WHERE id = 1" in errors[0] and "did\n" not in errors[0], (
        errors
    )


# Found by attacking: sequences an INSERT draws from, TRUNCATE ... RESTART IDENTITY, a
# self-referencing ON DELETE CASCADE, CASCADE through a partitioned table and a view on a partition.
_SEQ_SETUP = """
CREATE TABLE public.s_a (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n serial);
INSERT INTO public.s_a DEFAULT VALUES;
CREATE TABLE public.s_b (id int PRIMARY KEY, a_id int REFERENCES public.s_a (id)) PARTITION BY RANGE (id);
CREATE TABLE public.s_b1 PARTITION OF public.s_b FOR VALUES FROM (0) TO (10);
CREATE TABLE public.s_c (id int PRIMARY KEY, a_id int REFERENCES public.s_a (id) ON DELETE CASCADE);
INSERT INTO public.s_c VALUES (1, 1);
CREATE VIEW public.s_v AS SELECT id FROM public.s_b1;
CREATE TABLE public.s_self (id int PRIMARY KEY, up int REFERENCES public.s_self (id) ON DELETE CASCADE);
INSERT INTO public.s_self VALUES (1, NULL), (2, 1), (3, 2);
"""
_SEQ_CASES = [
    ("INSERT INTO public.s_a DEFAULT VALUES;", []),
    (
        "DELETE FROM public.s_self WHERE id = 1;",
        [("UPDATE public.s_self SET up = up WHERE id = 3", "public.s_self", "UPDATE")],
    ),
    ("INSERT INTO public.s_a (n) OVERRIDING SYSTEM VALUE VALUES (7);", []),
    ("TRUNCATE public.s_a RESTART IDENTITY CASCADE;", []),
    ("DROP TABLE public.s_a CASCADE;", []),
    ("DROP TABLE public.s_b CASCADE;", []),
]


def test_sequences_self_references_and_partitioned_cascades(empty_db, tmp_path):
    _steps, errors = _prove_live(empty_db, _SEQ_SETUP, _SEQ_CASES, tmp_path)
    assert errors == [], "\n".join(errors)
