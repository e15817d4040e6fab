"""scripts/migrate.py on a database: status as JSON, --to by number, and a refusal that names the
fix and changes nothing."""

from __future__ import annotations

import json

from tests.utils.migrations import states
from tests.utils.scripts import call_script
from x402db import db


def test_status_json_lists_states(deployed_db):
    r = call_script("migrate.py", "status", "--json", "--dsn", deployed_db)
    assert r.returncode == 0
    assert json.loads(r.stdout) == [
        {"version": "000", "name": "platform_compat", "state": "applied"},
        {"version": "001", "name": "baseline", "state": "applied"},
        {"version": "005", "name": "add_openrouter_integration", "state": "applied"},
    ]


def test_up_to_compares_versions_as_numbers(empty_db):
    r = call_script("migrate.py", "up", "--to", "0", "--json", "--dsn", empty_db)
    assert r.returncode == 0, r.stderr
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["000"]
    r = call_script("migrate.py", "up", "--to", "1", "--json", "--dsn", empty_db)
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["001"]
    assert states(empty_db)["005"] == "pending"
    r = call_script("migrate.py", "up", "--to", "005_add_openrouter_integration", "--json", "--dsn", empty_db)
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["005"]
    r = call_script("migrate.py", "down", "--to", "1", "--json", "--dsn", empty_db)
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["005"]


def test_up_to_below_the_pending_migrations_does_not_claim_up_to_date(supabase_db):
    # On target supabase only 005 applies: `up --to 1` has nothing to do, but 005 is pending.
    r = call_script("migrate.py", "up", "--to", "1", "--dsn", supabase_db)
    assert r.returncode == 0, r.stderr
    assert "up to date" not in r.stdout and "005" in r.stdout and "pending" in r.stdout, r.stdout
    r = call_script("migrate.py", "up", "--to", "0", "--json", "--dsn", supabase_db)
    assert json.loads(r.stdout)["pending"] == ["005"]
    r = call_script("migrate.py", "up", "--dsn", supabase_db)
    r = call_script("migrate.py", "up", "--json", "--dsn", supabase_db)
    assert json.loads(r.stdout) == {"target": "supabase", "changes": [], "pending": []}


def test_a_resource_type_check_under_another_name_refuses_up_and_changes_nothing(supabase_db):
    """005 replaces the type list by its conventional name. A project whose list has another name
    would keep rejecting 'openrouter_instant' behind an 'applied' ledger: refuse instead."""
    with db.connect(supabase_db) as c:
        old = c.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'public.x402_resources'::regclass"
            " AND pg_get_constraintdef(oid) LIKE '%prompt_template%'"
        ).fetchone()[0]
        c.execute(f'ALTER TABLE public.x402_resources RENAME CONSTRAINT "{old}" TO resource_kind_chk')
    plan = call_script("migrate.py", "plan", "--json", "--dsn", supabase_db)
    assert plan.returncode == 1 and json.loads(plan.stdout)["verdict"] == "refused", plan.stderr
    r = call_script("migrate.py", "up", "--dsn", supabase_db)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "RENAME CONSTRAINT" in errors[0] and "Traceback" not in r.stderr
    assert states(supabase_db)["005"] == "pending"
    with db.connect(supabase_db) as c:
        assert c.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
        c.execute(
            "ALTER TABLE public.x402_resources RENAME CONSTRAINT resource_kind_chk TO x402_resources_resource_type_check"
        )
    assert call_script("migrate.py", "up", "--dsn", supabase_db).returncode == 0
    assert states(supabase_db)["005"] == "applied"
