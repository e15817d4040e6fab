"""`migrate.py plan`: what up or down would do, statement by statement, before anything runs.

The plan runs in one READ ONLY transaction with a tiny lock_timeout. It reads the catalog and,
for a down, counts the guards' rows (AccessShareLock, the weakest lock, which only a DDL
statement's AccessExclusiveLock can block). Nothing here waits: a read that would block is
reported as blocked and the plan moves on. `require_ready` is the gate on the plan's verdict:
Pulumi's create and delete and `make deploy` stop there, before the engine takes any lock.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from .. import access
from ..errors import BundleError, DriftError, Refused
from ..migrate import ledger, lock_order, sqlparse
from ..migrate.engine import Engine
from ..migrate.files import Migration, Script
from .catalog import PLAN_LOCK_TIMEOUT, PLAN_STATEMENT_TIMEOUT, WOULD_WAIT, LiveCatalog, Reader, Sizes
from .lockmap import Prediction, simulate
from .locks import ANY, blocks_writes, strongest
from .model import GuardCheck, Lock, MigrationPlan, Plan, Step
from .view import row_locks, writers_sentence


def _step(
    p: Prediction,
    stmt_sql: str,
    phase: str,
    sizes: Sizes,
    lock_timeout: str,
    new: set[str],
    held: dict[str, str],
    source: str = "file",
) -> Step:
    locks = [
        Lock(rel, mode, *(sizes.of(rel) if rel != ANY and rel not in new else (None, None)), new=rel in new)
        for rel, mode in p.locks.items()
    ]
    existing = [rel for rel in p.locks if rel != ANY and rel not in new]
    rows = size = None
    if existing:  # the figures of the largest relation it touches
        rows, size = sizes.of(max(existing, key=lambda r: ((sizes.of(r)[0] or 0), r)))
    return Step(
        phase,
        stmt_sql,
        locks,
        p.effect,
        rows,
        size,
        writers_sentence(p, phase, new, held, sizes, lock_timeout),
        kind=p.kind,
        source=source,
        note=p.note,
        row_locks=row_locks(p, phase, new, sizes),
    )


def _regclass_substituted(condition: str, catalog: LiveCatalog) -> str:
    """A condition evaluated now, about a database that earlier migrations of this same run will
    have changed: to_regclass('x') of a relation the plan creates or drops is replaced by what it
    will return then."""

    def sub(m: re.Match) -> str:
        name = m.group(1)
        rel = name if "." in name else catalog.qualify(None, name)
        if rel in catalog.created:
            return "'pg_catalog.pg_class'::regclass"
        if rel in catalog.dropped:
            return "NULL::regclass"
        return m.group(0)

    return re.sub(r"to_regclass\('([^']+)'\)", sub, condition)


class Planner:
    def __init__(self, engine: Engine, single: bool = False) -> None:
        # single: the engine holds the one migration Pulumi's resource applies or reverts, and
        # (as Engine.apply does) only that migration's own drift matters.
        self.single = single
        self.engine = engine
        self.conn = engine.conn
        self.settings = engine.settings

    def engine_settings(self) -> dict:
        s = self.settings
        return {
            "lock_timeout": s.lock_timeout,
            "statement_timeout": s.statement_timeout,
            "step_timeout": s.step_timeout,
            "retries": s.retries,
            "backoff_s": s.backoff_s,
            "backoff_max_s": 8.0,
            "lock_wait_s": s.lock_wait_s,
            "advisory_lock": "one migration run at a time (pg_try_advisory_lock, waits up to lock_wait_s)",
            "ledger": "its row is written in the same transaction as the work it records (RowExclusiveLock on "
            "x402_private.schema_migrations, a table no application session uses)",
        }

    def build(self, direction: str, to: str | None = None, allow_data_loss: bool = False) -> Plan:
        try:
            return self._build(direction, to, allow_data_loss)
        except pgerr.LockNotAvailable:
            # A system catalog itself is locked (VACUUM FULL, a long DDL on pg_class...): rare,
            # and waiting is what a plan must never do.
            raise BundleError(WOULD_WAIT) from None

    def _build(self, direction: str, to: str | None, allow_data_loss: bool) -> Plan:
        plans: list[MigrationPlan] = []
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION READ ONLY")
            self.conn.execute(f"SET LOCAL lock_timeout = '{PLAN_LOCK_TIMEOUT}'")
            self.conn.execute(f"SET LOCAL statement_timeout = '{PLAN_STATEMENT_TIMEOUT}'")
            reader = Reader(self.conn)
            catalog = LiveCatalog(self.conn)
            sizes = Sizes(reader)
            plans = (
                self._up(to, reader, catalog, sizes)
                if direction == "up"
                else self._down(to, allow_data_loss, reader, catalog, sizes)
            )
            raise psycopg.Rollback()  # read only: nothing to keep
        verdict = (
            "nothing-to-do" if not plans else ("refused" if any(m.verdict == "refused" for m in plans) else "ready")
        )
        plan = Plan(direction, self.engine.target.name, verdict, plans, self.engine_settings(), reader.blocked)
        if direction == "down" and plans:
            plan.verdict_with_allow_data_loss = (
                "refused" if any(m.verdict_with_allow_data_loss == "refused" for m in plans) else "ready"
            )
        return plan

    # ---- up --------------------------------------------------------------------------------

    def _up(self, to: str | None, reader: Reader, catalog: LiveCatalog, sizes: Sizes) -> list[MigrationPlan]:
        to = self.engine.resolve_to(to, allow_base=False)
        done = ledger.entries(self.conn)
        drift = [
            s for s in self.engine.status() if s.state == "drifted" or (s.state == "missing-file" and not self.single)
        ]
        half = [
            v
            for v, e in done.items()
            if e.state == "reverting" and (not self.single or v in {m.version for m in self.engine.migrations})
        ]
        todo = [
            m
            for m in self.engine.migrations
            if (m.version not in done or done[m.version].state == "steps-pending")
            and (to is None or int(m.version) <= int(to))
        ]
        plans = []
        if not todo:  # nothing to apply, yet up refuses a half-reverted or drifted ledger: so does its plan
            for v in half:
                reason = f"migration {v} is half-reverted (ledger: reverting): {ledger.HINTS['reverting']}; then run up"
                plans.append(self._finish(MigrationPlan(v, done[v].name, "ready", [reason], [], [], action="refuse")))
            for s in (s for s in drift if s.state == "drifted"):
                plans.append(
                    self._finish(
                        MigrationPlan(
                            s.version,
                            s.name,
                            "ready",
                            [
                                f"drift: {s.version}_{s.name} is drifted; up refuses until the original file is restored"
                                + (
                                    " (it was edited after its x402:supersedes was written, which voids it)"
                                    if s.stale_supersedes
                                    else ""
                                )
                            ],
                            [],
                            [],
                            action="refuse",
                        )
                    )
                )
        for m in todo:
            mp = MigrationPlan(m.version, m.name, "ready", [], [], [])
            for s in drift:
                mp.reasons.append(
                    f"drift: {s.version}_{s.name} is {s.state}; up refuses until the original file is restored"
                )
            for v in half:
                mp.reasons.append(f"migration {v} is half-reverted (ledger: reverting): {ledger.HINTS['reverting']}")
            if m.version in done:  # steps-pending: the transaction committed, only the steps are left
                mp.action = "resume"
                mp.statements = self._statements(m, m.up, catalog, sizes, steps_only=True)
                plans.append(self._finish(mp))
                continue
            if m.up.adopt_if:
                adopt, blocked = reader.value(
                    f"{m.label} adopt-if", f"SELECT ({_regclass_substituted(m.up.adopt_if, catalog)})"
                )
                if adopt:
                    mp.action = "adopt"
                    plans.append(self._finish(mp))
                    continue
            for cond in m.up.requires:
                holds, blocked = reader.value(
                    f"{m.label} require", f"SELECT ({_regclass_substituted(cond.sql, catalog)})"
                )
                mp.requires.append(
                    {"sql": cond.sql, "message": cond.message, "holds": None if blocked else bool(holds)}
                )
                if blocked:
                    mp.reasons.append(f"precondition not evaluated (a lock is held): {cond.message}")
                elif not holds:
                    mp.reasons.append(f"precondition fails: {cond.message}")
            mp.statements = self._statements(m, m.up, catalog, sizes)
            plans.append(self._finish(mp))
        return plans

    # ---- down ------------------------------------------------------------------------------

    def _down(
        self, to: str | None, allow_data_loss: bool, reader: Reader, catalog: LiveCatalog, sizes: Sizes
    ) -> list[MigrationPlan]:
        to = self.engine.resolve_to(to, allow_base=True)
        done = ledger.entries(self.conn)
        chosen, _note = self.engine.down_selection(done, to)
        plans = []
        for m in chosen:
            entry = done[m.version]
            mp = MigrationPlan(m.version, m.name, "ready", [], [], [], action="revert")
            if entry.kind == "adopted":
                mp.action = "forget"
                plans.append(self._finish(mp, allow_data_loss))
                continue
            if not m.matches(entry.checksum):
                mp.reasons.append(
                    f"drift: {m.label}'s file changed since it was applied; down refuses to run a script that may not match"
                )
            try:
                self.engine._check_down_integrity(m, entry, accept_edited_down=False)
            except DriftError as exc:
                mp.reasons.append(f"edited down: {exc}")
            if entry.state == "reverting":  # the drops committed; only the steps are left
                mp.action = "finish-revert"
                mp.statements = self._statements(m, m.down, catalog, sizes, steps_only=True)
                plans.append(self._finish(mp, allow_data_loss))
                continue
            for g in m.down.guards:
                count, blocked = reader.value(f"{m.label} guard", g.sql)
                kind = "always" if g.always else "data-loss"
                if blocked:
                    verdict = "unknown"
                elif not count:
                    verdict = "pass"
                else:
                    verdict = "refuse" if g.always or not allow_data_loss else "allowed"
                mp.guards.append(GuardCheck(kind, None if blocked else int(count), g.message, verdict))
                if verdict in ("refuse", "unknown"):
                    mp.reasons.append(
                        f"guard ({kind}): {'count not read, a lock is held' if blocked else count} {g.message}"
                    )
            mp.statements = self._statements(m, m.down, catalog, sizes, down=True)
            plans.append(self._finish(mp, allow_data_loss))
        return plans

    def _finish(self, mp: MigrationPlan, allow_data_loss: bool = False) -> MigrationPlan:
        mp.verdict = "refused" if mp.reasons else "ready"
        if mp.action in ("revert", "forget"):
            other = [r for r in mp.reasons if not r.startswith("guard (data-loss)")]
            mp.verdict_with_allow_data_loss = "refused" if other else "ready"
        return mp

    def _statements(
        self,
        m: Migration,
        script: Script,
        catalog: LiveCatalog,
        sizes: Sizes,
        down: bool = False,
        steps_only: bool = False,
    ) -> list[Step]:
        steps: list[Step] = []
        held: dict[str, str] = {}  # write-blocking locks the migration's transaction holds so far
        new: set[str] = set()  # relations this migration's transaction creates: nobody else sees them yet

        def add(stmt: sqlparse.Statement, phase: str, source: str = "file") -> None:
            p = simulate(stmt, catalog)
            if phase == "transaction":
                new.update(p.changes.created)
            steps.append(
                _step(
                    p,
                    stmt.sql,
                    phase,
                    sizes,
                    self.settings.lock_timeout,
                    new if phase == "transaction" else set(),
                    held if phase == "transaction" else {},
                    source,
                )
            )
            if phase == "transaction":
                for r, mode in p.locks.items():
                    if blocks_writes(mode):
                        held[r] = strongest([held.get(r, mode), mode])

        def engine_locks(tables: list[tuple[str, str]], phase: str) -> None:
            # The engine's own locks, in its order (migrate/lock_order.py); read from the live
            # foreign keys, so a table this run creates before the migration is not among them.
            for schema, table in tables:
                if catalog.exists(f"{schema}.{table}"):
                    name = sql.Identifier(schema, table).as_string(self.conn)
                    for s in sqlparse.statements(f"LOCK TABLE {name} IN {lock_order.MODE} MODE", m.label):
                        add(s, phase, "engine")

        if not steps_only:

            def up_front() -> None:
                engine_locks(lock_order.tables_to_lock(self.conn, script), "transaction")

            if down:
                # The engine's order (Engine._check_guards): the guards count first under no lock
                # that blocks a writer, and a refused down stops there; only a down that proceeds
                # takes its up-front locks and counts again before its drops.
                for g in script.guards:
                    for s in sqlparse.statements(g.sql, m.label):
                        add(s, "transaction", "guard")
                up_front()
                for g in script.guards:
                    for s in sqlparse.statements(g.sql, m.label):
                        add(s, "transaction", "guard")
            else:
                up_front()
            for s in sqlparse.statements(script.transactional, m.label):
                add(s, "transaction")
            for text in self._grants(catalog, new):
                for s in sqlparse.statements(text, m.label):
                    add(s, "transaction", "access")
        for step in script.steps:
            # A step that adds or drops a foreign key: the engine's locks first, in the step's transaction.
            engine_locks(lock_order.step_tables_to_lock(self.conn, step), "no-transaction")
            for s in sqlparse.statements(step, m.label):
                add(s, "no-transaction")
        return steps

    def _grants(self, catalog: LiveCatalog, new: set[str]) -> list[str]:
        """The access model's grants the engine runs before COMMIT (access.apply_table_grants):
        for each table of the model that exists then and whose privileges differ from it. A table
        this transaction creates carries the schema's default privileges, so it always needs them.
        A grant to PUBLIC, held now or given at CREATE by a default privilege, is revoked first."""
        out = []
        for schema, table in access.model_tables():
            rel = f"{schema}.{table}"
            if not catalog.exists(rel):
                continue
            fresh = rel in new or rel in catalog.created
            if access.public_by_default(self.conn, schema) if fresh else access.public_holds(self.conn, schema, table):
                out.append(access.revoke_public_sql(schema, table).as_string(self.conn))
        for g in access.TABLE_GRANTS:
            rel = f"{g.schema}.{g.table}"
            if not catalog.exists(rel):
                continue
            if rel not in new and rel not in catalog.created and access.satisfied(self.conn, g):
                continue
            out.append(access.grant_sql(g).as_string(self.conn))
        return out


def refusal_reasons(plan: Plan) -> list[str]:
    """Why a refused plan refuses, then what --allow-data-loss already allows: a refusal names
    every guard that counted rows, so the operator sees all that a revert would lose."""
    reasons = [f"{m.version}_{m.name}: {r}" for m in plan.migrations for r in m.reasons]
    return reasons + [
        f"{m.version}_{m.name}: guard ({g.kind}, allowed): {g.count} {g.message}"
        for m in plan.migrations
        for g in m.guards
        if g.verdict == "allowed"
    ]


def require_ready(
    engine: Engine, direction: str, allow_data_loss: bool = False, what: str = "", single: bool = False
) -> Plan:
    """Build the plan and refuse, with its reasons, when it would refuse: Pulumi's create and
    delete and `make deploy` stop here, before the engine takes any lock."""
    plan = Planner(engine, single).build(direction, allow_data_loss=allow_data_loss)
    if plan.verdict == "refused":
        reasons = refusal_reasons(plan)
        hint = ""
        if direction == "down" and plan.verdict_with_allow_data_loss == "ready" and not allow_data_loss:
            hint = ". Back the data up, then allow data loss explicitly (--allow-data-loss, or Pulumi config allowDataLoss)"
        raise Refused(f"{what or direction} refused by its plan, nothing changed: " + "; ".join(reasons) + hint)
    return plan
