"""A migration's verify file: full smoke runs it for each applied migration, one check per
statement, in a transaction it rolls back; a statement that raises fails with its own words and
the next still runs; settings made with set_config(..., true) carry on, as PostgREST sets them."""

from __future__ import annotations

import psycopg

from tests.utils.migrations import copy_sql, engine
from x402db import access
from x402db.migrate import files as migrations
from x402db.verify import scripts
from x402db.verify.checks import Checklist

UP = """CREATE TABLE public.verify_probe (id int PRIMARY KEY, owner uuid NOT NULL);
REVOKE ALL ON public.verify_probe FROM anon, authenticated;
"""
DOWN = "DROP TABLE public.verify_probe;\n"
VERIFY = """-- passes: the table exists and is empty of anon's grants
DO $$ BEGIN
  IF has_table_privilege('anon', 'public.verify_probe', 'SELECT') THEN RAISE EXCEPTION 'anon can read verify_probe'; END IF;
END $$;
-- a write that is rolled back with the rest
INSERT INTO public.verify_probe VALUES (1, '00000000-0000-0000-0000-000000000001');
-- fails, in the author's words
DO $$ BEGIN RAISE EXCEPTION 'probe says no'; END $$;
-- still runs after the failure, and acts as PostgREST does
SELECT set_config('role', 'authenticated', true);
DO $$ BEGIN
  IF current_user <> 'authenticated' THEN RAISE EXCEPTION 'the role set above did not carry on'; END IF;
END $$;
"""


def test_each_statement_is_a_check_rolled_back_and_a_failure_does_not_stop_the_rest(empty_db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    (sql_dir / "006_verify_probe.up.sql").write_text(UP)
    (sql_dir / "006_verify_probe.down.sql").write_text(DOWN)
    (sql_dir / "006_verify_probe.verify.sql").write_text(VERIFY)
    e = engine(empty_db, sql_dir)
    with e.conn:
        e.up()
        access.apply(e.conn)
        c = Checklist()
        scripts.run(e.conn, c, migrations.load(sql_dir))
        statuses = [(k.name, k.status) for k in c.checks]
        assert statuses == [
            ("verify.006.1", "passed"),
            ("verify.006.2", "passed"),
            ("verify.006.3", "failed"),
            ("verify.006.4", "passed"),
            ("verify.006.5", "passed"),
        ], c.checks
        assert "006: probe says no" in c.checks[2].detail
        # Nothing of the run is left: the insert was rolled back, and the session is itself again.
        assert e.conn.execute("SELECT count(*) FROM public.verify_probe").fetchone()[0] == 0
        assert e.conn.execute("SELECT current_user = session_user").fetchone()[0]


def test_a_migration_not_applied_is_not_verified(empty_db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    (sql_dir / "006_verify_probe.up.sql").write_text(UP)
    (sql_dir / "006_verify_probe.down.sql").write_text(DOWN)
    (sql_dir / "006_verify_probe.verify.sql").write_text("DO $$ BEGIN RAISE EXCEPTION 'ran'; END $$;\n")
    e = engine(empty_db, sql_dir)
    with e.conn:
        e.up(to="005")
        c = Checklist()
        scripts.run(e.conn, c, migrations.load(sql_dir))
        assert c.checks == []


def test_a_verify_statement_never_waits_behind_a_lock(empty_db, tmp_path):
    sql_dir = copy_sql(tmp_path)
    (sql_dir / "006_verify_probe.up.sql").write_text(UP)
    (sql_dir / "006_verify_probe.down.sql").write_text(DOWN)
    # The first statement lifts the bounds; they are set again before the next one.
    (sql_dir / "006_verify_probe.verify.sql").write_text(
        "SET lock_timeout = 0;\nSELECT set_config('statement_timeout', '0', true);\nSELECT count(*) FROM public.verify_probe;\n"
    )
    e = engine(empty_db, sql_dir)
    with e.conn, psycopg.connect(empty_db) as holder:
        e.up()
        holder.execute("LOCK TABLE public.verify_probe IN ACCESS EXCLUSIVE MODE")
        c = Checklist()
        scripts.run(e.conn, c, migrations.load(sql_dir))
        assert [k.status for k in c.checks] == ["passed", "passed", "failed"], c.checks
        assert "lock timeout" in c.checks[2].detail, c.checks
