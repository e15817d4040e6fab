"""The migration engine against a real server: apply, idempotence, exact revert, locking,
atomicity, drift, the data-loss guard and lock timeouts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading

import psycopg
import pytest

from x402db import ROOT, db
from x402db.migrate import ledger, files as migrations
from x402db.migrate.files import BASE
from x402db.migrate.settings import Settings
from x402db.errors import BundleError, DriftError, Refused, UsageError
from x402db.plan.planner import Planner

from tests.utils.db import admin_dsn, drop_database, new_database, pg_dump_schema
from tests.utils.migrations import OLD_LEDGER, PREVIOUS_COMPAT, copy_sql, copy_sql_down, engine, states
from tests.utils.scripts import run_script


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
    r = run_script("migrate.py", "status", "--json", "--dsn", deployed_db)
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
    r = run_script("migrate.py", "down", "--dsn", deployed_db)
    assert r.returncode == 1
    assert "1 row(s) in user_openrouter_integrations" in r.stderr and "--allow-data-loss" in r.stderr
    assert states(deployed_db)["005"] == "applied"
    with db.connect(deployed_db) as c:
        assert c.execute("SELECT count(*) FROM public.user_openrouter_integrations").fetchone()[0] == 1
    r = run_script("migrate.py", "down", "--to", "1", "--allow-data-loss", "--dsn", deployed_db)
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


def test_openrouter_instant_rows_block_down_even_with_allow_data_loss(deployed_db):
    with db.connect(deployed_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('a@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'openrouter_instant', 'r')",
            (uid,),
        )
    e = engine(deployed_db)
    with e.conn:
        with pytest.raises(Refused, match="delete them or convert them"):
            e.down(allow_data_loss=True)
        assert "openrouter_model_id" in _columns(e.conn)
        assert e.conn.execute("SELECT count(*) FROM public.x402_resources").fetchone()[0] == 1


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


def test_cli_usage_and_connection_errors_exit_2():
    r = run_script("migrate.py", "up")
    assert r.returncode == 2 and "DATABASE_URL" in r.stderr
    r = run_script("migrate.py", "up", "--dsn", "postgresql://nobody:hunter2@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" in r.stderr and "hunter2" not in r.stderr
    r = run_script("migrate.py", "sideways")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_status_json_lists_states(deployed_db):
    r = run_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 0
    assert json.loads(r.stdout) == [
        {"version": "000", "name": "platform_compat", "state": "applied"},
        {"version": "001", "name": "baseline", "state": "applied"},
        {"version": "005", "name": "add_openrouter_integration", "state": "applied"},
    ]


def test_baseline_adopts_existing_tables_and_never_drops_them(server, supabase_db):
    # A plain-PostgreSQL target that already has the x402 tables: adopt, don't recreate or drop.
    # The compat layer manages roles, which takes a superuser on plain PostgreSQL.
    e = engine(admin_dsn(server, supabase_db), target="postgres")
    with e.conn:
        assert [(o.version, o.action) for o in e.up()] == [("000", "applied"), ("001", "adopted"), ("005", "applied")]
        e.down(to="000")
        assert e.conn.execute("SELECT to_regclass('public.x402_resources')").fetchone()[0] is not None


# ---- issue 9: a revert you can trust ----------------------------------------------------------


def _rows(conn, n):
    uid = conn.execute("INSERT INTO auth.users (email) VALUES ('m@example.invalid') RETURNING id").fetchone()[0]
    conn.execute(
        "INSERT INTO public.x402_resources (user_id, resource_type, name) SELECT %s, 'proxy', 'r' FROM generate_series(1, %s)",
        (uid, n),
    )


def test_failed_step_of_up_says_what_is_committed_and_up_converges(empty_db):
    e = engine(empty_db)
    with e.conn:
        e.up(to="001")
        _rows(e.conn, 100_000)
    hasty = engine(empty_db, settings=Settings(step_timeout="1ms", retries=0))
    with hasty.conn, pytest.raises(BundleError) as err:
        hasty.up()
    msg = str(err.value)
    assert "rolled back" not in msg and "committed" in msg and "steps-pending" in msg and "run up again" in msg
    assert states(empty_db)["005"] == "steps-pending"
    r = run_script("migrate.py", "status", "--dsn", empty_db)
    assert r.returncode == 1 and "steps-pending" in r.stdout
    e = engine(empty_db)
    with e.conn:
        assert [(o.version, o.action) for o in e.up()] == [("005", "resumed")]
    assert states(empty_db)["005"] == "applied"


def test_failed_step_of_down_says_the_drops_are_committed_and_down_converges(deployed_db):
    with db.connect(deployed_db) as c:
        _rows(c, 100_000)
    hasty = engine(deployed_db, settings=Settings(step_timeout="1ms", retries=0))
    with hasty.conn, pytest.raises(BundleError) as err:
        hasty.down()
    msg = str(err.value)
    assert "rolled back" not in msg and "committed" in msg and "reverting" in msg and "run down again" in msg
    assert states(deployed_db)["005"] == "reverting"
    r = run_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 1
    assert [s for s in json.loads(r.stdout) if s["version"] == "005"][0]["hint"].startswith(
        "its down's drops are committed"
    )
    r = run_script("migrate.py", "up", "--dsn", deployed_db)  # up must not claim "up to date" over dropped objects
    assert r.returncode == 1 and "half-reverted" in r.stderr
    r = run_script("migrate.py", "down", "--dsn", deployed_db)
    assert r.returncode == 0, r.stderr
    assert states(deployed_db)["005"] == "pending"


def test_a_failed_transactional_part_is_reported_as_rolled_back(tmp_path, empty_db):
    broken = copy_sql(tmp_path, lambda s: s.replace("-- x402:no-transaction", "SELECT 1/0;\n-- x402:no-transaction"))
    e = engine(empty_db, broken)
    with e.conn, pytest.raises(BundleError, match="failed and was rolled back, nothing changed: division by zero"):
        e.up()


def test_an_edited_down_is_refused_unless_acknowledged(tmp_path, deployed_db):
    # Deleting a data-loss guard line is exactly the edit that must not go unnoticed.
    edited = copy_sql_down(
        tmp_path,
        lambda s: "\n".join(l for l in s.splitlines() if "user_openrouter_integrations (encrypted" not in l) + "\n",
    )
    with db.connect(deployed_db) as c:
        assert ledger.entries(c)["005"].down_checksum == migrations.find(migrations.load(), "005").down_checksum
    e = engine(deployed_db, edited)
    with e.conn:
        with pytest.raises(DriftError, match="accept-edited-down"):
            e.down()
        assert states(deployed_db)["005"] == "applied"
        assert [o.version for o in e.down(accept_edited_down=True)] == ["005"]


def test_cli_refuses_an_edited_down_without_the_flag(deployed_db):
    with db.connect(deployed_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET down_checksum = repeat('b', 64) WHERE version = '005'")
    # status says so before anyone needs the down, and exits 1 as for any drift.
    r = run_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 1 and [s.get("down_edited") for s in json.loads(r.stdout)] == [None, None, True]
    r = run_script("migrate.py", "status", "--dsn", deployed_db)
    assert r.returncode == 1 and "(down edited)" in r.stdout and "--accept-edited-down" in r.stdout
    r = run_script("migrate.py", "down", "--dsn", deployed_db)
    assert r.returncode == 1 and "down script is not the one recorded" in r.stderr
    assert states(deployed_db)["005"] == "applied"
    r = run_script("migrate.py", "down", "--accept-edited-down", "--dsn", deployed_db)
    assert r.returncode == 0, r.stderr


def test_a_ledger_written_by_the_previous_bundle_is_evolved_in_place(tmp_path, empty_db):
    e = engine(empty_db)
    with e.conn:
        e.up(to="001")
        # The previous bundle's ledger, with its rows (no state, no down checksum).
        rows = e.conn.execute(
            "SELECT version, name, checksum, kind, target, applied_by, execution_ms FROM x402_private.schema_migrations"
        ).fetchall()
        e.conn.execute("DROP SCHEMA x402_private CASCADE")
        e.conn.execute(OLD_LEDGER)
        with e.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO x402_private.schema_migrations (version, name, checksum, kind, target, applied_by, execution_ms) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
    # status reads it as it is, without writing.
    assert states(empty_db) == {"000": "applied", "001": "applied", "005": "pending"}
    e = engine(empty_db)
    with e.conn:
        assert [o.version for o in e.up()] == ["005"]
        entries = ledger.entries(e.conn)
        # The rows that predate down checksums get the one this bundle ships, on this up.
        shipped = migrations.shipped_downs()
        assert {v: (x.state, x.down_checksum) for v, x in entries.items()} == {
            v: ("applied", shipped[v][-1]) for v in ("000", "001", "005")
        }
        with pytest.raises(psycopg.errors.CheckViolation):
            e.conn.execute("UPDATE x402_private.schema_migrations SET state = 'half' WHERE version = '005'")
    # From then on an edited down is refused like any other, unless acknowledged.
    edited = copy_sql(tmp_path)
    p = edited / "001_baseline.down.sql"
    p.write_text(p.read_text() + "\n-- edited\n")
    e = engine(empty_db, edited)
    with e.conn:
        e.down(to="001")  # 005, recorded with its down checksum
        with pytest.raises(DriftError, match="recorded when it was applied"):
            e.down(to="000")
        assert [o.version for o in e.down(to="000", accept_edited_down=True)] == ["001"]


def _forget_down_checksums(dsn):
    """The ledger as an earlier bundle left it: rows with no down checksum."""
    with db.connect(dsn) as c:
        c.execute("UPDATE x402_private.schema_migrations SET down_checksum = NULL")


def _without_keys_guard(tmp_path):
    d = copy_sql(tmp_path)
    p = d / "005_add_openrouter_integration.down.sql"
    text = p.read_text()
    guard = next(line for line in text.splitlines() if "FROM public.user_openrouter_integrations |" in line)
    p.write_text(text.replace(guard + "\n", ""))
    return d


def test_edited_down_on_a_row_without_down_checksum_is_refused_until_recorded(tmp_path, deployed_any):
    """Issue 18 item 1: the down of a row an earlier bundle wrote was compared with the running
    checkout's own sql/, so deleting the keys guard from 005's down dropped the stored keys."""
    dsn = deployed_any
    edited = _without_keys_guard(tmp_path)
    with db.connect(dsn) as c:
        uid = c.execute("INSERT INTO auth.users (id) VALUES (gen_random_uuid()) RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'x')", (uid,)
        )
    _forget_down_checksums(dsn)
    e = engine(dsn, edited)
    with e.conn:
        assert {s.version: s.down_edited for s in e.status()}["005"] is True
        plan = Planner(e).build("down", to="001" if e.target.name == "postgres" else "base")
        assert plan.verdict == "refused" and any("edited down" in r for m in plan.migrations for r in m.reasons)
        with pytest.raises(DriftError, match="ever shipped"):
            e.down(to="001" if e.target.name == "postgres" else "base")
        assert e.conn.execute("SELECT count(*) FROM public.user_openrouter_integrations").fetchone()[0] == 1
        # The next up records the down this bundle ships (from its own list, not from sql/) ...
        assert e.up() == []
        recorded = ledger.entries(e.conn)["005"].down_checksum
        assert (
            recorded == migrations.shipped_downs()["005"][-1] == migrations.find(migrations.load(), "005").down_checksum
        )
        # ... and the edited down stays refused.
        assert {s.version: s.down_edited for s in e.status()}["005"] is True
        with pytest.raises(DriftError, match="recorded when it was applied"):
            e.down(to="001" if e.target.name == "postgres" else "base")
        assert e.conn.execute("SELECT count(*) FROM public.user_openrouter_integrations").fetchone()[0] == 1
    # The shipped down is accepted, before and after the row is recorded.
    _forget_down_checksums(dsn)
    e = engine(dsn)
    with e.conn:
        assert not any(s.down_edited for s in e.status())


def test_shipped_downs_list_every_down_this_repository_shipped():
    """The list is data committed with the package: every down in sql/ and in git's history of sql/ is in it."""
    shipped = migrations.shipped_downs()
    for m in migrations.load():
        assert shipped[m.version][-1] == m.down_checksum, f"add {m.down_checksum} to x402db/migrate/shipped_downs.json"
    git = shutil.which("git")
    if not git or subprocess.run([git, "-C", str(ROOT), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    for path in sorted((ROOT / "sql").glob("*.down.sql")):
        rel = path.relative_to(ROOT).as_posix()
        commits = subprocess.run(
            [git, "-C", str(ROOT), "log", "--format=%H", "--", rel], capture_output=True, text=True, check=True
        ).stdout.split()
        history = {migrations.checksum(path.read_text(encoding="utf-8"))}
        for c in commits:
            text = subprocess.run([git, "-C", str(ROOT), "show", f"{c}:{rel}"], capture_output=True, check=True).stdout
            history.add(migrations.checksum(text.decode("utf-8")))
        # Exactly what was shipped: a checksum added by hand for a down never committed is refused too.
        assert set(shipped[path.name[:3]]) == history, rel


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--to", "7"],
        ["up", "--to", "abc"],
        ["up", "--to", "base"],
        ["up", "--to", "-1"],
        ["down", "--to", "2"],
        ["down", "--to", "005x"],
        ["up", "--lock-timeout", "0"],
        ["up", "--lock-timeout", "2min"],
        ["up", "--lock-timeout", "soon"],
        ["down", "--lock-timeout", "0ms"],
        ["up", "--statement-timeout", "0"],
        ["up", "--retries", "\uff15"],
        ["up", "--retries", "99999999999999999999"],
        ["down", "--retries", "-1"],
    ],
)
def test_bad_versions_and_timeouts_exit_2_before_connecting(args):
    r = run_script("migrate.py", *args, "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["2147483648", "2147483648ms", "2147484s", "35792min", "596524h"])
@pytest.mark.parametrize("command", ["up", "down", "plan"])
def test_statement_timeout_above_postgres_maximum_exits_2_before_connecting(command, value):
    # Issue 18 item 9: it passed the checks, connected, and failed with exit 1.
    r = run_script("migrate.py", command, "--statement-timeout", value, "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "statement_timeout" in r.stderr


def test_statement_timeout_bound_is_postgres_own(empty_db):
    # The bound is exactly the server's: its maximum is accepted by both, one more by neither.
    assert Settings(statement_timeout="2147483647").statement_timeout == "2147483647"
    with db.connect(empty_db) as c:
        c.execute("SET statement_timeout = '2147483647'")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("SET statement_timeout = '2147483648'")
    with pytest.raises(UsageError):
        Settings(statement_timeout="2147483648")


def test_up_to_compares_versions_as_numbers(empty_db):
    r = run_script("migrate.py", "up", "--to", "0", "--json", "--dsn", empty_db)
    assert r.returncode == 0, r.stderr
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["000"]
    r = run_script("migrate.py", "up", "--to", "1", "--json", "--dsn", empty_db)
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["001"]
    assert states(empty_db)["005"] == "pending"
    r = run_script("migrate.py", "up", "--to", "005_add_openrouter_integration", "--json", "--dsn", empty_db)
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["005"]
    r = run_script("migrate.py", "down", "--to", "1", "--json", "--dsn", empty_db)
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["005"]


def test_timeouts_are_bounded_in_engine_and_pulumi_config():
    from x402db.iac import config
    from x402db.errors import UsageError

    for bad in ("0", "0s", "61s", "2min", "1h"):
        with pytest.raises(UsageError):
            Settings(lock_timeout=bad)
    with pytest.raises(UsageError):
        Settings(statement_timeout="0")
    assert Settings(lock_timeout="1min").lock_timeout == "1min"

    class Cfg:
        def __init__(self, **values):
            self.values = values

        def get(self, key):
            return self.values.get(key)

        def get_secret(self, key):
            return None

    for bad in ("0", "90s"):
        with pytest.raises(config.ConfigError, match="lockTimeout must"):
            config.load(Cfg(host="h", lockTimeout=bad))
    assert config.load(Cfg(host="h", lockTimeout="500ms")).lock_timeout == "500ms"


def test_deploy_local_refuses_a_zero_lock_timeout():
    r = run_script("deploy_local.py", "--lock-timeout", "0", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert r.returncode == 2 and "lock_timeout must" in r.stderr


def test_pulumi_provider_check_bounds_lock_timeout():
    from x402db.iac.sql_migration import MigrationProvider

    up, down = "SELECT 1;\n", "SELECT 1;\n"
    props = {
        "dsn": "x",
        "version": "005",
        "name": "n",
        "checksum": migrations.checksum(up),
        "up_sql": up,
        "down_sql": down,
        "target": "postgres",
    }
    assert MigrationProvider().check({}, {**props, "lock_timeout": "1s"}).failures == []
    assert [f.property for f in MigrationProvider().check({}, {**props, "lock_timeout": "0"}).failures] == [
        "lock_timeout"
    ]


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


def test_a_failure_after_earlier_migrations_committed_says_what_this_run_committed(tmp_path, server, deployed_db):
    # down --to base: 005 reverts and commits, then 001's DROP is refused by a business FK. The
    # error must not read as if the whole command changed nothing (with --json, it is all there is).
    with db.connect(deployed_db) as c:
        c.execute("CREATE TABLE public.refs (r uuid REFERENCES public.x402_resources (id))")
    r = run_script("migrate.py", "down", "--to", "base", "--json", "--dsn", deployed_db)
    assert r.returncode == 1 and r.stdout == ""
    assert "005_add_openrouter_integration reverted" in r.stderr and "committed" in r.stderr, r.stderr
    assert "001_baseline down failed and was rolled back" in r.stderr
    assert states(deployed_db) == {"000": "applied", "001": "applied", "005": "pending"}
    # up from empty: 000 and 001 commit, then 005's transactional part fails.
    broken = copy_sql(tmp_path, lambda s: s.replace("-- x402:no-transaction", "SELECT 1/0;\n-- x402:no-transaction"))
    fresh = new_database(server)
    try:
        e = engine(fresh, broken)
        with e.conn, pytest.raises(BundleError) as err:
            e.up()
    finally:
        drop_database(server, fresh)
    assert "000_platform_compat applied, 001_baseline applied" in str(err.value) and "committed" in str(err.value)
    assert "005_add_openrouter_integration failed and was rolled back" in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--to", "\u00b2"],
        ["up", "--to", "\u0665"],
        ["down", "--to", "\u0661"],
        ["up", "--lock-timeout", "\uff11s"],
        ["up", "--statement-timeout", "\u0665s"],
        ["up", "--lock-timeout", "1\u00a0s"],
    ],
)
def test_non_ascii_digits_are_refused_with_exit_2(args):
    # Python's isdigit() and \d take any Unicode digit: '²' crashed with a traceback, '٥' was
    # read as 5, and '１s' passed the check only for PostgreSQL to reject it after connecting.
    r = run_script("migrate.py", *args, "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_up_to_below_the_pending_migrations_does_not_claim_up_to_date(supabase_db):
    # On target supabase only 005 applies: `up --to 1` has nothing to do, but 005 is pending.
    r = run_script("migrate.py", "up", "--to", "1", "--dsn", supabase_db)
    assert r.returncode == 0, r.stderr
    assert "up to date" not in r.stdout and "005" in r.stdout and "pending" in r.stdout, r.stdout
    r = run_script("migrate.py", "up", "--to", "0", "--json", "--dsn", supabase_db)
    assert json.loads(r.stdout)["pending"] == ["005"]
    r = run_script("migrate.py", "up", "--dsn", supabase_db)
    r = run_script("migrate.py", "up", "--json", "--dsn", supabase_db)
    assert json.loads(r.stdout) == {"target": "supabase", "changes": [], "pending": []}


def test_compat_applied_by_the_previous_bundle_is_not_drift(empty_db):
    """A local database deployed before compat recorded what it created: its 000 ledger row holds
    the first text's checksum, which the shipped file declares it supersedes. Not drift: up
    carries on, and nothing is re-run."""
    old_text = PREVIOUS_COMPAT.read_text()
    compat = migrations.find(migrations.load(), "000")
    assert compat.up.supersedes[0] == migrations.checksum(old_text) and compat.up.supersedes_pinned
    with db.connect(empty_db) as c:
        c.execute(OLD_LEDGER)
        c.execute(old_text)
        c.execute(
            "INSERT INTO x402_private.schema_migrations (version, name, checksum, target, applied_by, execution_ms)"
            " VALUES ('000', 'platform_compat', %s, 'postgres', 'previous bundle', 1)",
            (migrations.checksum(old_text),),
        )
    assert states(empty_db) == {"000": "applied", "001": "pending", "005": "pending"}
    r = run_script("migrate.py", "up", "--json", "--dsn", empty_db)
    assert r.returncode == 0, r.stderr
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["001", "005"]
    with db.connect(empty_db) as c:
        assert ledger.entries(c)["000"].checksum == migrations.checksum(old_text)  # what was applied, kept
    # Any other text is still drift.
    with db.connect(empty_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET checksum = repeat('c', 64) WHERE version = '000'")
    assert states(empty_db)["000"] == "drifted"


def test_pulumi_takes_a_superseding_text_into_state_without_touching_the_database():
    from x402db.errors import DriftError
    from x402db.iac.sql_migration import MigrationProvider

    compat = migrations.find(migrations.load(), "000")
    news = {
        "version": "000",
        "name": "platform_compat",
        "checksum": compat.checksum,
        "up_sql": compat.up_text,
        "down_sql": compat.down_text,
        "target": "postgres",
        "dsn": "x",
    }
    olds = {**news, "checksum": compat.up.supersedes[0], "up_sql": PREVIOUS_COMPAT.read_text()}
    d = MigrationProvider().diff("000", olds, news)
    assert d.changes and not d.replaces
    with pytest.raises(DriftError, match="immutable"):
        MigrationProvider().diff("000", {**olds, "checksum": "d" * 64}, news)


def test_a_resource_type_check_under_another_name_refuses_up_and_changes_nothing(supabase_db):
    """005 replaces the type list by its conventional name. A project whose list has another name
    would keep rejecting 'openrouter_instant' behind an 'applied' ledger: refuse instead."""
    with db.connect(supabase_db) as c:
        old = c.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'public.x402_resources'::regclass"
            " AND pg_get_constraintdef(oid) LIKE '%prompt_template%'"
        ).fetchone()[0]
        c.execute(f'ALTER TABLE public.x402_resources RENAME CONSTRAINT "{old}" TO resource_kind_chk')
    plan = run_script("migrate.py", "plan", "--json", "--dsn", supabase_db)
    assert plan.returncode == 1 and json.loads(plan.stdout)["verdict"] == "refused", plan.stderr
    r = run_script("migrate.py", "up", "--dsn", supabase_db)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "RENAME CONSTRAINT" in errors[0] and "Traceback" not in r.stderr
    assert states(supabase_db)["005"] == "pending"
    with db.connect(supabase_db) as c:
        assert c.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
        c.execute(
            "ALTER TABLE public.x402_resources RENAME CONSTRAINT resource_kind_chk TO x402_resources_resource_type_check"
        )
    assert run_script("migrate.py", "up", "--dsn", supabase_db).returncode == 0
    assert states(supabase_db)["005"] == "applied"


def test_005_applied_by_the_previous_text_is_not_drift(deployed_db):
    m = migrations.find(migrations.load(), "005")
    # the text before its precondition, and the text before its supersedes lines were pinned
    assert len(m.up.supersedes) == 2 and m.up.supersedes_pinned
    for earlier in m.up.supersedes:
        with db.connect(deployed_db) as c:
            c.execute("UPDATE x402_private.schema_migrations SET checksum = %s WHERE version = '005'", (earlier,))
        assert states(deployed_db)["005"] == "applied"
        assert run_script("smoke.py", "--read-only", "--dsn", deployed_db).returncode == 0


def test_a_repeated_down_never_reverts_more_than_was_named(deployed_any):
    """Issue 18 item 6: `down --allow-data-loss`, reviewed for 005 and run again because the first
    output was missed, reverted 001 and dropped x402_resources with its rows."""
    dsn = deployed_any
    with db.connect(dsn) as c:
        resources = c.execute("SELECT count(*) FROM public.x402_resources").fetchone()[0]
    # --allow-data-loss is refused unless it says what it covers.
    r = run_script("migrate.py", "down", "--allow-data-loss", "--dsn", dsn)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--to" in r.stderr, r.stderr
    assert states(dsn)["005"] == "applied"
    for attempt in range(3):  # the reviewed command, then the same command again
        r = run_script("migrate.py", "down", "--to", "1", "--allow-data-loss", "--json", "--dsn", dsn)
        assert r.returncode == 0, r.stderr
        assert [c["version"] for c in json.loads(r.stdout)["changes"]] == (["005"] if attempt == 0 else [])
    # A bare down, repeated, stops above 001_baseline and 000_platform_compat, and says how to go on.
    for _ in range(2):
        r = run_script("migrate.py", "down", "--dsn", dsn)
        assert r.returncode == 0 and "nothing to revert" in r.stdout, r.stdout + r.stderr
    if "001" in states(dsn):  # target postgres: it names the next step
        assert "a bare down does not revert 001_baseline; name it explicitly: down --to 000" in r.stderr, r.stderr
    e = engine(dsn)
    with e.conn:
        assert Planner(e).build("down").migrations == []
        assert e.down() == []
        assert e.conn.execute("SELECT count(*) FROM public.x402_resources").fetchone()[0] == resources
        if e.target.name == "postgres":
            assert [o.version for o in e.down(to="000")] == ["001"]  # named: reverted
            assert e.down() == []  # 000 still needs its own --to
            assert [o.version for o in e.down(to=BASE)] == ["000"]
    assert states(dsn)["005"] == "pending"


def test_an_edit_after_supersedes_is_drift_whatever_the_ledger_holds(tmp_path, deployed_any):
    """Issue 18 item 5: once a ledger held the superseded checksum, any later edit of the file that
    kept the directive line was `applied` for status, plan and up alike."""
    dsn = deployed_any
    m005 = migrations.find(migrations.load(), "005")
    earlier = m005.up.supersedes[0]
    with db.connect(dsn) as c:
        c.execute("UPDATE x402_private.schema_migrations SET checksum = %s WHERE version = '005'", (earlier,))
    # Accepted, and shown as accepted, in both outputs.
    r = run_script("migrate.py", "status", "--json", "--dsn", dsn)
    assert r.returncode == 0, r.stderr
    row = next(s for s in json.loads(r.stdout) if s["version"] == "005")
    assert row["state"] == "applied" and row["superseded"] == earlier
    r = run_script("migrate.py", "status", "--dsn", dsn)
    assert r.returncode == 0 and "(superseded)" in r.stdout and earlier[:12] in r.stdout, r.stdout
    # The attack: append to 005 after the directive was written, keeping the directive.
    edited = copy_sql(
        tmp_path,
        lambda s: (
            s + "\nGRANT SELECT ON public.user_openrouter_integrations TO anon;\n"
            "ALTER TABLE public.user_openrouter_integrations DISABLE ROW LEVEL SECURITY;\n"
        ),
    )
    for recorded in (earlier, m005.checksum):  # a superseded ledger and an up-to-date one
        with db.connect(dsn) as c:
            c.execute("UPDATE x402_private.schema_migrations SET checksum = %s WHERE version = '005'", (recorded,))
        e = engine(dsn, edited)
        with e.conn:
            st = {s.version: s for s in e.status()}["005"]
            assert st.state == "drifted" and st.superseded is None
            assert st.stale_supersedes
            with pytest.raises(DriftError, match="drift"):
                e.up()
            assert Planner(e).build("up").verdict == "refused"
            assert not e.conn.execute(
                "SELECT has_table_privilege('anon', 'public.user_openrouter_integrations', 'SELECT')"
            ).fetchone()[0]


def test_supersedes_without_a_pin_is_refused(tmp_path):
    d = copy_sql(tmp_path, lambda s: re.sub(r" pin [0-9a-f]{64}", "", s))
    with pytest.raises(UsageError, match="pin"):
        migrations.load(d)
