"""One lock order with the application: a revert waits for the application's model delete
instead of deadlocking with it, the order comes from the database's own foreign keys (on a
shape the bundle did not write, cycles included), and a deadlock the engine loses anyway is
retried as a lock timeout is."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.utils.migrations import copy_sql_down, engine, states
from x402db import db
from x402db.migrate import ledger, lock_order
from x402db.migrate.settings import Settings

MODEL = "30000000-0000-4000-8000-000000000001"


def _wait_for_lock(dsn: str, pid: int, what: str) -> None:
    with db.connect(dsn) as c:
        deadline = time.monotonic() + 20
        while not c.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock')", (pid,)
        ).fetchone()[0]:
            assert time.monotonic() < deadline, f"{what} never waited on a lock"
            time.sleep(0.02)


def test_a_revert_waits_for_the_apps_model_delete_instead_of_deadlocking(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('d@example.invalid') RETURNING id").fetchone()[0]
        c.execute("INSERT INTO public.ai_models (id, slug, display_name) VALUES (%s, 'm/1', 'M')", (MODEL,))
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name, openrouter_model_id)"
            " VALUES (%s, 'proxy', 'r', %s)",
            (uid, MODEL),
        )
    holder = db.connect(deployed_db, autocommit=False)  # the app, mid-transaction on the model's row
    app = db.connect(deployed_db)
    revert = engine(deployed_db, settings=Settings(lock_timeout="20s"))
    try:
        holder.execute("SELECT FROM public.ai_models WHERE id = %s FOR UPDATE", (MODEL,))
        with ThreadPoolExecutor(2) as pool:
            delete = pool.submit(app.execute, "DELETE FROM public.ai_models WHERE id = %s", (MODEL,))
            _wait_for_lock(deployed_db, app.info.backend_pid, "the app's delete")
            down = pool.submit(revert.down, allow_data_loss=True)
            _wait_for_lock(deployed_db, revert.conn.info.backend_pid, "the revert")
            # Past deadlock_timeout (1s): the revert's own deadlock check has run and found no
            # cycle, so a cycle closed now is the app's to break, as in production.
            time.sleep(1.5)
            holder.commit()
            delete.result()  # a 40P01 here is the deadlock
            assert [(o.version, o.action) for o in down.result() if o] == [("005", "reverted")]
    finally:
        for c in (holder, app, revert.conn):
            c.close()
    with db.connect(deployed_db) as c:
        assert c.execute("SELECT count(*) FROM public.ai_models WHERE id = %s", (MODEL,)).fetchone()[0] == 0
    assert states(deployed_db)["005"] == "pending"


def test_a_revert_lets_the_apps_resource_write_finish_its_foreign_key_check(deployed_db):
    """The other direction: a write to x402_resources locks it first and ai_models last (its
    foreign key check). The revert's lock on ai_models must not stop that check."""
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('w@example.invalid') RETURNING id").fetchone()[0]
        c.execute("INSERT INTO public.ai_models (id, slug, display_name) VALUES (%s, 'm/1', 'M')", (MODEL,))
        rid = c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'proxy', 'r') RETURNING id",
            (uid,),
        ).fetchone()[0]
    holder = db.connect(deployed_db, autocommit=False)
    app = db.connect(deployed_db)
    revert = engine(deployed_db, settings=Settings(lock_timeout="20s"))
    try:
        holder.execute("SELECT FROM public.x402_resources WHERE id = %s FOR UPDATE", (rid,))
        with ThreadPoolExecutor(2) as pool:
            write = pool.submit(
                app.execute, "UPDATE public.x402_resources SET openrouter_model_id = %s WHERE id = %s", (MODEL, rid)
            )
            _wait_for_lock(deployed_db, app.info.backend_pid, "the app's write")
            down = pool.submit(revert.down, allow_data_loss=True)
            _wait_for_lock(deployed_db, revert.conn.info.backend_pid, "the revert")
            time.sleep(1.5)
            holder.commit()
            write.result()
            assert [(o.version, o.action) for o in down.result() if o] == [("005", "reverted")]
    finally:
        for c in (holder, app, revert.conn):
            c.close()
    assert states(deployed_db)["005"] == "pending"


def test_the_step_that_adds_005s_key_waits_for_the_apps_model_delete_holding_nothing(deployed_db):
    """A run stopped after the index build resumes at the step that adds the key. The app's
    transaction deleted a model (ai_models first) and writes a resource next: the step must wait
    for ai_models while holding nothing on x402_resources, or the two close a cycle."""
    fk = "x402_resources_openrouter_model_id_fkey"
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('s@example.invalid') RETURNING id").fetchone()[0]
        c.execute("INSERT INTO public.ai_models (id, slug, display_name) VALUES (%s, 'm/1', 'M')", (MODEL,))
        rid = c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'proxy', 'r') RETURNING id",
            (uid,),
        ).fetchone()[0]
        c.execute(f"ALTER TABLE public.x402_resources DROP CONSTRAINT {fk}")
        ledger.set_state(c, "005", ledger.State.STEPS_PENDING)
    app = db.connect(deployed_db, autocommit=False)
    resume = engine(deployed_db, settings=Settings(lock_timeout="20s"))
    try:
        app.execute("DELETE FROM public.ai_models WHERE id = %s", (MODEL,))
        with ThreadPoolExecutor(1) as pool:
            up = pool.submit(resume.up)
            _wait_for_lock(deployed_db, resume.conn.info.backend_pid, "the step")
            # Past deadlock_timeout (1s): the step's own deadlock check has run, so a cycle
            # closed now is the app's to break, as in production.
            time.sleep(1.5)
            app.execute("UPDATE public.x402_resources SET name = 'r2' WHERE id = %s", (rid,))  # 40P01: the cycle
            app.commit()
            assert [(o.version, o.action) for o in up.result() if o] == [("005", "resumed")]
    finally:
        app.close()
        resume.conn.close()
    with db.connect(deployed_db) as c:
        assert c.execute("SELECT count(*) FROM pg_constraint WHERE conname = %s", (fk,)).fetchone()[0] == 1
    assert states(deployed_db)["005"] == "applied"


def test_a_deadlock_the_engine_loses_is_retried_whole(tmp_path, deployed_db):
    edited = copy_sql_down(
        tmp_path,
        lambda s: s.replace(
            "DROP INDEX IF EXISTS", "LOCK TABLE public.probe IN ACCESS EXCLUSIVE MODE;\nDROP INDEX IF EXISTS", 1
        ),
    )
    with db.connect(deployed_db) as c:
        c.execute("CREATE TABLE public.probe (id int)")
    other = db.connect(deployed_db, autocommit=False)
    logged: list[str] = []
    revert = engine(deployed_db, edited, settings=Settings(lock_timeout="20s", backoff_s=0.1))
    revert.log = logged.append
    try:
        # The other session never runs the deadlock check first: the engine is the one to lose.
        other.execute("SET LOCAL deadlock_timeout = '60s'")
        other.execute("LOCK TABLE public.probe IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(2) as pool:
            down = pool.submit(revert.down, allow_data_loss=True, accept_edited_down=True)
            _wait_for_lock(deployed_db, revert.conn.info.backend_pid, "the revert")
            # The engine holds x402_resources for its guards and waits for probe: close the cycle.
            closing = pool.submit(other.execute, "LOCK TABLE public.x402_resources IN ROW EXCLUSIVE MODE")
            closing.result()
            other.commit()
            assert [(o.version, o.action) for o in down.result() if o] == [("005", "reverted")]
    finally:
        other.close()
        revert.conn.close()
    assert any("deadlock" in line and "retrying" in line for line in logged), logged
    assert states(deployed_db, edited)["005"] == "pending"


SHAPE = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY);
CREATE TABLE shop.categories (id int PRIMARY KEY, parent_id int REFERENCES shop.categories (id));
CREATE TABLE shop.products (id int PRIMARY KEY, category_id int REFERENCES shop.categories (id));
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int REFERENCES shop.customers (id));
CREATE TABLE shop.order_lines (order_id int REFERENCES shop.orders (id), product_id int REFERENCES shop.products (id));
CREATE TABLE shop.left_hand (id int PRIMARY KEY, right_id int);
CREATE TABLE shop.right_hand (id int PRIMARY KEY, left_id int REFERENCES shop.left_hand (id));
ALTER TABLE shop.left_hand ADD FOREIGN KEY (right_id) REFERENCES shop.right_hand (id);
"""


def test_the_order_is_the_databases_own_foreign_keys_and_a_cycle_keeps_the_given_order(empty_db):
    with db.connect(empty_db) as c:
        c.execute(SHAPE)
        # order_lines reaches customers only through orders, which is not asked for.
        assert lock_order.order(c, ["shop.order_lines", "shop.categories", "shop.customers", "shop.products"]) == [
            ("shop", "categories"),
            ("shop", "customers"),
            ("shop", "products"),
            ("shop", "order_lines"),
        ]
        for given in (["shop.right_hand", "shop.left_hand"], ["shop.left_hand", "shop.right_hand"]):
            assert lock_order.order(c, given) == [tuple(t.split(".")) for t in given]
        assert lock_order.order(c, ["shop.order_lines", "shop.nowhere", "shop.orders", "shop.orders"]) == [
            ("shop", "orders"),
            ("shop", "order_lines"),
        ]


def test_the_revert_of_005_locks_the_referenced_tables_first(deployed_db):
    e = engine(deployed_db)
    with e.conn:
        m = next(m for m in e.migrations if m.version == "005")
        assert lock_order.tables_to_lock(e.conn, m.down) == [
            ("public", "ai_models"),
            ("auth", "users"),
            ("public", "user_openrouter_integrations"),
            ("public", "x402_resources"),
        ]
        # The up's transaction adds no key to ai_models any more: a step adds it once its index
        # exists, and the engine locks ai_models for that step, read from the step's own SQL.
        assert lock_order.tables_to_lock(e.conn, m.up) == [("auth", "users")]
        assert [lock_order.step_tables_to_lock(e.conn, s) for s in m.up.steps] == [
            [],
            [("public", "ai_models")],
            [],
            [],
        ]
        assert not any("LOCK TABLE" in s for s in m.up.steps)  # the file does not carry the order
