"""A revert you can trust: a failed step says what is committed and the next run converges, an
edited down is refused unless acknowledged (also on ledger rows written before down checksums),
and a repeated down never reverts more than was named."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.utils.db import drop_database, new_database
from tests.utils.migrations import OLD_LEDGER, copy_sql, copy_sql_down, engine, states
from tests.utils.scripts import call_script
from x402db import db
from x402db.errors import BundleError, DriftError
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.migrate.files import BASE
from x402db.migrate.settings import Settings
from x402db.plan.planner import Planner


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
    r = call_script("migrate.py", "status", "--dsn", empty_db)
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
    r = call_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 1
    assert [s for s in json.loads(r.stdout) if s["version"] == "005"][0]["hint"].startswith(
        "its down's drops are committed"
    )
    r = call_script("migrate.py", "up", "--dsn", deployed_db)  # up must not claim "up to date" over dropped objects
    assert r.returncode == 1 and "half-reverted" in r.stderr
    r = call_script("migrate.py", "down", "--dsn", deployed_db)
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
        lambda s: (
            "\n".join(line for line in s.splitlines() if "user_openrouter_integrations (encrypted" not in line) + "\n"
        ),
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
    r = call_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 1 and [s.get("down_edited") for s in json.loads(r.stdout)] == [None, None, True]
    r = call_script("migrate.py", "status", "--dsn", deployed_db)
    assert r.returncode == 1 and "(down edited)" in r.stdout and "--accept-edited-down" in r.stdout
    r = call_script("migrate.py", "down", "--dsn", deployed_db)
    assert r.returncode == 1 and "down script is not the one recorded" in r.stderr
    assert states(deployed_db)["005"] == "applied"
    r = call_script("migrate.py", "down", "--accept-edited-down", "--dsn", deployed_db)
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
    """The down of a row an earlier bundle wrote is not taken on trust from the running checkout's
    own sql/: a 005 down without its keys guard must never drop the stored keys."""
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


def test_a_failure_after_earlier_migrations_committed_says_what_this_run_committed(tmp_path, server, deployed_db):
    # down --to base: 005 reverts and commits, then 001's DROP is refused by a business FK. The
    # error must not read as if the whole command changed nothing (with --json, it is all there is).
    with db.connect(deployed_db) as c:
        c.execute("CREATE TABLE public.refs (r uuid REFERENCES public.x402_resources (id))")
    r = call_script("migrate.py", "down", "--to", "base", "--json", "--dsn", deployed_db)
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


def test_a_repeated_down_never_reverts_more_than_was_named(deployed_any):
    """`down --allow-data-loss`, reviewed for 005 and run again because the first output was
    missed, must not revert 001 and drop x402_resources with its rows."""
    dsn = deployed_any
    with db.connect(dsn) as c:
        resources = c.execute("SELECT count(*) FROM public.x402_resources").fetchone()[0]
    # --allow-data-loss is refused unless it says what it covers.
    r = call_script("migrate.py", "down", "--allow-data-loss", "--dsn", dsn)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--to" in r.stderr, r.stderr
    assert states(dsn)["005"] == "applied"
    for attempt in range(3):  # the reviewed command, then the same command again
        r = call_script("migrate.py", "down", "--to", "1", "--allow-data-loss", "--json", "--dsn", dsn)
        assert r.returncode == 0, r.stderr
        assert [c["version"] for c in json.loads(r.stdout)["changes"]] == (["005"] if attempt == 0 else [])
    # A bare down, repeated, stops above 001_baseline and 000_platform_compat, and says how to go on.
    for _ in range(2):
        r = call_script("migrate.py", "down", "--dsn", dsn)
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


def test_no_migration_is_reverted_while_one_above_it_is_recorded(deployed_db):
    """The path a target changed under a deployed stack took: Pulumi deleted 001's resource, and
    its down dropped x402_resources under an applied 005. Every path reverts through here."""
    e = engine(deployed_db)
    baseline = next(m for m in e.migrations if m.version == "001")
    before = states(deployed_db)
    with e.conn, pytest.raises(BundleError) as err:
        e.revert(baseline, allow_data_loss=True)
    assert "001_baseline down refused, nothing changed" in str(err.value)
    assert "005 above it" in str(err.value)
    assert states(deployed_db) == before
    with db.connect(deployed_db) as conn:
        assert conn.execute("SELECT to_regclass('public.x402_resources') IS NOT NULL").fetchone()[0]
