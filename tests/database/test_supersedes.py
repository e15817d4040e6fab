"""A migration text that supersedes an earlier one: a database the earlier text deployed is not
drift, and any edit after the directive is."""

from __future__ import annotations

import json

import pytest

from tests.utils.migrations import OLD_LEDGER, PREVIOUS_COMPAT, copy_sql, engine, states
from tests.utils.scripts import call_script
from x402db import db
from x402db.errors import DriftError
from x402db.migrate import files as migrations
from x402db.migrate import ledger
from x402db.plan.planner import Planner


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
    r = call_script("migrate.py", "up", "--json", "--dsn", empty_db)
    assert r.returncode == 0, r.stderr
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["001", "005"]
    with db.connect(empty_db) as c:
        assert ledger.entries(c)["000"].checksum == migrations.checksum(old_text)  # what was applied, kept
    # Any other text is still drift.
    with db.connect(empty_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET checksum = repeat('c', 64) WHERE version = '000'")
    assert states(empty_db)["000"] == "drifted"


def test_005_applied_by_the_previous_text_is_not_drift(deployed_db):
    m = migrations.find(migrations.load(), "005")
    # the text before its precondition, the text before its supersedes lines were pinned, the
    # text that added the foreign key before building its index, and the one that locked
    # ai_models in the key's own step
    assert len(m.up.supersedes) == 4 and m.up.supersedes_pinned
    for earlier in m.up.supersedes:
        with db.connect(deployed_db) as c:
            c.execute("UPDATE x402_private.schema_migrations SET checksum = %s WHERE version = '005'", (earlier,))
        assert states(deployed_db)["005"] == "applied"
        assert call_script("smoke.py", "--read-only", "--dsn", deployed_db).returncode == 0


def test_an_edit_after_supersedes_is_drift_whatever_the_ledger_holds(tmp_path, deployed_any):
    """Once a ledger holds the superseded checksum, a later edit of the file that keeps the
    directive line is drift for status, plan and up alike, not `applied`."""
    dsn = deployed_any
    m005 = migrations.find(migrations.load(), "005")
    earlier = m005.up.supersedes[0]
    with db.connect(dsn) as c:
        c.execute("UPDATE x402_private.schema_migrations SET checksum = %s WHERE version = '005'", (earlier,))
    # Accepted, and shown as accepted, in both outputs.
    r = call_script("migrate.py", "status", "--json", "--dsn", dsn)
    assert r.returncode == 0, r.stderr
    row = next(s for s in json.loads(r.stdout) if s["version"] == "005")
    assert row["state"] == "applied" and row["superseded"] == earlier
    r = call_script("migrate.py", "status", "--dsn", dsn)
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
