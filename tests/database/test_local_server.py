"""The embedded server asks every connection for a password that only
the checkout's owner can read, and `make deploy` works as root from a checkout inside a 0700
directory (such as /root) and as an ordinary user."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.utils.db import SCRAM_ITERATIONS, SUPERUSER
from tests.utils.scripts import run_script
from x402db import ROOT
from x402db.local.server import SERVICE_USER, LocalServer, _reachable_by_others

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another OS user")
CHECKOUT = [
    "x402db",
    "scripts",
    "sql",
    "Makefile",
    "pyproject.toml",
    "requirements.txt",
    "requirements-dev.txt",
    "constraints.txt",
]


def psql_as(user: str, server: LocalServer, dsn: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """psql run by another OS user, who has no password of its own (HOME without a .pgpass).
    From a checkout in a 0700 directory (root's mktemp -d) that user cannot reach the venv's
    binaries, so it runs the copy the server itself runs from."""
    psql = server.runnable_bindir(user) / "psql"
    if not psql.exists():
        pytest.skip("no psql next to this server")
    base_env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LC_ALL": "C"}
    return subprocess.run(
        [str(psql), "-w", "-X", "-At", "-c", "select current_user", dsn],
        capture_output=True,
        text=True,
        user=user,
        env={**base_env, **(env or {})},
        cwd="/",
        timeout=60,
    )


def bare(dsn: str) -> str:
    """The same server, database and role, without the passfile: what another user would try."""
    p = conninfo_to_dict(dsn)
    return f"host=127.0.0.1 port={p['port']} user={p['user']} dbname={p['dbname']}"


@as_root
def test_another_os_user_cannot_connect_without_the_owners_password(server):
    dsn = server.url()
    # The owner connects with the DSN as handed out (it names the 0600 passfile) ...
    with psycopg.connect(dsn) as conn:
        rules = conn.execute("SELECT DISTINCT type, auth_method FROM pg_hba_file_rules WHERE error IS NULL").fetchall()
    assert set(rules) == {("host", "scram-sha-256")}, rules  # no trust, no peer, no unix socket
    st = server.passfile.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    # ... while another OS user gets nothing: not without a password, not through the passfile.
    for attempt in (bare(dsn), dsn):
        r = psql_as("nobody", server, attempt)
        assert r.returncode != 0 and "password" in r.stderr, (attempt, r.stdout, r.stderr)
    r = psql_as("nobody", server, bare(dsn), env={"PGPASSFILE": str(server.passfile)})
    assert r.returncode != 0 and "password" in r.stderr


def test_the_suites_clusters_store_their_password_with_few_iterations_and_still_ask_for_it(server):
    """The test clusters' cheaper verifier (tests/utils/db.py) is one PostgreSQL accepts: both
    roles hold it, the password connects over scram-sha-256, and a wrong one is refused."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        stored = dict(
            conn.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", ([SUPERUSER, "postgres"],)
            ).fetchall()
        )
    assert set(stored) == {SUPERUSER, "postgres"}
    assert all(v.startswith(f"SCRAM-SHA-256${SCRAM_ITERATIONS}:") for v in stored.values()), stored
    for role in stored:
        with psycopg.connect(bare(server.dsn(user=role)), password=server.password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(bare(server.dsn(user=role)), password=server.password + "x").close()


def test_an_exported_pgpassword_does_not_override_the_servers_passfile(server, empty_db, monkeypatch):
    """libpq takes PGPASSWORD before the passfile a URL names: a developer with one exported
    for another database got "password authentication failed" from every command."""
    wrong = "exported-for-another-database"
    url = server.url(conninfo_to_dict(empty_db)["dbname"])
    r = run_script("migrate.py", "status", "--dsn", url, env={"PGPASSWORD": wrong})
    assert r.returncode == 0, r.stdout + r.stderr
    assert server.password not in r.stdout + r.stderr and wrong not in r.stdout + r.stderr
    # The server's own connections (creating the local database, securing an old cluster) too.
    monkeypatch.setenv("PGPASSWORD", wrong)
    assert server.ensure_database(conninfo_to_dict(empty_db)["dbname"])


@as_root
def test_a_server_made_with_trust_auth_is_secured_on_start(tmp_path_factory):
    """A .local/ cluster created before this change trusted everyone; start() gives it a password."""
    from x402db.local.server import embedded_bindir

    base = Path(tempfile.mkdtemp(prefix="x402db-trust-"))
    base.chmod(0o755)
    server = LocalServer(embedded_bindir(), base, fast=True)
    try:
        server.datadir.mkdir(mode=0o700)
        shutil.chown(server.datadir, SERVICE_USER, SERVICE_USER)
        server._run("initdb", "-D", str(server.datadir), "-U", "postgres", "--auth=trust", "--no-sync")
        server.start()
        assert server.password and server.passfile.exists()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall() == [("scram-sha-256",)]
        r = psql_as("nobody", server, bare(server.dsn()))
        assert r.returncode != 0 and "password" in r.stderr
    finally:
        server.delete()


def test_a_lost_passfile_is_named_not_reported_as_a_lost_connection(monkeypatch):
    """The password file deleted by hand: start() said 'lost the connection to the database:
    fe_sendauth: no password supplied', which names neither the file nor the way out."""
    from x402db.errors import BundleError
    from x402db.local.server import embedded_bindir

    base = Path(tempfile.mkdtemp(prefix="x402db-nopass-"))
    base.chmod(0o755)
    server = LocalServer(embedded_bindir(), base, fast=True)
    try:
        server.start()
        server.passfile.unlink()
        monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # not the test session's copy of the password
        with pytest.raises(BundleError, match="password file .* is gone.*clean-local"):
            server.start()
    finally:
        server.delete()


def _copy_checkout(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in CHECKOUT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # instant on one filesystem; the file's own mode (0644) is what others see
    except OSError:
        shutil.copy2(src, dst)


def _final_url(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("DATABASE_URL=postgresql://"), stdout
    return last.removeprefix("DATABASE_URL=")


# The local path prefers port 54329: its deploys run on one xdist worker, one at a time.
@pytest.mark.xdist_group("local-deploy")
@as_root
@pytest.mark.slow
def test_make_deploy_as_root_from_a_checkout_inside_a_0700_directory():
    private = Path(tempfile.mkdtemp(dir="/root", prefix="x402db-private-"))  # 0700, like /root itself
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    checkout = _copy_checkout(private / "x402")
    (checkout / ".venv").symlink_to(ROOT / ".venv")  # the same installed venv (stamp included)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "PGPASSFILE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    } | {"CI": "1"}
    server, home = None, None
    try:
        r = subprocess.run(["make", "deploy"], cwd=checkout, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        url = _final_url(r.stdout)
        assert "password" not in url and f"passfile={checkout}/.local/pg18/pgpass" in url
        with psycopg.connect(url) as conn:  # the printed line works for the user who ran it
            assert conn.execute("SELECT count(*) FROM x402_private.schema_migrations").fetchone()[0] >= 1
        server = LocalServer(ROOT / ".venv", checkout / ".local" / "pg18")  # only to read where the data went
        pw_file = checkout / ".local" / "password"  # for `pulumi config set --secret password < .local/password`
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600 and pw_file.read_text() == server.password + "\n"
        home = server.home
        assert home != server.base and home.parent == Path("/var/lib/x402db")
        st = home.stat()
        assert st.st_uid == pwd.getpwnam(SERVICE_USER).pw_uid and stat.S_IMODE(st.st_mode) == 0o700
        again = subprocess.run(["make", "deploy"], cwd=checkout, capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stderr
        clean = subprocess.run(
            ["make", "clean-local"], cwd=checkout, capture_output=True, text=True, env=env, timeout=120
        )
        assert clean.returncode == 0, clean.stderr
        assert not home.exists() and not (checkout / ".local").exists()
        with pytest.raises(psycopg.OperationalError):  # and the server is stopped
            psycopg.connect(url, connect_timeout=3).close()
    finally:
        if home is not None and (home / "data").exists():  # the test failed before clean-local
            subprocess.run(  # the copy's own package, so that it deletes the copy's server
                [str(ROOT / ".venv/bin/python"), str(checkout / "scripts/local_db.py"), "delete"],
                capture_output=True,
                env={**os.environ, "PYTHONPATH": str(checkout)},
            )
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


# The local path prefers port 54329: its deploys run on one xdist worker, one at a time.
@pytest.mark.xdist_group("local-deploy")
@as_root
@pytest.mark.slow
def test_deploy_as_an_ordinary_user():
    """As `nobody`: the server runs as that user, its data stays under the checkout's .local/,
    the printed URL works for that user, and another OS user (postgres) cannot connect."""
    system_python = Path("/usr/bin/python3.11")
    if not system_python.exists():
        pytest.skip("an interpreter the ordinary user can run is needed (the venv's lives under /root)")
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    home = Path(tempfile.mkdtemp(prefix="x402db-user-"))
    home.chmod(0o755)
    checkout = _copy_checkout(home / "x402")
    subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
    if not _reachable_by_others(site):  # a checkout in root's 0700 mktemp -d: nobody cannot import from it.
        # After the chown: hard links share their inode, and the venv's files must stay root's.
        site = shutil.copytree(
            site, home / "site-packages", copy_function=_link_or_copy, ignore=shutil.ignore_patterns("__pycache__")
        )
    # The checkout first: the venv's editable install points at the original tree, which this user
    # may not reach, and the copy must run its own code.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": f"{checkout}:{site}",
        "CI": "1",
        "LC_ALL": "C.UTF-8",
    }

    def as_nobody(*args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(system_python), *args],
            cwd=checkout,
            capture_output=True,
            text=True,
            env=env,
            user="nobody",
            timeout=300,
            **kw,
        )

    try:
        r = as_nobody("scripts/deploy_local.py")
        assert r.returncode == 0, r.stdout + r.stderr
        url = _final_url(r.stdout)
        data = checkout / ".local" / "pg18" / "data"
        assert data.stat().st_uid == pwd.getpwnam("nobody").pw_uid and stat.S_IMODE(data.stat().st_mode) == 0o700
        check = as_nobody(
            "-c", f"import psycopg; print(psycopg.connect({url!r}).execute('select current_user').fetchone()[0])"
        )
        assert check.returncode == 0 and check.stdout.strip() == "postgres", check.stderr
        from x402db.local.server import embedded_bindir

        other = psql_as(SERVICE_USER, LocalServer(embedded_bindir(), checkout), bare(url))
        assert other.returncode != 0 and "password" in other.stderr, other.stdout + other.stderr
    finally:
        as_nobody("scripts/local_db.py", "delete")
        shutil.rmtree(home, ignore_errors=True)


def test_a_port_taken_between_its_choice_and_the_start_is_replaced_on_a_new_cluster(monkeypatch):
    """Under load a port found free can be bound by someone else (another server, a client's
    ephemeral port) before the new server binds it: a new cluster takes another port."""
    import socket

    from x402db.local import server as server_module
    from x402db.local.server import embedded_bindir

    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    hold.listen()
    taken = hold.getsockname()[1]
    real = server_module._free_port
    monkeypatch.setattr(server_module, "_free_port", lambda preferred=None: taken if preferred else real(None))
    base = Path(tempfile.mkdtemp(prefix="x402db-port-"))
    base.chmod(0o755)
    server = LocalServer(embedded_bindir(), base, fast=True, preferred_port=taken)
    try:
        server.start()
        assert server.port() != taken
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        hold.close()
        server.delete()


def test_a_port_taken_before_the_first_start_is_not_kept_and_a_failed_start_is_one_sentence(monkeypatch, capsys):
    """The local path saved the port it chose before the server had started: when another
    program took it first (here, every port chosen, as under load), every later `make deploy`
    insisted on that port and printed pg_ctl's raw log, until `local_db.py delete`. A port is
    now kept once the server has listened on it; any failure is one sentence naming the log."""
    import socket

    from x402db.cli.common import run
    from x402db.cli.deploy import local_main
    from x402db.local import deploy as local_deploy
    from x402db.local import server as server_module

    def hold(port: int = 0) -> socket.socket:
        s = socket.socket()
        # The stopped server's own connections may leave its port in TIME_WAIT: a listener that
        # holds the port still keeps PostgreSQL out, which is all this needs.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        return s

    def local_db(*argv: str) -> tuple[int, list[str], str]:
        with pytest.raises(SystemExit) as exit_:
            run(local_main, list(argv))
        out = capsys.readouterr()
        return exit_.value.code, out.err.splitlines(), out.out

    holders = [hold(), hold()]
    taken = [h.getsockname()[1] for h in holders]
    base = Path(tempfile.mkdtemp(prefix="x402db-taken-"))
    base.chmod(0o755)
    monkeypatch.setattr(local_deploy, "LOCAL_BASE", base / "pg18")
    monkeypatch.setattr(local_deploy, "LOCAL_PORT", taken[0])
    monkeypatch.setattr(local_deploy, "LOCAL_PASSWORD", base / "password")
    real = server_module._free_port
    monkeypatch.setattr(server_module, "_free_port", lambda preferred=None: taken[0] if preferred else taken[1])
    server = local_deploy.local_server()
    try:
        code, err, _ = local_db("start")
        assert code == 1 and len(err) == 1, err
        assert f"the server's log is {server.logfile}" in err[0] and "LOG:" not in err[0], err
        assert "Address already in use" in server.logfile.read_text()  # the raw lines stay in the log
        assert not (server.base / "port").exists()

        # Both ports still taken: the next run chooses again and just works.
        monkeypatch.setattr(server_module, "_free_port", real)
        code, err, out = local_db("start")
        assert code == 0, err
        url = out.strip().splitlines()[-1].removeprefix("DATABASE_URL=")
        port = int(conninfo_to_dict(url)["port"])
        assert port not in taken and (server.base / "port").read_text().strip() == str(port)
        with psycopg.connect(url) as conn:  # the passfile names the port the server took
            assert conn.execute("SELECT 1").fetchone() == (1,)

        # A port the server has listened on is kept: taken, one sentence; freed, it starts there.
        assert local_db("stop")[0] == 0
        holders.append(hold(port))
        code, err, _ = local_db("start")
        assert code == 1 and len(err) == 1 and f"port {port} " in err[0] and str(server.logfile) in err[0], err
        holders.pop().close()
        code, err, out = local_db("start")
        assert code == 0 and out.strip().splitlines()[-1] == f"DATABASE_URL={url}", err
    finally:
        for h in holders:
            h.close()
        server.delete()


def test_a_port_other_than_the_dev_stacks_is_said_on_its_own_line(monkeypatch, tmp_path):
    """With 54329 taken, the local deploy's server took another port and said so only inside the
    final URL: a dev stack left on 54329 then reached the other server ("password authentication
    failed"). The port is now a line of its own, with what to do."""
    import socket

    from x402db.local import deploy as local_deploy

    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    hold.listen()
    taken = hold.getsockname()[1]
    base = Path(tempfile.mkdtemp(prefix="x402db-port-"))
    base.chmod(0o755)  # not under pytest's 0700 tmp: as root, the server runs as the postgres OS user
    monkeypatch.setattr(local_deploy, "LOCAL_BASE", base)
    monkeypatch.setattr(local_deploy, "LOCAL_PASSWORD", tmp_path / "password")
    monkeypatch.setattr(local_deploy, "LOCAL_PORT", taken)
    monkeypatch.setattr(local_deploy, "ROOT", base.parent)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    logs: list[str] = []
    try:
        url, _ = local_deploy.resolve_target_dsn(logs.append)
        port = conninfo_to_dict(url)["port"]
        assert port != str(taken)
        assert f"port {port}, not {taken}: another program holds {taken}; " in logs[-1], logs
        assert logs[-1].endswith(f"pulumi config set port {port}"), logs
        from x402db.cli.confirm import embedded_home

        with psycopg.connect(url) as conn:  # the embedded server: named, never asked about
            assert embedded_home(conn) == base
    finally:
        hold.close()
        local_deploy.local_server().delete()
        shutil.rmtree(base, ignore_errors=True)
