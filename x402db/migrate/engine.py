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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from .. import access
from ..errors import BundleError, DriftError, Refused, UsageError
from . import ledger, lock_order
from .files import BASE, Direction, Guard, Migration, Script, resolve_version
from .settings import Settings
from .target import Target

# A bare `down` (no --to) never reverts these: 000_platform_compat and 001_baseline hold the
# platform and the business tables; reverting them takes an explicit --to.
FOUNDATION = ("000", "001")
# Any fixed bigint works; it only has to be the same for every runner of this bundle.
ADVISORY_LOCK_KEY = 402_005_000_001
_O = TypeVar("_O", bound="Outcome | None")
_CONCURRENT_INDEX = re.compile(
    r"CREATE\s+INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(?P<index>\w+)\s+ON\s+(?:ONLY\s+)?(?P<table>[\w.]+)", re.I
)


@dataclass(frozen=True)
class Outcome:
    version: str
    name: str
    action: str  # applied | adopted | reverted | forgotten | resumed
    ms: int
    notes: tuple[str, ...] = ()  # what the run kept or skipped on purpose (e.g. roles still in use)


class FileState(StrEnum):
    """What `status` reports besides a ledger row's own state (ledger.State): how the file and the
    ledger disagree. Printed by `status --json`: never change a value."""

    PENDING = "pending"  # the file has no ledger row
    DRIFTED = "drifted"  # the ledger row records another text of the file
    MISSING_FILE = "missing-file"  # a ledger row of this target whose file is gone


@dataclass(frozen=True)
class State:
    version: str
    name: str
    state: str  # a ledger.State (the row's) or a FileState
    kind: str | None = None
    down_edited: bool = False  # the down file is not the one recorded: `down` refuses it
    superseded: str | None = None  # the ledger holds this earlier text, accepted by the file's x402:supersedes
    stale_supersedes: bool = False  # drifted: the file was edited after its x402:supersedes was written

    @property
    def hint(self) -> str | None:
        return ledger.HINTS.get(self.state)


class Recorder(Protocol):
    """Who else is written with the ledger, in its transaction (the Pulumi stack's claim on the
    database, migrate/owner.py). `before` runs first, so a refusal takes no lock; `after` runs once
    the ledger row is written. Either may raise to roll the whole transaction back."""

    def before(self, conn: psycopg.Connection, m: Migration, direction: Direction) -> None: ...
    def after(self, conn: psycopg.Connection, m: Migration, direction: Direction) -> None: ...


def _value(conn: psycopg.Connection, query: str, params: tuple[object, ...] | None = None) -> Any:
    """The first column of a query that always returns one row (a SELECT without FROM, an aggregate)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def applied_by(conn: psycopg.Connection) -> str:
    db_user = _value(conn, "SELECT current_user")
    return f"{db_user} ({getpass.getuser()}@{socket.gethostname()})"


def _pg_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag and diag.message_primary else str(exc).splitlines()[0]
    return primary


# The shared catalogs' unique keys a concurrent migration of another database can collide on.
CLUSTER_WIDE_KEYS = ("pg_authid_rolname_index",)
_ROLE_EXISTS = re.compile(r'^role ".*" already exists$')


def _lost_cluster_race(exc: psycopg.Error) -> bool:
    """A cluster-wide object (a role) created by another session between this transaction's check
    and its CREATE: a unique violation on a shared catalog's key, or the duplicate it reports
    once the other session has committed."""
    diag = getattr(exc, "diag", None)
    if isinstance(exc, pgerr.UniqueViolation):
        return getattr(diag, "constraint_name", None) in CLUSTER_WIDE_KEYS
    return isinstance(exc, pgerr.DuplicateObject) and bool(_ROLE_EXISTS.match(_pg_message(exc)))


class Engine:
    def __init__(
        self,
        conn: psycopg.Connection,
        migrations: list[Migration],
        target: Target,
        settings: Settings | None = None,
        log: Callable[[str], None] = lambda _msg: None,
        shipped_downs: dict[str, tuple[str, ...]] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        if not conn.autocommit:
            raise UsageError("the engine needs an autocommit connection: it runs non-transactional steps")
        self.conn = conn
        self.target = target
        self.known = list(migrations)  # every version `--to` may name, whatever the target
        self.migrations = [m for m in migrations if m.applies_to(target.name)]
        self.settings = settings or Settings()
        self.log = log
        # Every down checksum this bundle ever shipped (version -> sha256s, oldest first), for
        # ledger rows written before down checksums were recorded. Default: the package's list
        # (migrate/shipped_downs.json), never the checkout's sql/, which is what may be edited.
        self._shipped_downs = shipped_downs
        self.recorder = recorder

    # ---- reading ---------------------------------------------------------------------------

    def status(self) -> list[State]:
        recorded = ledger.entries(self.conn)
        states = []
        for m in self.migrations:
            entry = recorded.pop(m.version, None)
            if entry is None:
                states.append(State(m.version, m.name, FileState.PENDING))
            elif not m.matches(entry.checksum):
                states.append(
                    State(m.version, m.name, FileState.DRIFTED, entry.kind, stale_supersedes=m.stale_supersedes)
                )
            else:
                edited = m.down_checksum not in self._expected_down(m, entry)[0]
                states.append(
                    State(
                        m.version,
                        m.name,
                        entry.state,
                        entry.kind,
                        down_edited=edited,
                        superseded=entry.checksum if m.superseded(entry.checksum) else None,
                    )
                )
        for entry in recorded.values():
            if entry.version not in {m.version for m in self.migrations} and entry.target == self.target.name:
                states.append(State(entry.version, entry.name, FileState.MISSING_FILE, entry.kind))
        return sorted(states, key=lambda s: s.version)

    def validate(self) -> None:
        bad = [s for s in self.status() if s.state in (FileState.DRIFTED, FileState.MISSING_FILE)]
        if bad:
            what = ", ".join(
                f"{s.version}_{s.name} ({s.state}"
                + (", edited after its x402:supersedes was written, which voids it" if s.stale_supersedes else "")
                + ")"
                for s in bad
            )
            raise DriftError(
                f"drift: {what}; an applied migration's file was edited or removed. Restore the "
                "original file and ship the change as a new migration"
            )

    def resolve_to(self, to: str | None, *, allow_base: bool) -> str | None:
        return None if to is None else resolve_version(self.known, to, allow_base=allow_base)

    # ---- locking and retries ---------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        deadline = time.monotonic() + self.settings.lock_wait_s
        said = False
        while not _value(self.conn, "SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)):
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

    def _retrying(self, what: str, fn: Callable[[], None], committed: str | None = None) -> None:
        """Run fn, retrying lock timeouts and a lost race on a catalog row. `committed` is None
        for a transactional part (a failure rolls all of it back); for a no-transaction step it
        says what is already committed and how to converge, because a failed step rolls back only itself."""
        after = f"; that step changed nothing, but {committed}" if committed else "; nothing changed"
        delay = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            last = attempt == self.settings.retries
            try:
                fn()
                return
            except pgerr.LockNotAvailable:
                if last:
                    raise BundleError(
                        f"{what}: gave up after {attempt + 1} attempts, each waiting lock_timeout="
                        f"{self.settings.lock_timeout} for a lock another session holds{after}. "
                        "Find the blocker in pg_stat_activity and run again"
                    ) from None
                self.log(f"{what}: lock not available within {self.settings.lock_timeout}, retrying in {delay:.1f}s")
            except pgerr.DeadlockDetected:
                # The server rolled the whole transaction back to break a cycle with another
                # session: it starts over as after a lock timeout. A step is one idempotent
                # transaction too, so the same holds for it.
                if last:
                    raise BundleError(
                        f"{what}: gave up after {attempt + 1} attempts, each ended by a deadlock with another "
                        f"session (40P01){after}. The server log names the other session; run again"
                    ) from None
                self.log(f"{what}: deadlock with another session, rolled back; retrying in {delay:.1f}s")
            except pgerr.QueryCanceled:
                raise BundleError(f"{what}: statement timeout hit{after}") from None
            except psycopg.OperationalError as exc:
                if self.conn.closed or self.conn.broken:
                    raise BundleError(
                        f"{what}: the connection was lost ({_pg_message(exc)}); whether its last transaction "
                        "committed is unknown. Run status, then the same command again: it converges"
                    ) from None
                raise BundleError(f"{what} failed: {_pg_message(exc)}{after}") from None
            except psycopg.Error as exc:
                # GRANT and ALTER DEFAULT PRIVILEGES update one catalog row in place: a session that
                # waited on another's change of it fails when that one commits. What failed was
                # rolled back, and a retry starts from the committed row.
                if (
                    isinstance(exc, pgerr.InternalError_)
                    and not last
                    and _pg_message(exc) in ("tuple concurrently updated", "tuple concurrently deleted")
                ):
                    self.log(
                        f"{what}: another session changed the same catalog row meanwhile, retrying in {delay:.1f}s"
                    )
                elif not last and _lost_cluster_race(exc):
                    # Roles belong to the cluster, not the database: two databases of one server
                    # migrated at once (a fleet's tenants) both see a role missing, and the second
                    # CREATE ROLE fails. Rolled back; the retry finds the role and creates nothing.
                    self.log(f"{what}: another database of this server created the same role meanwhile, retrying")
                elif committed:
                    raise BundleError(
                        f"{what} failed: {_pg_message(exc)}; that step changed nothing, but {committed}"
                    ) from None
                else:
                    raise BundleError(
                        f"{what} failed and was rolled back, nothing changed: {_pg_message(exc)}"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _set_timeouts(self, statement_timeout: str, local: bool) -> None:
        scope = "SET LOCAL" if local else "SET"
        self.conn.execute(sql.SQL(scope + " lock_timeout = {}").format(sql.Literal(self.settings.lock_timeout)))
        self.conn.execute(sql.SQL(scope + " statement_timeout = {}").format(sql.Literal(statement_timeout)))

    def _lock_up_front(self, script: Script) -> None:
        """Before a transactional part: the tables it will lock, in the application's own
        foreign-key order (migrate/lock_order.py), so that it never waits for a referenced table
        while holding one that references it."""
        lock_order.lock(self.conn, lock_order.tables_to_lock(self.conn, script))

    def _holds(self, condition_sql: str) -> bool:
        return bool(_value(self.conn, f"SELECT ({condition_sql})"))

    # ---- the two places that change the database -------------------------------------------

    def _transactional(self, m: Migration, direction: Direction, allow_data_loss: bool = False) -> list[str]:
        """One transaction: the script's transactional SQL, the access model's grants, and the
        ledger row's new state. Whatever kills the run, the ledger says what committed.
        Returns the server's WARNINGs (the down scripts use them to name what they kept)."""
        script = m.script(direction)
        warnings: list[str] = []

        def collect(diag: psycopg.errors.Diagnostic) -> None:
            if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
                warnings.append(diag.message_primary)

        def run() -> None:
            warnings.clear()
            with self.conn.transaction():
                self._set_timeouts(self.settings.statement_timeout, local=True)
                self._recorded(m, direction, "before")
                if direction == Direction.DOWN:
                    self._check_guards(m, allow_data_loss)
                else:
                    self._lock_up_front(m.up)
                # One statement at a time, split by PostgreSQL's parser: the plan describes this list.
                for statement in script.statements:
                    self.conn.execute(statement)
                # Before COMMIT: a table the migration just created is never visible to another
                # session with the platform's default privileges (anon: ALL) still on it.
                access.apply_table_grants(self.conn)
                if direction == Direction.UP:
                    ledger.record(
                        self.conn,
                        version=m.version,
                        name=m.name,
                        checksum=m.checksum,
                        kind="applied",
                        target=self.target.name,
                        applied_by=applied_by(self.conn),
                        execution_ms=0,
                        state=ledger.State.STEPS_PENDING if script.steps else ledger.State.APPLIED,
                        down_checksum=m.down_checksum,
                    )
                elif script.steps:
                    ledger.set_state(self.conn, m.version, ledger.State.REVERTING)
                else:
                    ledger.forget(self.conn, m.version)
                self._recorded(m, direction, "after")

        self.conn.add_notice_handler(collect)
        try:
            self._retrying(f"{m.label}{' down' if direction == Direction.DOWN else ''}", run)
        finally:
            self.conn.remove_notice_handler(collect)
        # Returned, not logged: each caller says them once, with its result.
        return list(warnings)

    def _steps(self, m: Migration, direction: Direction, ms_before: int = 0) -> None:
        """The no-transaction steps, one by one, then the ledger's final state. Each step is
        idempotent, so a run killed or failed here converges by running the same command again."""
        script = m.script(direction)
        committed = (
            f"{m.label}'s transactional part is committed (ledger: steps-pending); fix the cause and run up again to finish"
            if direction == Direction.UP
            else f"{m.label}'s down is committed up to its drops (ledger: reverting); fix the cause and run down again to finish"
        )
        started = time.monotonic()
        self._set_timeouts(self.settings.step_timeout, local=False)
        try:
            for i, step in enumerate(script.steps, 1):
                label = f"{m.label}{' down' if direction == Direction.DOWN else ''} step {i}/{len(script.steps)}"
                self._retrying(label, partial(self._run_step, step), committed)
        finally:
            if not self.conn.closed:
                self.conn.execute("RESET lock_timeout; RESET statement_timeout")
        with self.conn.transaction():
            if direction == Direction.UP:
                ledger.set_state(
                    self.conn, m.version, ledger.State.APPLIED, ms_before + int((time.monotonic() - started) * 1000)
                )
            else:
                ledger.forget(self.conn, m.version)
                self._recorded(m, direction, "after")

    def _recorded(self, m: Migration, direction: Direction, when: str) -> None:
        if self.recorder is not None:
            getattr(self.recorder, when)(self.conn, m, direction)

    def _run_step(self, step: str) -> None:
        idx = _CONCURRENT_INDEX.search(step)
        if idx:
            # A failed or killed concurrent build leaves an INVALID index that IF NOT EXISTS would keep.
            # It lives in its table's schema, whatever the session's search_path: find and drop it there.
            invalid = self.conn.execute(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_index i"
                " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = %s AND NOT i.indisvalid"
                " AND c.relnamespace = (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass(%s))",
                (idx["index"], idx["table"]),
            ).fetchone()
            if invalid:
                self.log(f"dropping invalid index {invalid[0]}.{invalid[1]} left by an interrupted build")
                self.conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(*invalid)))
        tables = lock_order.step_tables_to_lock(self.conn, step)
        if not tables:
            self.conn.execute(step)
            return
        # A step that adds or drops a foreign key takes the referenced table in the application's
        # order, in one transaction with the key, as the transactional part does.
        with self.conn.transaction():
            lock_order.lock(self.conn, tables)
            self.conn.execute(step)

    @staticmethod
    def _each(todo: list[Migration], run: Callable[[Migration], _O]) -> list[_O]:
        """Run migration after migration. When one fails, the error also names what this run
        already committed: "X failed and was rolled back, nothing changed" is about X alone."""
        outcomes: list[_O] = []
        for m in todo:
            try:
                outcomes.append(run(m))
            except BundleError as exc:
                committed = [f"{o.version}_{o.name} {o.action}" for o in outcomes if isinstance(o, Outcome)]
                if not committed:
                    raise
                raise type(exc)(f"this run already committed {', '.join(committed)} (kept); then {exc}") from None
        return outcomes

    # ---- up --------------------------------------------------------------------------------

    def up(self, to: str | None = None) -> list[Outcome]:
        to = self.resolve_to(to, allow_base=False)
        with self.locked():
            self.validate()
            self._record_shipped_downs()
            done = ledger.entries(self.conn)
            self._refuse_reverting(done)
            todo = [
                m
                for m in self.migrations
                if (m.version not in done or done[m.version].state == ledger.State.STEPS_PENDING)
                and (to is None or int(m.version) <= int(to))
            ]
            return self._each(todo, lambda m: self._apply_locked(m, done.get(m.version)))

    def apply(self, m: Migration) -> Outcome | None:
        """Apply one migration (None if already applied); refuses if it drifted."""
        with self.locked():
            self._record_shipped_downs()
            entry = ledger.entries(self.conn).get(m.version)
            if entry is not None:
                if not m.matches(entry.checksum):
                    raise DriftError(
                        f"{m.label} is applied with a different checksum; applied migrations are immutable, ship a new one"
                    )
                self._refuse_reverting({m.version: entry})
                if entry.state == ledger.State.APPLIED:
                    return None
            return self._apply_locked(m, entry)

    def _refuse_reverting(self, done: dict[str, ledger.Entry]) -> None:
        half = [v for v, e in done.items() if e.state == ledger.State.REVERTING]
        if half:
            raise Refused(
                f"migration(s) {', '.join(half)} are half-reverted (ledger: reverting): {ledger.HINTS[ledger.State.REVERTING]}; "
                "then run up"
            )

    def _apply_locked(self, m: Migration, entry: ledger.Entry | None = None) -> Outcome:
        ledger.ensure(self.conn)
        if entry is not None and entry.state == ledger.State.STEPS_PENDING:
            self.log(f"{m.label}: transactional part already committed; resuming its steps")
            self._steps(m, Direction.UP, entry.execution_ms)
            self.log(f"{m.label}: applied")
            return Outcome(m.version, m.name, "resumed", 0)
        started = time.monotonic()
        if m.up.adopt_if and self._holds(m.up.adopt_if):
            with self.conn.transaction():
                self._recorded(m, Direction.UP, "before")
                ledger.record(
                    self.conn,
                    version=m.version,
                    name=m.name,
                    checksum=m.checksum,
                    kind="adopted",
                    target=self.target.name,
                    applied_by=applied_by(self.conn),
                    execution_ms=0,
                    down_checksum=m.down_checksum,
                )
                self._recorded(m, Direction.UP, "after")
            self.log(f"{m.label}: already present, adopted without running it")
            return Outcome(m.version, m.name, "adopted", 0)
        for cond in m.up.requires:
            if not self._holds(cond.sql):
                raise Refused(f"{m.label} not applied: {cond.message}")
        self.log(f"{m.label}: applying")
        notes = self._transactional(m, Direction.UP)
        if m.up.steps:
            self._steps(m, Direction.UP, int((time.monotonic() - started) * 1000))
        ms = int((time.monotonic() - started) * 1000)
        self.log(f"{m.label}: applied in {ms} ms")
        return Outcome(m.version, m.name, "applied", ms, tuple(notes))

    # ---- down ------------------------------------------------------------------------------

    def down(
        self, to: str | None = None, allow_data_loss: bool = False, accept_edited_down: bool = False
    ) -> list[Outcome | None]:
        """The outcomes, latest first; None for a migration whose ledger row was gone when its turn came."""
        to = self.resolve_to(to, allow_base=True)
        with self.locked():
            chosen, note = self.down_selection(ledger.entries(self.conn), to)
            if note:
                self.log(note)
            return self._each(chosen, lambda m: self._revert_locked(m, allow_data_loss, accept_edited_down))

    def down_selection(self, done: dict[str, ledger.Entry], to: str | None) -> tuple[list[Migration], str | None]:
        """What `down` reverts, latest first, and why it stops short. `--to` reverts every applied
        migration above it; a bare down only the latest, and never one of FOUNDATION (unless it is
        left reverting): so running it again stops instead of reverting more than was reviewed."""
        applied = [m for m in self.migrations if m.version in done]
        if to is not None:
            return [m for m in reversed(applied) if to == BASE or int(m.version) > int(to)], None
        last = applied[-1:]
        chosen = [m for m in last if m.version not in FOUNDATION or done[m.version].state == ledger.State.REVERTING]
        if last and not chosen:
            below = [m.version for m in applied[:-1]]
            return [], (
                f"a bare down does not revert {last[0].label}; name it explicitly: down --to "
                f"{below[-1] if below else BASE}" + (f" (or --to {BASE})" if below else "")
            )
        return chosen, None

    def revert(self, m: Migration, allow_data_loss: bool = False, accept_edited_down: bool = False) -> Outcome | None:
        with self.locked():
            return self._revert_locked(m, allow_data_loss, accept_edited_down)

    def _shipped(self, version: str) -> tuple[str, ...]:
        if self._shipped_downs is None:
            from . import files

            self._shipped_downs = files.shipped_downs()
        return self._shipped_downs.get(version, ())

    def _newest_shipped_down(self, m: Migration, entry: ledger.Entry) -> str | None:
        """The newest down this bundle ships, for a row that records no down (written before down
        checksums) or an earlier release's shipped one; None for any other row. That down is
        written to revert every up text its file accepts (x402:supersedes)."""
        shipped = self._shipped(m.version)
        if shipped and (entry.down_checksum is None or entry.down_checksum in shipped[:-1]):
            return shipped[-1]
        return None

    def _expected_down(self, m: Migration, entry: ledger.Entry) -> tuple[frozenset[str], str]:
        """The down checksums a revert of this ledger row may match, and where they come from."""
        if entry.down_checksum is None:
            # Recorded before down checksums existed: trust only a down this bundle has shipped.
            return (
                frozenset(self._shipped(m.version)),
                "one this bundle has ever shipped (the ledger row predates down checksums; run up to record it)",
            )
        newer = self._newest_shipped_down(m, entry)
        if newer is not None:
            return (
                frozenset({entry.down_checksum, newer}),
                "the one recorded when it was applied, or the newer one this bundle ships for it",
            )
        return frozenset({entry.down_checksum}), "the one recorded when it was applied"

    def _record_shipped_downs(self) -> None:
        """Rows written before down checksums existed, or with a down an earlier release shipped,
        get the newest down this bundle ships (from the package's list, not from sql/), on the
        next `up`: from then on they are checked as any row."""
        done = ledger.entries(self.conn)
        todo = [
            (m, e.down_checksum, newer)
            for m in self.migrations
            if (e := done.get(m.version)) is not None
            and m.matches(e.checksum)
            and (newer := self._newest_shipped_down(m, e)) is not None
        ]
        if not todo:
            return
        ledger.ensure(self.conn)
        with self.conn.transaction():
            for m, old, down in todo:
                ledger.record_down_checksum(self.conn, m.version, down, replacing=old)
        for m, old, _down in todo:
            self.log(
                f"{m.label}: recorded the down checksum this bundle ships "
                + ("(the ledger row predated down checksums)" if old is None else "(the row had an earlier release's)")
            )

    def _check_down_integrity(self, m: Migration, entry: ledger.Entry, accept_edited_down: bool) -> None:
        expected, source = self._expected_down(m, entry)
        if m.down_checksum in expected:
            return
        if accept_edited_down:
            self.log(f"{m.label}: running an edited down script, as acknowledged (--accept-edited-down)")
            return
        raise DriftError(
            f"{m.label} down refused, nothing changed: its down script is not {source}, and the down holds the "
            "data-loss guards. Restore the original down file, or review the difference and acknowledge it with "
            "scripts/migrate.py down --accept-edited-down"
        )

    def _refuse_under_higher(self, m: Migration, done: dict[str, ledger.Entry]) -> None:
        """A migration may build on any one below it, so none is reverted while one above it is
        recorded: a target changed under a deployed stack must not drop 001's tables under 005."""
        above = sorted(v for v in done if int(v) > int(m.version))
        if above:
            raise Refused(
                f"{m.label} down refused, nothing changed: migration(s) {', '.join(above)} above it are still "
                "recorded in the ledger and may depend on it; revert them first (latest first)"
            )

    def _revert_locked(self, m: Migration, allow_data_loss: bool, accept_edited_down: bool = False) -> Outcome | None:
        done = ledger.entries(self.conn)
        entry = done.get(m.version)
        if entry is None:
            return None
        if entry.kind == "adopted":
            with self.conn.transaction():
                self._recorded(m, Direction.DOWN, "before")
                ledger.forget(self.conn, m.version)
                self._recorded(m, Direction.DOWN, "after")
            self.log(f"{m.label}: was adopted, not created here; forgotten, nothing dropped")
            return Outcome(m.version, m.name, "forgotten", 0)
        if not m.matches(entry.checksum):
            raise DriftError(
                f"{m.label} drifted (its file changed since it was applied); refusing to run a down script that may not match"
            )
        self._refuse_under_higher(m, done)
        self._check_down_integrity(m, entry, accept_edited_down)
        ledger.ensure(self.conn)
        started = time.monotonic()
        notes: list[str] = []
        if entry.state == ledger.State.REVERTING:
            self.log(f"{m.label}: down's drops already committed; resuming its steps")
        else:
            self.log(f"{m.label}: reverting")
            notes = self._transactional(m, Direction.DOWN, allow_data_loss)
        if m.down.steps:
            self._steps(m, Direction.DOWN)
        ms = int((time.monotonic() - started) * 1000)
        self.log(f"{m.label}: reverted in {ms} ms")
        return Outcome(m.version, m.name, "reverted", ms, tuple(notes))

    def _count(self, guard_sql: str) -> int:
        # Inside the down transaction: a relation or column already gone holds no data to lose.
        try:
            with self.conn.transaction():
                return int(_value(self.conn, guard_sql))
        except (pgerr.UndefinedTable, pgerr.UndefinedColumn):
            return 0

    def _guard_counts(self, m: Migration) -> list[tuple[Guard, int]]:
        """Every guard that counts rows, with its count."""
        return [(g, n) for g in m.down.guards if (n := self._count(g.sql))]

    def _lock_guarded_tables(self, m: Migration) -> None:
        """Hold writers off the guarded tables until COMMIT, so that no row arrives between the
        guards' last count and the DROP: the down's up-front locks, in the app's foreign-key order."""
        self._lock_up_front(m.down)

    def _check_guards(self, m: Migration, allow_data_loss: bool) -> None:
        # First a plain count: its AccessShareLock blocks no writer, so a refused down, which
        # changes nothing, stalls nobody while it reads every row. Counted in the down's own
        # transaction, so its timeouts and retries apply and the owner check before it still goes first.
        if m.down.guards:
            self._refuse_on(m, self._guard_counts(m), allow_data_loss)
        # The revert will proceed: writers are held off from here to COMMIT, and the guards count
        # again, since rows may have arrived since the first count.
        self._lock_guarded_tables(m)
        fired = self._guard_counts(m)
        self._refuse_on(m, fired, allow_data_loss)
        for g, n in fired:
            self.log(f"{m.label}: allowed data loss: {n} {g.message}")

    def _refuse_on(self, m: Migration, fired: list[tuple[Guard, int]], allow_data_loss: bool) -> None:
        """Refuse when a guard forbids the down. The refusal names every guard that counted rows,
        data-loss ones included, so the operator also sees what a later --allow-data-loss would drop."""
        always = [f"{n} {g.message}" for g, n in fired if g.always]
        lossy = [f"{n} {g.message}" for g, n in fired if not g.always]
        if always:
            loss = ""
            if lossy:
                loss = (
                    ". Reverting would also lose data"
                    + (" (allowed by --allow-data-loss)" if allow_data_loss else ", which needs --allow-data-loss")
                    + ": "
                    + "; ".join(lossy)
                )
            raise Refused(f"{m.label} down refused, nothing changed: " + "; ".join(always) + loss)
        if lossy and not allow_data_loss:
            raise Refused(
                f"{m.label} down refused, nothing changed: "
                + "; ".join(lossy)
                + ". Back the data up, then allow data loss explicitly (--allow-data-loss, or Pulumi config allowDataLoss)"
            )
