"""A laboratory for `scripts/fleet.py`: a copy of the project with its own Pulumi home and file
backend, N databases on the session's two servers (the embedded 18 and the system 15, and a
private 15 a test may stop), a fleet.yaml whose passwords come from 0600 files and one variable,
the fleet run as an operator runs it (a subprocess, its JSON parsed), and a watcher that reads
every process's command line while it runs: no password may appear there, and which stacks had
a `pulumi up` running at each instant gives the concurrency the run really had."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.utils.db import bindir, pg_dump_schema, start_server
from tests.utils.real_pulumi import Project
from tests.utils.targets import Target
from x402db import ROOT
from x402db.local.server import LocalServer

sys.path.insert(0, str(ROOT / "bench"))  # the row cloner lives with the rehearsal, which runs as a script

from rehearsal.fixture import Cloner  # noqa: E402

RESOURCES = "public.x402_resources"
ENV_SECRET = "FLEET_LAB_SECRET_PASSWORD"  # the one target whose password comes from the environment
# A migration that only a test has: it changes openrouter_config's type, which PostgreSQL does by
# rewriting x402_resources under AccessExclusiveLock (the planner's effect `rewrite`).
REWRITE_VERSION = "900"
REWRITE_UP = (
    "-- A test-only migration: a rewrite of x402_resources, for the fleet's lock gate.\n"
    "ALTER TABLE public.x402_resources ALTER COLUMN openrouter_config TYPE json USING openrouter_config::json;\n"
)
REWRITE_DOWN = (
    "ALTER TABLE public.x402_resources ALTER COLUMN openrouter_config TYPE jsonb USING openrouter_config::jsonb;\n"
)


# --- the argv watcher ---------------------------------------------------------------------------

# How often the watchers read every command line. The shortest-lived process that could carry a
# password is a `pulumi config set`, a Go CLI start and the stack's key derivation, well over
# 100 ms; test_fleet_stacks proves this interval sees it (Observed.secret_writes). Every 5 ms, the reads of a whole rollout
# cost a third of a core.
WATCH_INTERVAL = 0.02


def read_proc(path: str) -> bytes | None:
    """A /proc file read whole with raw reads: Path.read_bytes costs about four times as much, and
    the watcher reads every process's command line every few milliseconds for a whole run."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stack_of(argv: list[str]) -> str | None:
    """The stack a `pulumi ... --stack NAME` process works on, else None."""
    if not argv or Path(argv[0]).name != "pulumi":
        return None
    for i, arg in enumerate(argv):
        if arg == "--stack" and i + 1 < len(argv):
            return argv[i + 1].rsplit("/", 1)[-1]
        if arg.startswith("--stack="):
            return arg.split("=", 1)[1].rsplit("/", 1)[-1]
    return None


@dataclass
class Observed:
    """What the watcher saw during one run."""

    samples: list[frozenset[str]] = field(default_factory=list)  # stacks with a `pulumi up` running
    busy: list[frozenset[str]] = field(default_factory=list)  # stacks with any `pulumi` command running
    leaks: list[str] = field(default_factory=list)  # command lines holding a password (redacted)
    # samples that caught a `pulumi config set --secret`, the shortest process that could carry a
    # password: proof that the interval is short enough
    secret_writes: int = 0
    processes: int = 0  # command lines read, so that a watcher that saw nothing cannot pass

    def peak(self, stacks: Iterable[str] | None = None) -> int:
        wanted = None if stacks is None else set(stacks)
        return max((len(s if wanted is None else s & wanted) for s in self.samples), default=0)

    def ups(self) -> set[str]:
        return set().union(*self.samples) if self.samples else set()


class ArgvWatcher:
    """Samples /proc/*/cmdline every `interval` seconds in a thread, between start() and stop()."""

    def __init__(self, secrets: Iterable[str], home: Path, interval: float = WATCH_INTERVAL):
        self.secrets = [s for s in secrets if s]
        self._secrets = [s.encode() for s in self.secrets]
        self.marker = f"PULUMI_HOME={home}".encode()
        self.interval = interval
        self.observed = Observed()
        self._ours: dict[tuple[str, str], bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _is_ours(self, pid: str, stack: str) -> bool:
        # Other sessions on the machine run Pulumi too: only this lab's home counts.
        key = (pid, stack)
        if key not in self._ours:
            environ = read_proc(f"/proc/{pid}/environ")
            if environ is None:
                return False
            self._ours[key] = self.marker in environ.split(b"\0")
        return self._ours[key]

    def sample(self) -> None:
        running, busy = set(), set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            raw = read_proc(f"/proc/{pid}/cmdline")
            if not raw:
                continue
            self.observed.processes += 1
            # Bytes first: only a line that holds a password, or a `pulumi` command, is decoded.
            line = raw.replace(b"\0", b" ")
            for n, secret in enumerate(self._secrets):
                if secret in line:
                    shown = line.decode(errors="replace").replace(self.secrets[n], f"<password {n}>")
                    self.observed.leaks.append(f"pid {pid}: {shown[:300]}")
            if not raw.split(b"\0", 1)[0].endswith(b"pulumi"):
                continue
            stack = _stack_of(raw.decode(errors="replace").split("\0")[:-1])
            if stack and self._is_ours(pid, stack):
                busy.add(stack)
                if b"\0config\0set\0" in raw and b"\0--secret\0" in raw:
                    self.observed.secret_writes += 1
                if b"\0up\0" in raw:
                    running.add(stack)
        self.observed.samples.append(frozenset(running))
        self.observed.busy.append(frozenset(busy))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> ArgvWatcher:
        self._thread = threading.Thread(target=self._loop, name="argv-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Observed:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()  # one last look, so that even an instant run is read once
        return self.observed


# --- processes ------------------------------------------------------------------------------------


def _ppids() -> dict[int, int]:
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            # The command may hold spaces and parentheses: fields follow the last ')'.
            out[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`, by the kernel's parent links."""
    children: dict[int, list[int]] = {}
    for child, parent in _ppids().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_tree(pid: int) -> set[int]:
    """SIGKILL `pid` and every descendant at one instant, as a crash of the machine would: the
    tree is frozen (SIGSTOP) until no new process appears, then killed."""
    frozen: set[int] = set()
    while True:
        new = ({pid} | descendants(pid) | set().union(*(descendants(p) for p in frozen))) - frozen
        if not new:
            break
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        frozen |= new
    for p in frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return frozen


# --- the lab ----------------------------------------------------------------------------------------


@dataclass
class LabTarget:
    name: str
    db: Target
    server_label: str
    labels: dict[str, str]
    password: dict[str, str]  # {"file": path} or {"env": NAME}
    config: dict[str, Any]  # extra stack config for this target (e.g. lockTimeout)

    def entry(self) -> dict[str, Any]:
        """The target's fleet.yaml entry: every key its stack needs, no secret."""
        entry: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.db.server.port(),
            "database": self.db.database,
            "password": dict(self.password),
        }
        if self.db.kind == "postgres":
            entry |= {"target": "postgres", "username": self.db.user, "superuser": True}
        if self.labels:
            entry["labels"] = dict(self.labels)
        return entry | self.config


@dataclass(repr=False)
class Run:
    rc: int
    doc: Any  # the parsed JSON document, None when stdout held none
    stdout: str
    stderr: str
    observed: Observed
    seconds: float

    def targets(self) -> dict[str, dict]:
        """Every target record of the document, by name."""
        return {t["name"]: t for t in _records(self.doc)}

    def __repr__(self) -> str:  # what an assertion about a run prints
        return f"exit {self.rc} after {self.seconds:.1f}s\nstdout: {self.stdout[-4000:]}\nstderr: {self.stderr[-4000:]}"


def _records(doc: Any) -> list[dict]:
    """Target records: dicts with a name and a ledger or result, wherever the document holds them."""
    found = []
    if isinstance(doc, dict):
        if "name" in doc and ("ledger" in doc or "result" in doc):
            found.append(doc)
        for value in doc.values():
            found += _records(value)
    elif isinstance(doc, list):
        for value in doc:
            found += _records(value)
    return found


class FleetLab:
    """One project copy, its stacks, and the databases a fleet rolls out to."""

    def __init__(self, tools: Path, servers: dict[str, LocalServer]):
        self.project = Project(tools)
        self.dir = self.project.dir
        shutil.copytree(ROOT / "scripts", self.dir / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
        self.servers = dict(servers)
        self.secrets_dir = self.project.base / "secrets"
        self.secrets_dir.mkdir(mode=0o700)
        self.targets: dict[str, LabTarget] = {}
        self.env_secret: str | None = None
        self._extra: list[LocalServer] = []
        self.runs: list[Run] = []
        self._started: list[subprocess.Popen] = []
        self._watchers: dict[int, psycopg.Connection] = {}  # one session per server, for migrating()

    # -- servers and databases --

    def extra_server(self, label: str = "pg15") -> str:
        """A private server this lab may stop and start (never the session's shared ones); its label."""
        binaries = bindir(label)
        assert binaries is not None, f"{label} is not installed"
        server = start_server(label, binaries)
        self._extra.append(server)
        name = f"{label}-own{len(self._extra)}"
        self.servers[name] = server
        return name

    def stop_server(self, label: str) -> None:
        assert self.servers[label] in self._extra, "only the lab's own servers may be stopped"
        self.servers[label].stop()

    def start_server(self, label: str) -> None:
        self.servers[label].start()

    def password_file(self, label: str) -> Path:
        path = self.secrets_dir / f"{label}.password"
        if not path.exists():
            password = self.servers[label].password
            assert password
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, password.encode())  # no final newline: the fleet refuses one
            os.close(fd)
        return path

    def add(
        self,
        name: str,
        server: str,
        kind: str = "supabase",
        labels: dict[str, str] | None = None,
        from_env: bool = False,
        **config: Any,
    ) -> LabTarget:
        """A fresh database on `server` (a label of self.servers) and its place in the fleet."""
        db = Target(self.servers[server], kind)
        if from_env:
            assert self.env_secret in (None, self.servers[server].password), "one variable, one password"
            self.env_secret = self.servers[server].password
            password = {"env": ENV_SECRET}
        else:
            password = {"file": str(self.password_file(server))}
        target = LabTarget(name, db, server, labels or {}, password, config)
        self.targets[name] = target
        return target

    def passwords(self) -> list[str]:
        return [p for s in self.servers.values() if (p := s.password)]

    # -- fleet.yaml --

    def write(
        self,
        waves: list[dict[str, Any]],
        names: Iterable[str] | None = None,
        lock_gate: int | None = None,
        path: Path | None = None,
        **changes: Any,
    ) -> Path:
        """fleet.yaml (version 1) over `names` (default: every target of the lab); `changes`
        replace whole top-level keys, to write a file a test wants wrong."""
        doc: dict[str, Any] = {
            "version": 1,
            "defaults": {"target": "supabase", "port": 5432, "database": "postgres", "username": "postgres"}
            | {"sslmode": "disable"},
            "targets": {n: self.targets[n].entry() for n in (names or self.targets)},
            "waves": waves,
        }
        if lock_gate is not None:
            doc["lockGate"] = {"maxRows": lock_gate}
        doc.update(changes)
        path = path or self.project.base / "fleet.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    # -- running the fleet --

    def env(self, **extra: str) -> dict[str, str]:
        env = self.project.env(PYTHONPATH=str(self.dir), **extra)
        if self.env_secret is not None:
            env[ENV_SECRET] = self.env_secret
        return env

    def argv(self, sub: str, fleet: Path, *args: str) -> list[str]:
        return [sys.executable, str(self.dir / "scripts" / "fleet.py"), sub, "--fleet", str(fleet), "--json", *args]

    def watcher(self) -> ArgvWatcher:
        return ArgvWatcher(self.passwords(), self.project.home)

    def run(self, sub: str, fleet: Path, *args: str, timeout: float = 600, **env: str) -> Run:
        """`fleet.py SUB --fleet FILE --json ARGS`, watched; the run is kept in self.runs."""
        running = self.popen(sub, fleet, *args, **env)
        try:
            running.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            running.kill(tree=True)
            raise
        return running.finish()

    def popen(self, sub: str, fleet: Path, *args: str, **env: str) -> Running:
        """The run, started in a session of its own (a test may kill it). Its output goes to files:
        a worker that outlives a killed orchestrator must not hold the test's pipe open."""
        n = len(self.runs) + len(self._started)
        out, err = (self.project.base / f"run-{n}.{ext}" for ext in ("out", "err"))
        watcher = self.watcher().start()
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen(
                self.argv(sub, fleet, *args),
                cwd=self.dir,
                env=self.env(**env),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._started.append(proc)
        return Running(self, proc, watcher, time.monotonic(), out, err)

    def _record(self, rc: int, stdout: str, stderr: str, observed: Observed, seconds: float) -> Run:
        try:
            doc = json.loads(stdout)
        except ValueError:
            doc = None
        run = Run(rc, doc, stdout, stderr, observed, seconds)
        self.runs.append(run)
        return run

    def leaks(self) -> list[str]:
        """Every command line, in every run of this lab, that held a password."""
        return [leak for run in self.runs for leak in run.observed.leaks]

    # -- the databases' side --

    def ledger(self, name: str) -> list[tuple[str, str]]:
        """(version, state) of each ledger row of the target's database, by version."""
        db = self.targets[name].db
        if not db.query("SELECT to_regclass('x402_private.schema_migrations') IS NOT NULL")[0][0]:
            return []
        return [tuple(r) for r in db.query("SELECT version, state FROM x402_private.schema_migrations ORDER BY 1")]

    def snapshot(self, name: str) -> str:
        return self.targets[name].db.snapshot()

    def product_snapshot(self, name: str) -> str:
        """The schema without the bundle's bookkeeping (x402_private: the ledger, the owner),
        which a run writes before its first migration: what a rolled-back migration must leave."""
        db = self.targets[name].db
        return pg_dump_schema(db.server, db.admin, "--exclude-schema=x402_private")

    def stack_output(self, name: str) -> dict[str, Any]:
        r = self.project.run("stack", "output", "--json", "--show-secrets=false", "--stack", name).ok()
        return json.loads(r.stdout)

    def stacks(self) -> list[str]:
        """The stacks the backend holds (read from its files: no CLI needed)."""
        return sorted(p.stem for p in self.project.state.rglob("stacks/**/*.json"))

    def stack_locked(self, name: str) -> bool:
        """Whether the file backend holds a lock of the stack (an update in progress, or a dead one's)."""
        return any((self.project.state / ".pulumi" / "locks").glob(f"*/*/{name}/*.json"))

    def migrating(self, name: str) -> bool:
        """Whether the engine, under Pulumi, has a session on the target's database right now."""
        db = self.targets[name].db
        conn = self._watchers.get(db.server.port())
        if conn is None:
            conn = self._watchers[db.server.port()] = psycopg.connect(db.server.dsn(), autocommit=True)
        return bool(
            conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'x402db-pulumi%%'",
                (db.database,),
            ).fetchone()
        )

    def add_rewrite_migration(self) -> str:
        """The test-only rewrite migration, in the lab's sql/ only; its version."""
        sql_dir = self.dir / "sql"
        (sql_dir / f"{REWRITE_VERSION}_fleet_test_rewrite.up.sql").write_text(REWRITE_UP)
        (sql_dir / f"{REWRITE_VERSION}_fleet_test_rewrite.down.sql").write_text(REWRITE_DOWN)
        return REWRITE_VERSION

    def fill_resources(self, name: str, rows: int) -> int:
        """Grow the target's x402_resources to `rows` rows by cloning one it holds (its columns
        come from the catalog), then ANALYZE; the count."""
        db = self.targets[name].db
        with psycopg.connect(db.admin, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            cloner = Cloner.of(conn, RESOURCES)
            users = [r[0] for r in conn.execute("SELECT id FROM auth.users ORDER BY id")]
            pick = psycopg.sql.SQL("({}::uuid[])[1 + g % {}]").format(
                psycopg.sql.Literal(users), psycopg.sql.Literal(len(users))
            )
            have = conn.execute(f"SELECT count(*) FROM {RESOURCES}").fetchone()[0]
            series = psycopg.sql.SQL("generate_series(1, {}) g").format(psycopg.sql.Literal(rows - have))
            conn.execute(cloner.insert(pick, psycopg.sql.SQL("g"), series, {}))
            conn.execute(f"ANALYZE {RESOURCES}")
            return conn.execute(f"SELECT count(*) FROM {RESOURCES}").fetchone()[0]

    def plan(self, name: str) -> dict:
        """`migrate.py plan --json` of the lab's copy (its sql/) on the target's database."""
        db = self.targets[name].db
        proc = subprocess.run(
            [sys.executable, str(self.dir / "scripts" / "migrate.py"), "plan", "--json"]
            + ["--dsn", db.dsn, "--target", db.kind],
            cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(self.dir)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout)

    # -- teardown --

    def kill_leftovers(self) -> None:
        """Every process of this lab (they carry its PULUMI_HOME): a killed run's workers and plugins."""
        marker = f"PULUMI_HOME={self.project.home}".encode()
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                        os.kill(int(pid), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass

    def cleanup(self) -> None:
        self.kill_leftovers()
        for conn in self._watchers.values():
            conn.close()
        for target in self.targets.values():
            try:
                target.db.drop()
            except psycopg.Error:
                pass  # its server is stopped: the server goes below
        for server in self._extra:
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)
        self.project.cleanup()


@dataclass
class Running:
    """A fleet run started with popen."""

    lab: FleetLab
    proc: subprocess.Popen
    watcher: ArgvWatcher
    started: float
    out: Path
    err: Path

    def wait_for_up(self, stacks: Iterable[str], timeout: float = 300, any_command: bool = False) -> str:
        """Block until a `pulumi up` (any `pulumi` command) of one of `stacks` runs; its stack."""
        wanted = set(stacks)
        deadline = time.monotonic() + timeout
        while True:
            seen = (self.watcher.observed.busy if any_command else self.watcher.observed.samples)[-1:] or [frozenset()]
            hit = seen[0] & wanted
            if hit:
                return sorted(hit)[0]
            assert self.proc.poll() is None, f"the run ended before an up of {sorted(wanted)}: {self.finish()}"
            assert time.monotonic() < deadline, f"no up of {sorted(wanted)} within {timeout}s"
            time.sleep(0.005)

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 300) -> None:
        """Poll `check` every 10 ms while the run lives."""
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, f"the run ended before {what}: {self.finish()}"
            assert time.monotonic() < deadline, f"not {what} within {timeout}s"
            time.sleep(0.01)

    def kill(self, tree: bool) -> set[int]:
        """SIGKILL the orchestrator alone, or with every descendant; the pids killed."""
        if tree:
            killed = kill_tree(self.proc.pid)
        else:
            os.kill(self.proc.pid, signal.SIGKILL)
            killed = {self.proc.pid}
        self.proc.wait()
        return killed

    def finish(self, timeout: float = 600) -> Run:
        """Wait for the run's end; what it printed and what the watcher saw."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            observed = self.watcher.stop()
        return self.lab._record(
            self.proc.returncode, self.out.read_text(), self.err.read_text(), observed, time.monotonic() - self.started
        )
