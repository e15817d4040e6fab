"""Secure from the first commit: while 005 is applied on a Supabase project (whose default
privileges grant every new public table to anon, authenticated and service_role), a second
session polls the table's privileges in a tight loop. It must never see anon hold any privilege,
nor authenticated hold more than SELECT, INSERT, UPDATE, DELETE, on every path: migrate.py up,
make deploy, down then up, and the Pulumi SqlMigration's create through the real provider host."""

from __future__ import annotations

import threading

import psycopg
import pytest

from tests.utils.db import admin_dsn, drop_database, new_supabase_database
from tests.utils.dynamic_host import Host, unwrap
from tests.utils.pulumi_mocks import by_name, run_program
from tests.utils.scripts import call_script
from x402db import access

TABLE = "public.user_openrouter_integrations"
ALLOWED = {"anon": set(), "authenticated": {"SELECT", "INSERT", "UPDATE", "DELETE"}}


class Watcher(threading.Thread):
    """Polls has_table_privilege for anon and authenticated from its own session."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop, self.ready = dsn, threading.Event(), threading.Event()
        self.seen, self.violations, self.error = 0, [], None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                privileges = access.table_privileges(c)
                checks = [(role, p) for role in ALLOWED for p in privileges if p not in ALLOWED[role]]
                cols = ", ".join(f"has_table_privilege('{role}', t, '{p}')" for role, p in checks)
                query = f"SELECT {cols} FROM (SELECT to_regclass('{TABLE}') AS t) s WHERE t IS NOT NULL"
                self.ready.set()
                while not self.stop.is_set():
                    row = c.execute(query).fetchone()
                    if row is None:
                        continue
                    self.seen += 1
                    held = [f"{role} {p}" for (role, p), has in zip(checks, row, strict=True) if has]
                    if held:
                        self.violations.append(held)
        except Exception as exc:  # reported by finish(), never swallowed
            self.error = exc
            self.ready.set()

    def __enter__(self) -> Watcher:
        self.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        # Keep watching until the table has been seen a few times after the run ended.
        baseline = self.seen
        for _ in range(200):
            if self.seen >= baseline + 20 or self.error:
                break
            threading.Event().wait(0.01)
        self.stop.set()
        self.join(10)

    def verdict(self) -> None:
        assert self.error is None, self.error
        assert self.seen > 0, "the watcher never saw the table: the test proves nothing"
        assert self.violations == [], f"another session saw: {self.violations[0]} (and {len(self.violations) - 1} more)"


@pytest.fixture
def project(server):
    dsn = new_supabase_database(server, "shape_a")
    yield dsn
    drop_database(server, dsn)


def test_migrate_up_never_exposes_the_table(server, project):
    with Watcher(admin_dsn(server, project)) as w:
        r = call_script("migrate.py", "up", "--dsn", project)
        assert r.returncode == 0, r.stderr
    w.verdict()


def test_make_deploy_never_exposes_the_table(server, project):
    with Watcher(admin_dsn(server, project)) as w:
        r = call_script("deploy_local.py", "--no-smoke", env={"DATABASE_URL": project})
        assert r.returncode == 0, r.stdout + r.stderr
    w.verdict()


def test_down_then_up_never_exposes_the_table(server, project):
    assert call_script("migrate.py", "up", "--dsn", project).returncode == 0
    with Watcher(admin_dsn(server, project)) as w:
        r = call_script("migrate.py", "down", "--dsn", project)
        assert r.returncode == 0, r.stderr
        r = call_script("migrate.py", "up", "--dsn", project)
        assert r.returncode == 0, r.stderr
    w.verdict()


def test_pulumi_create_never_exposes_the_table(server, project, host):
    params = psycopg.conninfo.conninfo_to_dict(project)
    report = run_program(
        {
            "target": "supabase",
            "host": params["host"],
            "port": str(params["port"]),
            "database": params["dbname"],
            "username": params["user"],
            "sslmode": "disable",
            "protect": "false",
        }
    )
    (inputs,) = [
        {k: unwrap(v) for k, v in r["inputs"].items()}
        for r in by_name(report).values()
        if r["type"].endswith("SqlMigration")
    ]
    h = Host(host)
    checked, failures = h.check(inputs)
    assert failures == []
    with Watcher(admin_dsn(server, project)) as w:
        # Only the migration resource: the Grant resources come later, and must not be needed.
        assert h.create(checked)[0].startswith("005-")
    w.verdict()
