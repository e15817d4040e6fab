"""005's foreign key to ai_models is never in force without the index that serves it: every
DELETE FROM ai_models would otherwise read all of x402_resources. The concurrent build is held
by an open snapshot (a second session's REPEATABLE READ transaction), so the moment between the
two is observed, not slept into. A database left steps-pending by the previous text, which added
the key first, converges under the new one; and the plan says what a key without its index costs."""

from __future__ import annotations

import threading
import time

import pytest

from tests.utils.db import deploy, drop_database, new_database, pg_dump_schema
from tests.utils.migrations import copy_sql, engine
from tests.utils.paths import FIXTURES
from x402db import db
from x402db.errors import BundleError
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.plan.planner import Planner

PREVIOUS_005 = FIXTURES / "previous_bundle" / "005_add_openrouter_integration.up.sql"
LOCKED_IN_STEP_005 = FIXTURES / "previous_bundle" / "005_add_openrouter_integration.locked_in_step.up.sql"
INDEX = "public.idx_x402_resources_openrouter_model"
# The engine's concurrent build, waiting for a transaction with an older snapshot to end.
BUILD_WAITING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND query LIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock' AND wait_event = 'virtualxid'"
)
FK = (
    "SELECT convalidated FROM pg_constraint WHERE contype = 'f'"
    " AND conrelid = 'public.x402_resources'::regclass AND confrelid = 'public.ai_models'::regclass"
)
INDEX_VALID = f"SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{INDEX}')"
COSTS = "each DELETE from public.ai_models"


def _wait_for(conn, query: str, thread: threading.Thread, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(query).fetchone()
        if row:
            return row[0]
        if not thread.is_alive():
            pytest.fail("up finished before its concurrent index build waited")
        time.sleep(0.01)
    pytest.fail("the concurrent index build never waited for the open snapshot")


def _up_in_background(dsn: str, sql_dir=None) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        e = engine(dsn, sql_dir)
        try:
            with e.conn:
                e.up()
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _at_001_with_rows(dsn: str) -> None:
    e = engine(dsn)
    with e.conn:
        e.up(to="001")
        c = e.conn
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('fk@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name)"
            " SELECT %s, 'proxy', 'r' || g FROM generate_series(1, 1000) g",
            (uid,),
        )


def test_no_foreign_key_until_its_index_is_built(empty_db):
    _at_001_with_rows(empty_db)
    with db.connect(empty_db) as watch, db.connect(empty_db, autocommit=False) as snapshot:
        snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT 1")  # takes the snapshot; no lock on any table the up needs
        thread, errors = _up_in_background(empty_db)
        try:
            _wait_for(watch, BUILD_WAITING, thread)
            assert watch.execute(FK).fetchone() is None  # no key in force while its index is being built
            assert ledger.entries(watch)["005"].state == ledger.State.STEPS_PENDING
        finally:
            snapshot.rollback()
            thread.join(120)
    assert not errors, errors
    with db.connect(empty_db) as c:
        assert c.execute(FK).fetchone() == (True,)
        assert c.execute(INDEX_VALID).fetchone() == (True,)
        assert ledger.entries(c)["005"].state == ledger.State.APPLIED


@pytest.mark.parametrize(
    "previous, key_first",
    [(PREVIOUS_005, True), (LOCKED_IN_STEP_005, False)],
    ids=["key-in-transaction", "lock-in-step"],
)
def test_steps_pending_left_by_the_previous_text_converges(server, tmp_path, empty_db, previous, key_first):
    """Two earlier texts. One added the key in its transaction and built the index last: a run
    of it stopped in the build leaves steps-pending, the key, and an INVALID index. The other
    locked ai_models in its own step: stopped in the build, it leaves no key. `up` with the current
    text (which supersedes both) finishes, and the schema is a clean deploy's."""
    old = previous.read_text()
    assert migrations.checksum(old) in migrations.find(migrations.load(), "005").up.supersedes
    old_sql = copy_sql(tmp_path, lambda _current: old)
    _at_001_with_rows(empty_db)
    with db.connect(empty_db) as watch, db.connect(empty_db, autocommit=False) as snapshot:
        snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT 1")
        thread, errors = _up_in_background(empty_db, old_sql)
        try:
            pid = _wait_for(watch, BUILD_WAITING, thread)
            assert watch.execute(FK).fetchone() == ((True,) if key_first else None)
            watch.execute("SELECT pg_cancel_backend(%s)", (pid,))
            thread.join(60)
        finally:
            snapshot.rollback()
            thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], BundleError), errors
    with db.connect(empty_db) as c:
        entry = ledger.entries(c)["005"]
        assert (entry.state, entry.checksum) == (ledger.State.STEPS_PENDING, migrations.checksum(old))
        assert c.execute(INDEX_VALID).fetchone() == (False,)
    e = engine(empty_db)
    with e.conn:
        assert {s.version: s.state for s in e.status()}["005"] == ledger.State.STEPS_PENDING
        assert [(o.version, o.action) for o in e.up()] == [("005", "resumed")]
        assert e.conn.execute(FK).fetchone() == (True,)
        assert e.conn.execute(INDEX_VALID).fetchone() == (True,)
        entry = ledger.entries(e.conn)["005"]
        assert (entry.state, entry.checksum) == (ledger.State.APPLIED, migrations.checksum(old))
    clean = new_database(server)
    try:
        deploy(clean)
        assert pg_dump_schema(server, empty_db) == pg_dump_schema(server, clean)
    finally:
        drop_database(server, clean)


def _costs(dsn: str, sql_dir=None) -> list[tuple[str, str]]:
    """(phase, statement) of each planned statement whose writers line says a foreign key will
    make ai_models' deletes read all of x402_resources."""
    e = engine(dsn, sql_dir)
    with e.conn:
        plan = Planner(e).build("up")
    return [(st.phase, st.sql) for m in plan.migrations for st in m.statements if COSTS in st.writers]


def test_the_plan_says_what_a_key_without_its_index_costs(tmp_path, empty_db):
    _at_001_with_rows(empty_db)
    old_sql = copy_sql(tmp_path, lambda _current: PREVIOUS_005.read_text())
    # The previous text: the key commits with the transaction, the index comes after it.
    (found,) = _costs(empty_db, old_sql)
    assert found[0] == "transaction" and "x402_resources_openrouter_model_id_fkey" in found[1]
    # The current text builds the index first: its own earlier statement serves the key.
    assert _costs(empty_db) == []
    # An index already in the catalog serves it too.
    with db.connect(empty_db) as c:
        c.execute("ALTER TABLE public.x402_resources ADD COLUMN openrouter_model_id uuid")
        c.execute(f"CREATE INDEX {INDEX.split('.')[1]} ON public.x402_resources (openrouter_model_id)")
    assert _costs(empty_db, old_sql) == []
