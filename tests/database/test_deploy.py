"""`make deploy`'s script against DATABASE_URL: first deploy, idempotent second deploy, the
capturable DATABASE_URL line, and the read-only smoke default on a Supabase-shaped database."""

from __future__ import annotations

import json
import os
import subprocess

import psycopg

from tests.utils.scripts import call_script


def test_deploy_then_redeploy(empty_db):
    r = call_script("deploy_local.py", env={"DATABASE_URL": empty_db})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == f"DATABASE_URL={empty_db}"
    assert "000_platform_compat (applied)" in r.stdout and "smoke:" in r.stdout
    # The plan's one-line summary comes before anything is applied.
    [summary] = [line for line in r.stderr.splitlines() if line.startswith("plan: ")]
    assert summary.startswith("plan: up 000 apply, 001 apply, 005 apply on postgres: ready; strongest locks: ")
    assert "public.x402_resources AccessExclusiveLock" in summary
    assert r.stderr.index(summary) < r.stderr.index("000_platform_compat: applying")
    again = call_script("deploy_local.py", env={"DATABASE_URL": empty_db})
    assert again.returncode == 0
    assert "plan: up on postgres: nothing to do" in again.stderr
    assert "nothing to apply, already up to date" in again.stdout and "grants:     already in place" in again.stdout


def test_deploy_json_on_supabase_runs_catalog_smoke_only(supabase_db):
    r = call_script("deploy_local.py", "--json", env={"DATABASE_URL": supabase_db})
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and doc["target"] == "supabase"
    assert [m["version"] for m in doc["migrations"]] == ["005"]
    names = {c["name"] for c in doc["smoke"]["checks"]}
    assert "policy.no_extra" in names and not any(n.startswith("rls.") for n in names)
    full = json.loads(
        call_script("deploy_local.py", "--json", "--full-smoke", env={"DATABASE_URL": supabase_db}).stdout
    )
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
    r = call_script("deploy_local.py", env={"DATABASE_URL": with_pw})
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
    doc = json.loads(call_script("deploy_local.py", "--json", env={"DATABASE_URL": with_pw}).stdout)
    assert doc["database_url"] == printed
    # Our own local server's URL keeps its passfile, so the printed line connects as is.
    r = call_script("deploy_local.py", env={"DATABASE_URL": server.url(params["dbname"]), "PGPASSFILE": "/nonexistent"})
    printed = r.stdout.strip().splitlines()[-1].removeprefix("DATABASE_URL=")
    assert printed.startswith("postgresql://") and "passfile=" in printed
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # only the URL's own passfile can help
    with psycopg.connect(printed) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_a_database_is_named_before_it_changes_and_a_terminal_is_asked_first(empty_db):
    """An exported DATABASE_URL was deployed to in under a second, without a word. Now `make
    deploy`, `migrate.py up` and `down` name the database and what the plan changes, on stderr; at a
    terminal they ask, and any answer but yes changes nothing. Without a terminal they go on, and
    --json stays clean; nothing to change asks nothing; the transaction pooler's port is refused."""
    from psycopg.conninfo import conninfo_to_dict

    from tests.utils.migrations import states
    from tests.utils.scripts import assert_one_line_error
    from tests.utils.tty import run_in_pty
    from x402db import ROOT

    p = conninfo_to_dict(empty_db)
    named = f"database {p['dbname']} on 127.0.0.1:{p['port']} (target postgres): "
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DATABASE_URL")} | {"DATABASE_URL": empty_db}
    deploy = [str(ROOT / "scripts/deploy_local.py"), "--no-smoke"]
    migrate = str(ROOT / "scripts/migrate.py")

    code, shown = run_in_pty(deploy, env, answer=b"n\r", prompt=b"Deploy? [y/N] ")
    assert code == 1 and named + "apply 000, 001, 005" in shown, shown
    assert "error: not deployed: the answer was not yes, so nothing changed" in shown and "Traceback" not in shown
    assert set(states(empty_db).values()) == {"pending"}
    code, shown = run_in_pty(deploy, env, answer=b"yes\r", prompt=b"Deploy? [y/N] ")
    assert code == 0 and "005_add_openrouter_integration (applied)" in shown, shown
    code, shown = run_in_pty([migrate, "down"], env, answer=b"n\r", prompt=b"Revert? [y/N] ")
    assert code == 1 and named + "revert 005" in shown and "not reverted" in shown, shown
    assert states(empty_db)["005"] == "applied"
    code, shown = run_in_pty([migrate, "up"], env)  # nothing to change: no question
    assert code == 0 and named + "nothing to change" in shown and "[y/N]" not in shown, shown

    # The compat layer's revert names every default privilege it revoked: said once, fit to the terminal.
    code, shown = run_in_pty([migrate, "down", "--to", "base", "--yes"], env)
    assert code == 0 and named + "revert 005, 001, 000" in shown, shown
    assert shown.count("revoked the default privileges the compat layer had added") == 1, shown
    assert "reverted  000_platform_compat" in shown and max(map(len, shown.splitlines())) <= 100, shown
    r = call_script("migrate.py", "up", "--to", "1", env={"DATABASE_URL": empty_db})  # no terminal: goes on
    assert r.returncode == 0 and named + "apply 000, 001" in r.stderr, r.stderr
    r = call_script("migrate.py", "up", "--json", env={"DATABASE_URL": empty_db})
    assert r.returncode == 0 and named + "apply 005" in r.stderr, r.stderr
    assert [c["version"] for c in json.loads(r.stdout)["changes"]] == ["005"]
    # `make revert` follows DATABASE_URL like every other target (it reverted the local database).
    make_env = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")} | {"CI": "true"}
    r = subprocess.run(  # STAMP=Makefile: the venv rule has nothing to do
        ["make", "-s", "revert", "STAMP=Makefile"], cwd=ROOT, env=make_env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and named + "revert 005, 001, 000" in r.stderr, r.stdout + r.stderr
    assert set(states(empty_db).values()) == {"pending"}

    pooler = empty_db.replace(f":{p['port']}/", ":6543/")
    for script, args in (("deploy_local.py", ()), ("migrate.py", ("up",)), ("migrate.py", ("down", "--yes"))):
        r = call_script(script, *args, env={"DATABASE_URL": pooler})
        assert "port 6543 is Supabase's transaction pooler" in assert_one_line_error(r, 2), r.stderr
