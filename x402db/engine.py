"""The migration engine: apply, revert and validate migrations against one database.

Flyway/Sqitch semantics: a ledger with checksums, drift refuses `up`, an advisory lock makes
concurrent runs apply once, and a lock timeout is retried with backoff instead of queueing
writers behind our DDL. Pulumi's dynamic provider and `scripts/migrate.py` both drive this class.
"""
from __future__ import annotations

import getpass
import re
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from . import ledger
from .errors import BundleError, DriftError, Refused, UsageError
from .migrations import Migration, Script
from .target import Target

# Any fixed bigint works; it only has to be the same for every runner of this bundle.
ADVISORY_LOCK_KEY = 402_005_000_001
_CONCURRENT_INDEX = re.compile(r"CREATE\s+INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.I)
BASE = "base"  # `down --to base` reverts every migration
_INTERVAL = re.compile(r"^\d+\s*(ms|s|min|h)?$")


def is_interval(value: str) -> bool:
    """A timeout PostgreSQL accepts for lock_timeout / statement_timeout (unitless = ms)."""
    return bool(_INTERVAL.match(str(value).strip()))


@dataclass(frozen=True)
class Settings:
    lock_timeout: str = "1s"  # how long writers may queue behind one of our DDL statements
    statement_timeout: str = "60s"  # for the transactional DDL, which only touches the catalog
    step_timeout: str = "0"  # VALIDATE / CREATE INDEX CONCURRENTLY scan the table; no writer waits
    retries: int = 6
    backoff_s: float = 1.0
    lock_wait_s: float = 300.0  # how long to wait for another migration run to finish

    def __post_init__(self) -> None:
        for name in ("lock_timeout", "statement_timeout", "step_timeout"):
            if not is_interval(getattr(self, name)):
                raise UsageError(f"{name} must be a PostgreSQL interval like 1s, 500ms or 2min, not {getattr(self, name)!r}")
        if self.retries < 0:
            raise UsageError("retries must be 0 or more")


@dataclass(frozen=True)
class Outcome:
    version: str
    name: str
    action: str  # applied | adopted | reverted | forgotten
    ms: int


@dataclass(frozen=True)
class State:
    version: str
    name: str
    state: str  # applied | pending | drifted | missing-file
    kind: str | None = None


def _applied_by(conn: psycopg.Connection) -> str:
    db_user = conn.execute("SELECT current_user").fetchone()[0]
    return f"{db_user} ({getpass.getuser()}@{socket.gethostname()})"


def _pg_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag and diag.message_primary else str(exc).splitlines()[0]
    return primary


class Engine:
    def __init__(
        self,
        conn: psycopg.Connection,
        migrations: list[Migration],
        target: Target,
        settings: Settings | None = None,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        if not conn.autocommit:
            raise UsageError("the engine needs an autocommit connection: it runs non-transactional steps")
        self.conn = conn
        self.target = target
        self.migrations = [m for m in migrations if m.applies_to(target.name)]
        self.settings = settings or Settings()
        self.log = log

    # ---- reading ---------------------------------------------------------------------------

    def status(self) -> list[State]:
        recorded = ledger.entries(self.conn)
        states = []
        for m in self.migrations:
            entry = recorded.pop(m.version, None)
            if entry is None:
                states.append(State(m.version, m.name, "pending"))
            elif entry.checksum != m.checksum:
                states.append(State(m.version, m.name, "drifted", entry.kind))
            else:
                states.append(State(m.version, m.name, "applied", entry.kind))
        for entry in recorded.values():
            if entry.version not in {m.version for m in self.migrations} and entry.target == self.target.name:
                states.append(State(entry.version, entry.name, "missing-file", entry.kind))
        return sorted(states, key=lambda s: s.version)

    def validate(self) -> None:
        bad = [s for s in self.status() if s.state in ("drifted", "missing-file")]
        if bad:
            what = ", ".join(f"{s.version}_{s.name} ({s.state})" for s in bad)
            raise DriftError(
                f"drift: {what}; an applied migration's file was edited or removed. Restore the "
                "original file and ship the change as a new migration"
            )

    # ---- locking and retries ---------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        deadline = time.monotonic() + self.settings.lock_wait_s
        said = False
        while not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise BundleError(
                    f"another migration run has held the migration lock for over {self.settings.lock_wait_s:.0f}s; "
                    "wait for it to finish (see pg_stat_activity, application_name x402db) and retry"
                )
            if not said:
                self.log("waiting for another migration run to finish")
                said = True
            time.sleep(0.2)
        try:
            yield
        finally:
            if not self.conn.closed:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))

    def _retrying(self, what: str, fn: Callable[[], None]) -> None:
        delay = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                fn()
                return
            except pgerr.LockNotAvailable:
                if attempt == self.settings.retries:
                    raise BundleError(
                        f"{what}: gave up after {attempt + 1} attempts, each waiting lock_timeout="
                        f"{self.settings.lock_timeout} for a lock another session holds; that step changed "
                        "nothing. Find the blocker in pg_stat_activity and run again"
                    ) from None
                self.log(f"{what}: lock not available within {self.settings.lock_timeout}, retrying in {delay:.1f}s")
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
            except pgerr.QueryCanceled:
                raise BundleError(f"{what}: statement timeout hit; nothing of that step was kept") from None
            except psycopg.Error as exc:
                raise BundleError(f"{what} failed and was rolled back: {_pg_message(exc)}") from None

    def _set_timeouts(self, statement_timeout: str, local: bool) -> None:
        scope = "SET LOCAL" if local else "SET"
        self.conn.execute(sql.SQL(scope + " lock_timeout = {}").format(sql.Literal(self.settings.lock_timeout)))
        self.conn.execute(sql.SQL(scope + " statement_timeout = {}").format(sql.Literal(statement_timeout)))

    def _run_steps(self, m: Migration, script: Script) -> None:
        self._set_timeouts(self.settings.step_timeout, local=False)
        try:
            for i, step in enumerate(script.steps, 1):
                self._retrying(f"{m.label} step {i}/{len(script.steps)}", lambda s=step: self._run_step(s))
        finally:
            self.conn.execute("RESET lock_timeout; RESET statement_timeout")

    def _run_step(self, step: str) -> None:
        idx = _CONCURRENT_INDEX.search(step)
        if idx:
            # A failed concurrent build leaves an INVALID index that IF NOT EXISTS would keep.
            invalid = self.conn.execute(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = %s AND NOT i.indisvalid",
                (idx.group(1),),
            ).fetchone()
            if invalid:
                self.log(f"dropping invalid index {idx.group(1)} left by an interrupted build")
                self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(idx.group(1))))
        self.conn.execute(step)

    def _holds(self, condition_sql: str) -> bool:
        return bool(self.conn.execute(f"SELECT ({condition_sql})").fetchone()[0])

    # ---- up --------------------------------------------------------------------------------

    def up(self, to: str | None = None) -> list[Outcome]:
        with self.locked():
            self.validate()
            done = ledger.entries(self.conn)
            todo = [m for m in self.migrations if m.version not in done and (to is None or m.version <= to)]
            return [self._apply_locked(m) for m in todo]

    def apply(self, m: Migration) -> Outcome | None:
        """Apply one migration (None if already applied); refuses if it drifted."""
        with self.locked():
            entry = ledger.entries(self.conn).get(m.version)
            if entry is not None:
                if entry.checksum != m.checksum:
                    raise DriftError(f"{m.label} is applied with a different checksum; applied migrations are immutable, ship a new one")
                return None
            return self._apply_locked(m)

    def _apply_locked(self, m: Migration) -> Outcome:
        ledger.ensure(self.conn)
        started = time.monotonic()
        if m.up.adopt_if and self._holds(m.up.adopt_if):
            with self.conn.transaction():
                ledger.record(self.conn, version=m.version, name=m.name, checksum=m.checksum, kind="adopted",
                              target=self.target.name, applied_by=_applied_by(self.conn), execution_ms=0)
            self.log(f"{m.label}: already present, adopted without running it")
            return Outcome(m.version, m.name, "adopted", 0)
        for cond in m.up.requires:
            if not self._holds(cond.sql):
                raise Refused(f"{m.label} not applied: {cond.message}")
        self.log(f"{m.label}: applying")

        def transactional() -> None:
            with self.conn.transaction():
                self._set_timeouts(self.settings.statement_timeout, local=True)
                for statement in m.up.statements:
                    self.conn.execute(statement)

        self._retrying(f"{m.label}", transactional)
        self._run_steps(m, m.up)
        ms = int((time.monotonic() - started) * 1000)
        with self.conn.transaction():
            ledger.record(self.conn, version=m.version, name=m.name, checksum=m.checksum, kind="applied",
                          target=self.target.name, applied_by=_applied_by(self.conn), execution_ms=ms)
        self.log(f"{m.label}: applied in {ms} ms")
        return Outcome(m.version, m.name, "applied", ms)

    # ---- down ------------------------------------------------------------------------------

    def down(self, to: str | None = None, allow_data_loss: bool = False) -> list[Outcome]:
        with self.locked():
            done = ledger.entries(self.conn)
            applied = [m for m in self.migrations if m.version in done]
            if to is not None and to != BASE and to not in {m.version for m in self.migrations}:
                raise UsageError(f"--to {to}: no such migration version (use a version, or {BASE} to revert everything)")
            chosen = [m for m in applied if to == BASE or m.version > to] if to is not None else applied[-1:]
            return [self._revert_locked(m, allow_data_loss) for m in reversed(chosen)]

    def revert(self, m: Migration, allow_data_loss: bool = False) -> Outcome | None:
        with self.locked():
            return self._revert_locked(m, allow_data_loss)

    def _revert_locked(self, m: Migration, allow_data_loss: bool) -> Outcome | None:
        entry = ledger.entries(self.conn).get(m.version)
        if entry is None:
            return None
        if entry.kind == "adopted":
            with self.conn.transaction():
                ledger.forget(self.conn, m.version)
            self.log(f"{m.label}: was adopted, not created here; forgotten, nothing dropped")
            return Outcome(m.version, m.name, "forgotten", 0)
        if entry.checksum != m.checksum:
            raise DriftError(f"{m.label} drifted (its file changed since it was applied); refusing to run a down script that may not match")
        started = time.monotonic()
        self.log(f"{m.label}: reverting")

        def transactional() -> None:
            with self.conn.transaction():
                self._set_timeouts(self.settings.statement_timeout, local=True)
                self._check_guards(m, allow_data_loss)
                for statement in m.down.statements:
                    self.conn.execute(statement)

        self._retrying(f"{m.label} down", transactional)
        self._run_steps(m, m.down)
        with self.conn.transaction():
            ledger.forget(self.conn, m.version)
        ms = int((time.monotonic() - started) * 1000)
        self.log(f"{m.label}: reverted in {ms} ms")
        return Outcome(m.version, m.name, "reverted", ms)

    def _count(self, guard_sql: str) -> int:
        # Inside the down transaction: a relation or column already gone holds no data to lose.
        try:
            with self.conn.transaction():
                return int(self.conn.execute(guard_sql).fetchone()[0])
        except (pgerr.UndefinedTable, pgerr.UndefinedColumn):
            return 0

    def _check_guards(self, m: Migration, allow_data_loss: bool) -> None:
        # Writers are held off from the guarded tables until COMMIT, so no row can arrive
        # between the count and the DROP.
        for table in m.down.lock_tables:
            if self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
                self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                    sql.Identifier(*table.split("."))))
        always, lossy = [], []
        for guard in m.down.guards:
            n = self._count(guard.sql)
            if n:
                (always if guard.always else lossy).append(f"{n} {guard.message}")
        if always:
            raise Refused(f"{m.label} down refused, nothing changed: " + "; ".join(always))
        if lossy and not allow_data_loss:
            raise Refused(
                f"{m.label} down refused, nothing changed: " + "; ".join(lossy)
                + ". Back the data up, then allow data loss explicitly (--allow-data-loss, or Pulumi config allowDataLoss)"
            )
        for msg in lossy:
            self.log(f"{m.label}: allowed data loss: {msg}")
