"""The proof: every statement of every migration in sql/, up and down, on both targets and on
PostgreSQL 15 and 18, runs against a real server, and the locks PostgreSQL actually held (pg_locks)
must equal what the plan predicted, relation by relation. Effects too: `rewrite` means the
table's relfilenode changed, `catalog` that it did not and no sequential scan was counted.

A new migration whose statements the lock map gets wrong fails here."""
from __future__ import annotations

import psycopg
import pytest

from x402db import db, migrations, sqlparse
from x402db.locks import ANY, MODES, simulate
from x402db.plancatalog import LiveCatalog
from x402db.target import detect

from . import lockprobe

_MUST_NOT_RUN_IN_A_TRANSACTION = ("CONCURRENTLY",)


def _phases(m: migrations.Migration, direction: str):
    script = m.up if direction == "up" else m.down
    yield from (("transaction", s) for s in sqlparse.statements(script.transactional, m.label))
    for step in script.steps:
        yield from (("no-transaction", s) for s in sqlparse.statements(step, m.label))


def _predict(dsn: str, chosen, direction: str):
    with db.connect(dsn) as conn:
        cat = LiveCatalog(conn)
        return [(m, phase, s, simulate(s, cat)) for m in chosen for phase, s in _phases(m, direction)]


def _observe(conn, watcher, blocker, phase: str, statement: str) -> lockprobe.Observed:
    # A no-transaction statement that PostgreSQL would also run in a transaction block takes the
    # same locks either way, and the session's own pg_locks is exact; the others are watched.
    if phase == "no-transaction" and any(w in statement.upper() for w in _MUST_NOT_RUN_IN_A_TRANSACTION):
        return lockprobe.watched(conn, watcher, statement, blocker)
    return lockprobe.in_transaction(conn, statement)


def _check(label, phase, stmt, predicted, observed: lockprobe.Observed) -> list[str]:
    where = f"{label} [{phase}] {stmt.sql.splitlines()[0][:70]!r}"
    errors = []
    if predicted.known:
        if predicted.locks != observed.locks:
            errors.append(f"{where}: predicted {predicted.locks}, PostgreSQL held {observed.locks}")
    else:
        for rel, mode in observed.locks.items():
            bound = predicted.locks.get(rel) or predicted.locks.get(ANY)
            if bound is None or MODES.index(mode) > MODES.index(bound):
                errors.append(f"{where}: unknown statement under-predicted {rel}: held {mode}, shown {bound}")
    touched = set(predicted.locks) - {ANY}
    if predicted.effect == "rewrite" and not (observed.rewritten & touched):
        errors.append(f"{where}: predicted rewrite, but no relfilenode changed")
    if predicted.effect != "rewrite" and observed.rewritten:
        errors.append(f"{where}: predicted {predicted.effect}, but {observed.rewritten} got a new relfilenode")
    if predicted.effect == "catalog" and observed.scanned & touched:
        errors.append(f"{where}: predicted catalog-only, but {observed.scanned & touched} was scanned")
    return errors


def _prove(dsn: str, direction: str, to: str | None = None) -> list[str]:
    with db.connect(dsn) as conn:
        target = detect(conn)
        applicable = [m for m in migrations.load() if m.applies_to(target.name)]
    chosen = applicable if direction == "up" else list(reversed(applicable))
    predictions = _predict(dsn, chosen, direction)
    assert predictions, "no statement to prove"
    errors = []
    with db.connect(dsn) as conn, db.connect(dsn) as watcher, db.connect(dsn) as blocker:
        for m, phase, stmt, predicted in predictions:
            observed = _observe(conn, watcher, blocker, phase, stmt.sql)
            errors += _check(m.label, phase, stmt, predicted, observed)
    return errors


def test_every_prediction_matches_pg_locks_postgres_target(empty_db):
    assert _prove(empty_db, "up") == []
    assert _prove(empty_db, "down") == []


def test_every_prediction_matches_pg_locks_supabase_target(supabase_db):
    assert _prove(supabase_db, "up") == []
    assert _prove(supabase_db, "down") == []
