"""kill -9 of scripts/migrate.py at several points of up and of down, on an x402_resources large
enough (generate_series, fsync off) for VALIDATE and CREATE INDEX CONCURRENTLY to take time.
The moment is found from a second session (pg_stat_activity, pg_stat_progress_create_index),
not by sleeping. Afterwards `status` tells the truth, the same command converges, and the
schema equals a clean deploy's (or a clean revert's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.utils.db import drop_database, new_database, pg_dump_schema
from tests.utils.scripts import call_script
from x402db import ROOT, db
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.target import detect

ROWS = 400_000  # VALIDATE and the index build each take a few hundred ms: the kill points are observable
APP = "x402db-migrate"


@pytest.fixture(scope="module")
def big_template(server):
    """A database at 001 whose x402_resources holds ROWS rows, cloned by each test."""
    dsn = new_database(server)
    with db.connect(dsn) as conn:
        Engine(conn, migrations.load(), detect(conn)).up(to="001")
        uid = conn.execute("INSERT INTO auth.users (email) VALUES ('big@example.invalid') RETURNING id").fetchone()[0]
        conn.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name)"
            " SELECT %s, 'proxy', 'r' || g FROM generate_series(1, %s) g",
            (uid, ROWS),
        )
    yield dsn
    drop_database(server, dsn)


def _clone(server, template: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    tmpl = psycopg.conninfo.conninfo_to_dict(template)["dbname"]
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(tmpl)
            )
        )
    return server.dsn(name)


@pytest.fixture
def big_db(server, big_template):
    dsn = _clone(server, big_template)
    yield dsn
    drop_database(server, dsn)


def _migrate(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/migrate.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(conn, query: str, params, proc: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(query, params).fetchone()
        if row:
            return row
        if proc.poll() is not None:
            pytest.fail(f"migrate.py finished before the kill point came: {proc.communicate()}")
        time.sleep(0.002)
    pytest.fail("the kill point never came")


def _kill(conn, proc: subprocess.Popen, backend_pid: int, terminate_backend: bool = False) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if terminate_backend:  # the server ends the orphaned statement too (a restart, an operator)
        conn.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
    # The orphaned backend finishes (or aborts) its statement, then notices the closed socket.
    while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend_pid,)).fetchone():
        time.sleep(0.01)


def _status(dsn: str) -> tuple[int, dict[str, str]]:
    r = call_script("migrate.py", "status", "--json", "--dsn", dsn)
    return r.returncode, {s["version"]: s["state"] for s in json.loads(r.stdout)}


ACTIVE = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s AND state = 'active'"
    " AND query LIKE %s"
)
WAITING = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s AND wait_event_type = 'Lock'"
# Only the concurrent build: the transactional part's plain CREATE INDEX on the new (empty)
# table shows in this view too, for a moment, and killing there is the "transaction" point.
BUILDING = (
    "SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_stat_activity a USING (pid)"
    " WHERE a.application_name = %s AND p.datname = %s AND p.command = 'CREATE INDEX CONCURRENTLY'"
    " AND p.phase LIKE 'building index%%'"
)


def _dbname(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


_REFERENCES: dict[tuple[str, bool], str] = {}


def _reference(server, template: str, up: bool) -> str:
    """The schema of a clean deploy (up=True) or of a clean revert, i.e. the template's (up=False)."""
    if (template, up) not in _REFERENCES:
        _REFERENCES[(template, up)] = _clean_schema(server, template, up)
    return _REFERENCES[(template, up)]


def _clean_schema(server, template: str, up: bool) -> str:
    dsn = _clone(server, template)
    try:
        if up:
            assert call_script("migrate.py", "up", "--dsn", dsn).returncode == 0
        return pg_dump_schema(server, dsn)
    finally:
        drop_database(server, dsn)


@pytest.mark.parametrize("point", ["transaction", "validate", "index"])
def test_kill_during_up_then_up_converges(server, big_template, big_db, point):
    with db.connect(big_db) as watch, db.connect(big_db, autocommit=False) as reader:
        if point == "transaction":
            reader.execute("SELECT count(*) FROM public.x402_resources WHERE false")  # holds ACCESS SHARE
            proc = _migrate("up", "--dsn", big_db, "--lock-timeout", "100ms", "--retries", "50")
            pid = _wait_for(watch, WAITING, (APP, _dbname(big_db)), proc)[0]
        elif point == "validate":
            proc = _migrate("up", "--dsn", big_db)
            pid = _wait_for(
                watch,
                ACTIVE,
                (APP, _dbname(big_db), "%VALIDATE CONSTRAINT x402_resources_openrouter_model_id_fkey%"),
                proc,
            )[0]
        else:
            proc = _migrate("up", "--dsn", big_db)
            pid = _wait_for(watch, BUILDING, (APP, _dbname(big_db)), proc)[0]
        _kill(watch, proc, pid, terminate_backend=point == "index")
        reader.rollback()
        code, states = _status(big_db)
        if point == "transaction":
            # Nothing of 005 committed, and the ledger says so.
            assert (code, states["005"]) == (0, "pending")
            assert watch.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
        else:
            # The transactional part and the grants committed; the steps did not all finish.
            assert (code, states["005"]) == (1, "steps-pending")
            assert watch.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is not None
            human = call_script("migrate.py", "status", "--dsn", big_db).stdout
            assert "steps-pending" in human and "run up again" in human
        if point == "index":
            invalid = watch.execute(
                "SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('public.idx_x402_resources_openrouter_model') AND NOT indisvalid"
            ).fetchone()[0]
            assert invalid == 1  # the terminated build left an INVALID index behind
    r = call_script("migrate.py", "up", "--dsn", big_db)
    assert r.returncode == 0, r.stderr
    assert _status(big_db) == (0, {"000": "applied", "001": "applied", "005": "applied"})
    assert pg_dump_schema(server, big_db) == _reference(server, big_template, up=True)


@pytest.mark.parametrize("point", ["transaction", "validate"])
def test_kill_during_down_then_down_converges(server, big_template, big_db, point):
    assert call_script("migrate.py", "up", "--dsn", big_db).returncode == 0
    with db.connect(big_db) as watch, db.connect(big_db, autocommit=False) as reader:
        if point == "transaction":
            reader.execute("SELECT count(*) FROM public.x402_resources WHERE false")
            proc = _migrate("down", "--dsn", big_db, "--lock-timeout", "100ms", "--retries", "50")
            pid = _wait_for(watch, WAITING, (APP, _dbname(big_db)), proc)[0]
        else:
            proc = _migrate("down", "--dsn", big_db)
            pid = _wait_for(
                watch, ACTIVE, (APP, _dbname(big_db), "%VALIDATE CONSTRAINT x402_resources_resource_type_check%"), proc
            )[0]
        _kill(watch, proc, pid)
        reader.rollback()
    code, states = _status(big_db)
    if point == "transaction":
        assert (code, states["005"]) == (0, "applied")
    else:
        # The drops committed with the ledger's 'reverting': never 'applied' over a dropped table.
        assert (code, states["005"]) == (1, "reverting")
        with db.connect(big_db) as c:
            assert c.execute("SELECT to_regclass('public.user_openrouter_integrations')").fetchone()[0] is None
        refused = call_script("migrate.py", "up", "--dsn", big_db)
        assert refused.returncode == 1 and "half-reverted" in refused.stderr and "run down" in refused.stderr
    r = call_script("migrate.py", "down", "--dsn", big_db)
    assert r.returncode == 0, r.stderr
    assert _status(big_db) == (0, {"000": "applied", "001": "applied", "005": "pending"})
    assert pg_dump_schema(server, big_db) == _reference(server, big_template, up=False)
