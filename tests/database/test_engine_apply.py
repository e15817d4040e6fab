"""The migration engine against a real server: apply, idempotence, exact revert, locking,
atomicity, drift, the data-loss guard and lock timeouts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from tests.utils.db import admin_dsn, pg_dump_schema
from tests.utils.migrations import copy_sql, engine, states
from tests.utils.scripts import call_script
from x402db import ROOT, db
from x402db.errors import BundleError, DriftError, Refused, UsageError
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.migrate.settings import Settings
from x402db.plan.locks import blocks_writes
from x402db.plan.planner import Planner, require_ready
from x402db.plan.view import print_plan


def test_up_on_empty_database_applies_all_three(empty_db):
    e = engine(empty_db)
    with e.conn:
        done = e.up()
        assert [(o.version, o.action) for o in done] == [("000", "applied"), ("001", "applied"), ("005", "applied")]
        assert e.target.name == "postgres"
        rows = ledger.entries(e.conn)
        assert rows["005"].checksum == migrations.find(migrations.load(), "005").checksum
        assert rows["005"].applied_by and rows["005"].execution_ms >= 0
        # The ledger lives in the private schema, not in the API-exposed public one.
        assert e.conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()[0] is None


def test_up_twice_is_a_noop(deployed_db):
    e = engine(deployed_db)
    with e.conn:
        before = ledger.entries(e.conn)
        assert e.up() == []
        assert ledger.entries(e.conn) == before


def test_up_then_down_restores_exact_schema(server, empty_db):
    e = engine(empty_db)
    with e.conn:
        e.up(to="001")
        before = pg_dump_schema(server, empty_db)
        e.up()
        assert pg_dump_schema(server, empty_db) != before
        assert [o.version for o in e.down()] == ["005"]
        after = pg_dump_schema(server, empty_db)
    assert after == before


def test_supabase_target_applies_only_005(supabase_db):
    e = engine(supabase_db)
    with e.conn:
        assert e.target.name == "supabase"
        assert [o.version for o in e.up()] == ["005"]
        assert set(ledger.entries(e.conn)) == {"005"}


def test_two_concurrent_runs_apply_once(empty_db):
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/migrate.py"), "up", "--json", "--dsn", empty_db],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    applied = [c["version"] for out, _ in outs for c in json.loads(out)["changes"] if c["action"] == "applied"]
    assert sorted(applied) == ["000", "001", "005"]  # each exactly once, across both runs
    assert states(empty_db) == {"000": "applied", "001": "applied", "005": "applied"}


def test_failure_in_the_middle_leaves_nothing(tmp_path, empty_db):
    broken = copy_sql(
        tmp_path,
        lambda s: s.replace(
            "ALTER TABLE public.user_openrouter_integrations ENABLE ROW LEVEL SECURITY;",
            "ALTER TABLE public.user_openrouter_integrations ENABLE ROW LEVEL SECURITY;\nSELECT 1/0;",
        ),
    )
    e = engine(empty_db, broken)
    with e.conn:
        e.up(to="001")
        with pytest.raises(BundleError, match="division by zero"):
            e.up()
        c = e.conn
        assert c.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
        assert c.execute("SELECT to_regproc('public.update_openrouter_integration_updated_at')").fetchone()[0] is None
        cols = {
            r[0]
            for r in c.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'public.x402_resources'::regclass")
        }
        assert "openrouter_model_id" not in cols
        assert "005" not in ledger.entries(c)
    assert states(empty_db)["005"] == "pending"


def test_drift_is_detected_and_up_refuses(tmp_path, deployed_db):
    edited = copy_sql(tmp_path, lambda s: s + "\n-- an innocent-looking edit\n")
    assert states(deployed_db, edited)["005"] == "drifted"
    e = engine(deployed_db, edited)
    with e.conn, pytest.raises(DriftError, match="005_add_openrouter_integration"):
        e.up()
    r = call_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 0 and {s["version"]: s["state"] for s in json.loads(r.stdout)}["005"] == "applied"


def _columns(conn):
    return {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.x402_resources'::regclass AND NOT attisdropped"
        )
    }


def test_down_refuses_with_integration_rows_and_changes_nothing(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'x')", (uid,)
        )
    r = call_script("migrate.py", "down", "--dsn", deployed_db)
    assert r.returncode == 1
    assert "1 row(s) in user_openrouter_integrations" in r.stderr and "--allow-data-loss" in r.stderr
    assert states(deployed_db)["005"] == "applied"
    with db.connect(deployed_db) as c:
        assert c.execute("SELECT count(*) FROM public.user_openrouter_integrations").fetchone()[0] == 1
    r = call_script("migrate.py", "down", "--to", "1", "--allow-data-loss", "--dsn", deployed_db)
    assert r.returncode == 0, r.stderr
    assert states(deployed_db)["005"] == "pending"


def test_down_refuses_when_resources_use_openrouter_columns(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name, openrouter_config) VALUES (%s, 'prompt', 'r', '{}')",
            (uid,),
        )
    e = engine(deployed_db)
    with e.conn:
        with pytest.raises(Refused, match="openrouter_model_id or openrouter_config"):
            e.down()
        assert "openrouter_config" in _columns(e.conn)


def test_a_refused_down_blocks_no_writer_and_names_every_guard_with_rows(deployed_db):
    """openrouter_instant rows refuse the down even with --allow-data-loss. The refusal names the
    stored keys too, and it never waits for a lock a writer holds: a writer's open transaction on
    each guarded table stays in place while the down counts and refuses."""
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'openrouter_instant', 'r')",
            (uid,),
        )
        c.execute(
            "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'x')", (uid,)
        )
    keys = "1 row(s) in user_openrouter_integrations"
    e = engine(deployed_db, retries=0, lock_timeout="100ms")
    with e.conn, db.connect(deployed_db, autocommit=False) as writer:
        # RowExclusiveLock on both tables until rollback: any lock that blocks writers would wait here.
        writer.execute("UPDATE public.x402_resources SET name = 'w'")
        writer.execute("UPDATE public.user_openrouter_integrations SET encrypted_api_key = 'y'")
        for allow in (False, True):
            with pytest.raises(Refused) as err:
                e.down(allow_data_loss=allow)
            msg = str(err.value)
            assert "delete them or convert them" in msg and keys in msg and "lock" not in msg, msg
        # Pulumi's delete refuses through the plan; with data loss allowed it still names the keys.
        with pytest.raises(Refused, match=re.escape(keys)):
            require_ready(e, "down", allow_data_loss=True)
        writer.rollback()
        # The plan says so too: before the engine's LOCK, only the guards count, and nothing blocks a writer.
        plan = Planner(e).build("down")
        shown: list[str] = []
        print_plan(plan, shown.append)
        assert any("stops by the guards' first count, before any lock that blocks writers" in line for line in shown)
        steps = plan.migrations[0].statements
        first = steps[: next(i for i, st in enumerate(steps) if st.source == "engine")]
        assert first and {st.source for st in first} == {"guard"}
        assert not [lk.mode for st in first for lk in st.locks if blocks_writes(lk.mode)]
        assert "openrouter_model_id" in _columns(e.conn)
        assert e.conn.execute("SELECT count(*) FROM public.x402_resources").fetchone()[0] == 1
        assert e.conn.execute("SELECT count(*) FROM public.user_openrouter_integrations").fetchone()[0] == 1


def test_a_down_that_proceeds_counts_again_under_its_lock(deployed_db):
    """A row committed after the first count, while the down waits for its lock, is counted."""
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
    e = engine(deployed_db, retries=0, lock_timeout="30s")
    pid = e.conn.info.backend_pid
    outcome: list[BaseException | object] = []

    def down() -> None:
        try:
            outcome.append(e.down(allow_data_loss=True))
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    with e.conn, db.connect(deployed_db, autocommit=False) as writer, db.connect(deployed_db) as watch:
        # Uncommitted, so the first count cannot see it; its RowExclusiveLock makes the down's LOCK wait.
        writer.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'openrouter_instant', 'r')",
            (uid,),
        )
        t = threading.Thread(target=down)
        t.start()
        deadline = time.monotonic() + 30
        while not watch.execute(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND NOT granted"
            " AND relation = 'public.x402_resources'::regclass)",
            (pid,),
        ).fetchone()[0]:
            assert time.monotonic() < deadline and t.is_alive(), outcome
            time.sleep(0.02)
        writer.commit()
        t.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], Refused), outcome
        assert "1 x402_resources row(s) have resource_type 'openrouter_instant'" in str(outcome[0])
    assert states(deployed_db)["005"] == "applied"


def test_lock_timeout_gives_up_cleanly_then_retries_to_success(empty_db):
    e = engine(empty_db, retries=1, backoff_s=0.1, lock_timeout="200ms")
    with e.conn:
        e.up(to="001")
        with db.connect(empty_db, autocommit=False) as reader:
            reader.execute("SELECT count(*) FROM public.x402_resources")  # holds ACCESS SHARE until rollback
            with pytest.raises(BundleError, match="gave up after 2 attempts"):
                e.up()
            assert "openrouter_model_id" not in _columns(e.conn)
            assert e.conn.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
            reader.rollback()
        patient = engine(empty_db, retries=8, backoff_s=0.2, lock_timeout="200ms")
        with patient.conn, db.connect(empty_db, autocommit=False) as reader:
            reader.execute("SELECT count(*) FROM public.x402_resources")
            threading.Timer(1.0, reader.rollback).start()
            assert [o.version for o in patient.up()] == ["005"]


def test_interrupted_concurrent_index_is_rebuilt(empty_db):
    e = engine(empty_db)
    with e.conn:
        e.up(to="001")
        c = e.conn
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'proxy', 'dup'), (%s, 'proxy', 'dup')",
            (uid, uid),
        )
        # A failed concurrent build leaves an INVALID index under the name 005 wants.
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY idx_x402_resources_openrouter_model ON public.x402_resources (name)"
            )
        e.up()
        valid, definition = c.execute(
            "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = 'public.idx_x402_resources_openrouter_model'::regclass"
        ).fetchone()
        assert valid and "openrouter_model_id" in definition


def test_retry_after_partial_failure_converges(deployed_db):
    # Simulates a crash after the transactional part: objects exist but the ledger has no row.
    with db.connect(deployed_db) as c:
        ledger.forget(c, "005")
        c.execute("ALTER TABLE public.x402_resources DROP CONSTRAINT x402_resources_resource_type_check")
        c.execute(
            "ALTER TABLE public.x402_resources ADD CONSTRAINT x402_resources_resource_type_check CHECK (resource_type IN ('external', 'proxy', 'prompt', 'static', 'prompt_template', 'openrouter_instant')) NOT VALID"
        )
    e = engine(deployed_db)
    with e.conn:
        assert [o.version for o in e.up()] == ["005"]
        assert e.conn.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'x402_resources_resource_type_check'"
        ).fetchone()[0]


def test_baseline_adopts_existing_tables_and_never_drops_them(server, supabase_db):
    # A plain-PostgreSQL target that already has the x402 tables: adopt, don't recreate or drop.
    # The compat layer manages roles, which takes a superuser on plain PostgreSQL.
    e = engine(admin_dsn(server, supabase_db), target="postgres")
    with e.conn:
        assert [(o.version, o.action) for o in e.up()] == [("000", "applied"), ("001", "adopted"), ("005", "applied")]
        e.down(to="000")
        assert e.conn.execute("SELECT to_regclass('public.x402_resources')").fetchone()[0] is not None


def test_statement_timeout_bound_is_postgres_own(empty_db):
    # The bound is exactly the server's: its maximum is accepted by both, one more by neither.
    assert Settings(statement_timeout="2147483647").statement_timeout == "2147483647"
    with db.connect(empty_db) as c:
        c.execute("SET statement_timeout = '2147483647'")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SET statement_timeout = '2147483648'")
    with pytest.raises(UsageError):
        Settings(statement_timeout="2147483648")


@pytest.mark.parametrize("search_path", ["", r"auth,\ extensions"])
def test_interrupted_concurrent_index_is_rebuilt_under_any_search_path(server, supabase_db, search_path):
    # The invalid index lives in the table's schema, whatever the connecting role's search_path:
    # an unqualified DROP missed it, IF NOT EXISTS then skipped the build, and the ledger said
    # 'applied' over an INVALID index.
    with psycopg.connect(admin_dsn(server, supabase_db), autocommit=True) as c:
        c.execute("ALTER TABLE public.x402_resources ADD COLUMN dup_probe int DEFAULT 1")
        with pytest.raises(psycopg.errors.UniqueViolation):  # what an interrupted 005 leaves
            c.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY idx_x402_resources_openrouter_model ON public.x402_resources (dup_probe)"
            )
    e = engine(psycopg.conninfo.make_conninfo(supabase_db, options=f"-csearch_path={search_path}"))
    with e.conn:
        e.up()
        assert {s.version: s.state for s in e.status()} == {"005": "applied"}
        valid, definition = e.conn.execute(
            "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index"
            " WHERE indexrelid = 'public.idx_x402_resources_openrouter_model'::regclass"
        ).fetchone()
    assert valid and "openrouter_model_id" in definition, definition
