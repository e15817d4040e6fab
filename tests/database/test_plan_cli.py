"""`migrate.py plan`: the JSON interface, exit codes, verdicts of guards, drift and preconditions,
and a plan that changes nothing and never waits on a lock."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import psycopg

from tests.utils.db import pg_dump_schema
from tests.utils.migrations import copy_sql
from tests.utils.scripts import call_script, run_script
from x402db import db
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect
from x402db.plan.planner import Planner

_STATEMENT_KEYS = {"phase", "sql", "locks", "effect", "rows_estimate", "bytes", "writers"}
_EFFECTS = {"catalog", "scan", "rewrite", "create", "drop", "unknown"}


def plan(dsn, *args):
    r = call_script("migrate.py", "plan", "--json", "--dsn", dsn, *args)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_plan_on_empty_database_is_the_exact_json_interface_and_changes_nothing(server, empty_db):
    before = pg_dump_schema(server, empty_db)
    code, doc = plan(empty_db)
    assert code == 0
    assert {"direction", "target", "verdict", "migrations"} <= set(doc)
    assert (doc["direction"], doc["target"], doc["verdict"]) == ("up", "postgres", "ready")
    assert [m["version"] for m in doc["migrations"]] == ["000", "001", "005"]
    for m in doc["migrations"]:
        assert {"version", "name", "verdict", "reasons", "statements", "guards"} <= set(m)
        for st in m["statements"]:
            assert _STATEMENT_KEYS <= set(st) and st["effect"] in _EFFECTS
            assert st["phase"] in ("transaction", "no-transaction") and isinstance(st["writers"], str) and st["writers"]
            for lock in st["locks"]:
                assert lock["mode"].endswith("Lock") and lock["relation"]
    # Every statement of the files is there, in the engine's order, split the way the engine splits.
    m005 = migrations.find(migrations.load(), "005")
    statements = doc["migrations"][2]["statements"]
    assert [st["sql"] for st in statements if st["source"] == "file"] == [*m005.up.statements, *m005.up.steps]
    assert [st["phase"] for st in statements][-3:] == ["no-transaction"] * 3
    # The access model's grants run in the migration's own transaction, after its statements.
    grants = [st for st in statements if st["source"] == "access"]
    assert grants[0]["sql"] == 'REVOKE ALL ON "public"."user_openrouter_integrations" FROM "anon"'
    assert {st["phase"] for st in grants} == {"transaction"}
    assert [st["source"] for st in statements] == (
        ["file"] * len(m005.up.statements) + ["access"] * len(grants) + ["file"] * len(m005.up.steps)
    )
    assert pg_dump_schema(server, empty_db) == before
    with db.connect(empty_db) as c:
        assert not ledger.exists(c)


def test_plan_of_005_on_a_live_table_names_the_lock_and_its_size(supabase_db):
    with db.connect(supabase_db) as c:
        c.execute("ANALYZE public.x402_resources")
        rows = c.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = 'public.x402_resources'::regclass"
        ).fetchone()[0]
    code, doc = plan(supabase_db)
    assert code == 0 and doc["target"] == "supabase" and [m["version"] for m in doc["migrations"]] == ["005"]
    add_cols = next(st for st in doc["migrations"][0]["statements"] if "ADD COLUMN IF NOT EXISTS" in st["sql"])
    assert add_cols["locks"] == [
        {
            "relation": "public.x402_resources",
            "mode": "AccessExclusiveLock",
            "rows_estimate": rows,
            "bytes": add_cols["bytes"],
            "new": False,
        }
    ]
    assert add_cols["effect"] == "catalog" and add_cols["rows_estimate"] == rows and add_cols["bytes"] > 0
    assert add_cols["writers"].startswith("blocks reads and writes of public.x402_resources until COMMIT; catalog-only")
    assert "lock_timeout 1s" in add_cols["writers"]
    cic = next(st for st in doc["migrations"][0]["statements"] if st["sql"].startswith("CREATE INDEX CONCURRENTLY"))
    assert (
        cic["phase"] == "no-transaction"
        and cic["effect"] == "scan"
        and cic["writers"].startswith("no writer waits; it reads every row of public.x402_resources")
    )
    assert doc["engine"]["lock_timeout"] == "1s" and doc["engine"]["retries"] == 6


def test_nothing_to_do_exits_0(deployed_db):
    code, doc = plan(deployed_db)
    assert code == 0 and doc["verdict"] == "nothing-to-do" and doc["migrations"] == []
    r = call_script("migrate.py", "plan", "--dsn", deployed_db)
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_down_guards_counts_and_verdicts_with_and_without_allow_data_loss(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'x')", (uid,)
        )
    code, doc = plan(deployed_db, "--down")
    assert code == 1 and doc["verdict"] == "refused" and doc["verdict_with_allow_data_loss"] == "ready"
    [m] = doc["migrations"]
    assert m["version"] == "005" and m["verdict"] == "refused"
    assert [(g["kind"], g["count"], g["verdict"]) for g in m["guards"]] == [
        ("data-loss", 1, "refuse"),
        ("data-loss", 0, "pass"),
        ("always", 0, "pass"),
    ]
    assert any("1 row(s) in user_openrouter_integrations" in r for r in m["reasons"])
    code, doc = plan(deployed_db, "--down", "--allow-data-loss")
    assert code == 0 and doc["verdict"] == "ready" and doc["migrations"][0]["guards"][0]["verdict"] == "allowed"
    # The plan agrees with the engine: down refuses, with the same count.
    r = call_script("migrate.py", "down", "--dsn", deployed_db)
    assert r.returncode == 1 and "1 row(s) in user_openrouter_integrations" in r.stderr


def test_always_guard_refuses_even_with_allow_data_loss(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'openrouter_instant', 'r')",
            (uid,),
        )
    code, doc = plan(deployed_db, "--down", "--allow-data-loss")
    assert code == 1 and doc["verdict"] == "refused" and doc["verdict_with_allow_data_loss"] == "refused"
    assert doc["migrations"][0]["guards"][2] == {
        "kind": "always",
        "count": 1,
        "verdict": "refuse",
        "message": doc["migrations"][0]["guards"][2]["message"],
    }


def test_drift_refuses(tmp_path, deployed_db):
    edited = copy_sql(tmp_path, lambda s: s + "\n-- an innocent-looking edit\n")
    with db.connect(deployed_db) as c:
        e = Engine(c, migrations.load(edited), detect(c))
        down = Planner(e).build("down")
    assert down.verdict == "refused" and "drift" in down.migrations[0].reasons[0]


def test_failing_precondition_refuses(empty_db):
    with db.connect(empty_db) as c:
        c.execute("CREATE TABLE public.ai_models (id uuid PRIMARY KEY)")  # one of the two baseline tables only
    code, doc = plan(empty_db)
    assert code == 1 and doc["verdict"] == "refused"
    m001 = next(m for m in doc["migrations"] if m["version"] == "001")
    assert m001["verdict"] == "refused" and any("only one of public.ai_models" in r for r in m001["reasons"])
    # 000 comes first and would create auth.users: 001's second precondition holds after it.
    assert [r["holds"] for r in m001["requires"]] == [False, True]
    r = call_script("migrate.py", "plan", "--dsn", empty_db)
    assert r.returncode == 1 and "REFUSED" in r.stdout and "only one of public.ai_models" in r.stdout


def test_usage_and_connection_errors_exit_2(empty_db):
    r = call_script("migrate.py", "plan", "--bogus")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = call_script("migrate.py", "plan", "--dsn", "postgresql://nobody:s3cret@127.0.0.1:1/x")
    assert r.returncode == 2 and "s3cret" not in r.stderr and "Traceback" not in r.stderr
    r = call_script("migrate.py", "plan")
    assert r.returncode == 2 and "DATABASE_URL" in r.stderr


def test_plan_never_waits_behind_a_ddl_lock_and_says_so(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
    holder = psycopg.connect(deployed_db)
    try:
        holder.execute("LOCK TABLE public.x402_resources IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        code, doc = plan(deployed_db, "--down")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert elapsed < 10  # the process start dominates; a queued plan would wait until rollback
    assert code == 1 and doc["verdict"] == "refused"
    assert any("another session holds a conflicting lock" in n for n in doc["blocked_reads"])
    assert [g["verdict"] for g in doc["migrations"][0]["guards"]][1:] == ["unknown", "unknown"]
    del uid


def test_plan_holds_nothing_stronger_than_access_share(server, deployed_db):
    """A second session watches the plan's backend while it runs: no lock above AccessShareLock,
    and a writer inserting the whole time is never made to wait."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        with db.connect(deployed_db) as w:
            while not done.is_set():
                seen.update(
                    r[0]
                    for r in w.execute(
                        "SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE a.application_name = 'x402db-migrate' AND l.locktype = 'relation'"
                    )
                )

    t = threading.Thread(target=watch)
    t.start()
    try:
        for args in ((), ("--down",), ("--down", "--to", "base")):
            plan(deployed_db, *args)
    finally:
        done.set()
        t.join()
    assert seen <= {"AccessShareLock"}, seen


def test_left_states_resume_and_refuse_as_the_engine_would(deployed_db):
    with db.connect(deployed_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET state = 'steps-pending' WHERE version = '005'")
    code, doc = plan(deployed_db)
    [m] = doc["migrations"]
    assert code == 0 and m["action"] == "resume"
    assert {st["phase"] for st in m["statements"]} == {"no-transaction"}
    assert [st["sql"] for st in m["statements"] if st["source"] == "file"] == list(
        migrations.find(migrations.load(), "005").up.steps
    )
    # The engine's lock on the referenced table comes right before the step that adds the key.
    engine_lock = [i for i, st in enumerate(m["statements"]) if st["source"] == "engine"]
    assert [m["statements"][i]["sql"] for i in engine_lock] == [
        'LOCK TABLE "public"."ai_models" IN SHARE ROW EXCLUSIVE MODE'
    ]
    assert "ADD CONSTRAINT" in m["statements"][engine_lock[0] + 1]["sql"]
    with db.connect(deployed_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET state = 'reverting' WHERE version = '005'")
    code, doc = plan(deployed_db, "--down")
    [m] = doc["migrations"]
    assert code == 0 and m["action"] == "finish-revert" and m["guards"] == []
    assert [st["sql"] for st in m["statements"]] == list(migrations.find(migrations.load(), "005").down.steps)
    with db.connect(deployed_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET state = 'applied' WHERE version = '005'")
        c.execute("UPDATE x402_private.schema_migrations SET state = 'reverting' WHERE version = '001'")
        c.execute("DELETE FROM x402_private.schema_migrations WHERE version = '005'")
    code, doc = plan(deployed_db)
    assert code == 1 and any("half-reverted" in r for r in doc["migrations"][0]["reasons"])


def test_edited_down_refuses(tmp_path, deployed_db):
    edited = tmp_path / "sql"
    copy_sql(tmp_path)
    down = edited / "005_add_openrouter_integration.down.sql"
    down.write_text("\n".join(line for line in down.read_text().splitlines() if "guard always" not in line) + "\n")
    with db.connect(deployed_db) as c:
        plan_ = Planner(Engine(c, migrations.load(edited), detect(c))).build("down")
    assert plan_.verdict == "refused" and plan_.migrations[0].reasons[0].startswith("edited down:")


def test_to_accepts_only_known_versions(deployed_db):
    r = call_script("migrate.py", "plan", "--to", "7", "--dsn", deployed_db)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    code, doc = plan(deployed_db, "--down", "--to", "1")
    assert code == 0 and [m["version"] for m in doc["migrations"]] == ["005"]


def test_unknown_statements_are_shown_with_the_strongest_lock_never_dropped(tmp_path, empty_db):
    (tmp_path / "900_odd.up.sql").write_text(
        "CREATE TABLE public.odd (id int);\n"
        "ALTER SEQUENCE IF EXISTS public.odd_seq RESTART;\n"
        "DO $$ BEGIN EXECUTE format('ALTER TABLE %I ADD COLUMN c int', 'odd'); END $$;\n"
    )
    (tmp_path / "900_odd.down.sql").write_text("DROP TABLE public.odd;\n")
    with db.connect(empty_db) as c:
        p = Planner(Engine(c, migrations.load(tmp_path), detect(c))).build("up")
    statements = p.migrations[0].statements
    assert len(statements) == 3 and [s.effect for s in statements] == ["create", "unknown", "unknown"]
    assert {(lock.relation, lock.mode) for lock in statements[2].locks} == {("*", "AccessExclusiveLock")}
    assert statements[1].locks and all(lock.mode == "AccessExclusiveLock" for lock in statements[1].locks)
    assert "unknown statement" in statements[2].writers and "format('ALTER TABLE %I" in statements[2].writers


def test_plan_never_waits_behind_a_lock_on_the_ledger(deployed_db):
    """Target detection reads the ledger too: a DDL holding it must not make plan queue."""
    holder = psycopg.connect(deployed_db)
    try:
        holder.execute("LOCK TABLE x402_private.schema_migrations IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        r = run_script("migrate.py", "plan", "--dsn", deployed_db, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert elapsed < 10 and r.returncode == 1, (elapsed, r.stderr)
    assert "would wait on a lock another session holds" in r.stderr and "Traceback" not in r.stderr


def test_plan_lists_the_revoke_from_public_the_engine_runs(supabase_db):
    """The engine revokes a grant to PUBLIC on the model's table before COMMIT, here one that a
    default privilege gives the integrations table at CREATE. The plan did not list it; it must,
    and only when it will run."""
    code, doc = plan(supabase_db)
    assert code == 0 and not [st for st in doc["migrations"][0]["statements"] if "FROM PUBLIC" in st["sql"]]
    with psycopg.connect(supabase_db, autocommit=True) as c:
        c.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC")
    code, doc = plan(supabase_db)
    listed = [
        st["sql"]
        for st in doc["migrations"][0]["statements"]
        if st["source"] == "access" and "FROM PUBLIC" in st["sql"]
    ]
    assert listed == ['REVOKE ALL ON "public"."user_openrouter_integrations" FROM PUBLIC'], listed
    # ... and the engine runs what was listed.
    r = call_script("migrate.py", "up", "--dsn", supabase_db)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(supabase_db) as c:
        assert (
            c.execute(
                "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a WHERE a.grantee = 0"
                " AND c.oid = 'public.user_openrouter_integrations'::regclass"
            ).fetchone()[0]
            == 0
        )


@contextlib.contextmanager
def _validate_fails(dsn: str):
    """A migration's no-transaction VALIDATE fails, for real, after its transaction committed:
    the ledger state a kill during that step leaves (test_engine_kill.py kills one)."""
    with db.connect(dsn) as c:
        c.execute(
            "CREATE FUNCTION public.stop_validate() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF current_query() ILIKE '%VALIDATE CONSTRAINT%' THEN RAISE EXCEPTION 'killed'; END IF; END $$;"
            " CREATE EVENT TRIGGER stop_validate ON ddl_command_start EXECUTE FUNCTION public.stop_validate()"
        )
    try:
        yield
    finally:
        with db.connect(dsn) as c:
            c.execute("DROP EVENT TRIGGER stop_validate; DROP FUNCTION public.stop_validate()")


def _state(dsn: str) -> str:
    with db.connect(dsn) as c:
        return ledger.entries(c)["005"].state


def test_plan_of_a_half_reverted_or_steps_pending_migration_says_what_up_does(deployed_db):
    with _validate_fails(deployed_db):
        assert call_script("migrate.py", "down", "--dsn", deployed_db).returncode != 0
    assert _state(deployed_db) == "reverting"
    up = call_script("migrate.py", "up", "--dsn", deployed_db)
    assert up.returncode == 1 and "half-reverted" in up.stderr, up.stderr
    hint = ledger.HINTS[ledger.State.REVERTING]
    code, doc = plan(deployed_db)
    assert (code, doc["verdict"]) == (up.returncode, "refused"), doc
    assert [(m["version"], m["action"], m["verdict"]) for m in doc["migrations"]] == [("005", "refuse", "refused")]
    assert any("005" in r and hint in r for r in doc["migrations"][0]["reasons"]), doc
    human = call_script("migrate.py", "plan", "--dsn", deployed_db)
    assert human.returncode == up.returncode and hint in human.stdout, human.stdout
    # The last line is the one the Pulumi preview prints.
    assert human.stdout.strip().splitlines()[-1].startswith("plan: up 005 refuse on postgres: refused"), human.stdout
    # Down finishes it, and its plan says so.
    code, doc = plan(deployed_db, "--down")
    assert (code, [(m["version"], m["action"]) for m in doc["migrations"]]) == (0, [("005", "finish-revert")]), doc
    assert call_script("migrate.py", "down", "--dsn", deployed_db).returncode == 0

    # Up's steps cut off: the plan says up resumes them, and up does.
    with _validate_fails(deployed_db):
        assert call_script("migrate.py", "up", "--dsn", deployed_db).returncode != 0
    assert _state(deployed_db) == "steps-pending"
    code, doc = plan(deployed_db)
    assert (code, doc["verdict"]) == (0, "ready"), doc
    assert [(m["version"], m["action"]) for m in doc["migrations"]] == [("005", "resume")], doc
    assert {st["phase"] for st in doc["migrations"][0]["statements"]} == {"no-transaction"}
    assert call_script("migrate.py", "up", "--dsn", deployed_db).returncode == 0
    assert _state(deployed_db) == "applied"
