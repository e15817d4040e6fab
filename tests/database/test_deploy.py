"""`make deploy`'s script against DATABASE_URL: first deploy, idempotent second deploy, the
capturable DATABASE_URL line, and the read-only smoke default on a Supabase-shaped database."""

from __future__ import annotations

import json

import psycopg

from tests.utils.scripts import run_script


def test_deploy_then_redeploy(empty_db):
    r = run_script("deploy_local.py", env={"DATABASE_URL": empty_db})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == f"DATABASE_URL={empty_db}"
    assert "000_platform_compat (applied)" in r.stdout and "smoke:" in r.stdout
    # The plan's one-line summary comes before anything is applied.
    [summary] = [line for line in r.stderr.splitlines() if line.startswith("plan: ")]
    assert summary.startswith("plan: up 000 apply, 001 apply, 005 apply on postgres: ready; strongest locks: ")
    assert "public.x402_resources AccessExclusiveLock" in summary
    assert r.stderr.index(summary) < r.stderr.index("000_platform_compat: applying")
    again = run_script("deploy_local.py", env={"DATABASE_URL": empty_db})
    assert again.returncode == 0
    assert "plan: up on postgres: nothing to do" in again.stderr
    assert "nothing to apply, already up to date" in again.stdout and "grants:     already in place" in again.stdout


def test_deploy_json_on_supabase_runs_catalog_smoke_only(supabase_db):
    r = run_script("deploy_local.py", "--json", env={"DATABASE_URL": supabase_db})
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and doc["target"] == "supabase"
    assert [m["version"] for m in doc["migrations"]] == ["005"]
    names = {c["name"] for c in doc["smoke"]["checks"]}
    assert "policy.no_extra" in names and not any(n.startswith("rls.") for n in names)
    full = json.loads(run_script("deploy_local.py", "--json", "--full-smoke", env={"DATABASE_URL": supabase_db}).stdout)
    assert any(c["name"] == "rls.select_own_only" and c["passed"] for c in full["smoke"]["checks"])


def test_deploy_prints_a_url_without_any_credential(server, empty_db, monkeypatch):
    """With a password (and an sslpassword) in DATABASE_URL, the final line (and --json) is a
    URL, never key=value carrying the sslpassword: no credential, and
    it still connects for the user who ran it (the local server's passfile is in the URL)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    password = server.password
    assert password, "the test server requires a password"
    params = conninfo_to_dict(empty_db)
    with_pw = (
        f"postgresql://{params['user']}:{quote(password, safe='')}@127.0.0.1:{params['port']}/{params['dbname']}"
        f"?sslpassword=ssl-pw-marker-77&sslmode=disable"
    )
    r = run_script("deploy_local.py", env={"DATABASE_URL": with_pw})
    assert r.returncode == 0, r.stderr
    for secret in (password, "ssl-pw-marker-77"):
        assert secret not in r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("DATABASE_URL=postgresql://"), last
    printed = last.removeprefix("DATABASE_URL=")
    assert conninfo_to_dict(printed) == {
        "user": params["user"],
        "host": "127.0.0.1",
        "port": params["port"],
        "dbname": params["dbname"],
        "sslmode": "disable",
    }
    doc = json.loads(run_script("deploy_local.py", "--json", env={"DATABASE_URL": with_pw}).stdout)
    assert doc["database_url"] == printed
    # Our own local server's URL keeps its passfile, so the printed line connects as is.
    r = run_script("deploy_local.py", env={"DATABASE_URL": server.url(params["dbname"]), "PGPASSFILE": "/nonexistent"})
    printed = r.stdout.strip().splitlines()[-1].removeprefix("DATABASE_URL=")
    assert printed.startswith("postgresql://") and "passfile=" in printed
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # only the URL's own passfile can help
    with psycopg.connect(printed) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
