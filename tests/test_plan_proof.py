"""The proof: every statement of every migration in sql/, up and down, on both targets and on
PostgreSQL 15 and 18, runs against a real server, and the locks PostgreSQL actually held (pg_locks)
must equal what the plan predicted, relation by relation. Effects too: `rewrite` means the
table's relfilenode changed, `catalog` that it did not and no sequential scan was counted.

A new migration whose statements the lock map gets wrong fails here."""
from __future__ import annotations

import psycopg
import pytest

from x402db import db
from x402db.migrate import ledger, files as migrations, sqlparse
from x402db.migrate.engine import BASE, Engine
from x402db.plan.locks import ANY, MODES
from x402db.plan.planner import Planner
from x402db.migrate.target import detect

from . import lockprobe

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
                ledger.record(conn, version=v, name=ms[v].name, checksum=ms[v].checksum, kind="applied",
                              target=target, applied_by="proof", execution_ms=0)
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
