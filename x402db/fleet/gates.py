"""What a wave must pass before any of its databases changes: each target's plan (read only, as
`migrate.py plan` builds it), the lock gate over all of them, and promotion on evidence.

The lock gate's rule is data read off the plan: a statement that blocks writers (the lock table
of plan/locks.py), on an existing table of at least `maxRows` rows, doing a scan, a rewrite or
something the planner cannot predict. Such a statement holds every writer of that table for as
long as it reads or rewrites every row, so on a large table it is an outage, not a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import db
from ..errors import BundleError, ConnectError
from ..iac.bounded import reads
from ..migrate import files as migrations
from ..migrate.engine import Engine
from ..migrate.files import Direction
from ..migrate.settings import Settings
from ..plan.catalog import detect_target
from ..plan.locks import ANY, blocks_writes
from ..plan.model import Plan
from ..plan.planner import Planner, refusal_reasons
from . import endpoint
from .fleetfile import TargetSpec

# Effects that touch every row of the table they lock (plan/locks.py Effect), or may.
LONG_EFFECTS = ("scan", "rewrite", "unknown")
# A plan's actions that change the database (plan/model.py MigrationPlan.action).
CHANGING = ("apply", "resume")
# The table an unpredictable statement could hold longest: the largest by the planner's own
# estimate (reltuples), outside the system schemas.
LARGEST_TABLE = """
SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
ORDER BY c.reltuples DESC LIMIT 1
"""


@dataclass
class TargetPlan:
    verdict: str  # ready | nothing-to-do | refused | unreachable | failed
    reason: str = ""
    server_version: str = ""
    blocking: list[dict[str, Any]] = field(default_factory=list)  # statements that block writers
    ledger: list[dict[str, str]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # the versions the up would apply
    largest: tuple[str, int] | None = None  # the database's largest table: what an unknown statement may lock


def ledger_of(engine: Engine) -> list[dict[str, str]]:
    return [{"version": s.version, "state": str(s.state)} for s in engine.status()]


def plan_target(spec: TargetSpec) -> TargetPlan:
    """The target's up plan, changing nothing and waiting on no lock."""
    try:
        dsn = endpoint.dsn(spec)
        conn = db.connect(dsn, application_name="x402db-fleet")
    except ConnectError as exc:
        return TargetPlan("unreachable", str(exc))
    cfg = endpoint.stack_config(spec)
    try:
        with conn, reads(conn, "the fleet's plan"):
            version = conn.execute("SHOW server_version").fetchone()
            engine = Engine(
                conn, migrations.load(), detect_target(conn, cfg.target), Settings(lock_timeout=cfg.lock_timeout)
            )
            plan = Planner(engine).build(Direction.UP)
            largest = conn.execute(LARGEST_TABLE).fetchone()
            result = TargetPlan(
                "refused" if plan.verdict == "refused" else plan.verdict,
                "; ".join(refusal_reasons(plan)) if plan.verdict == "refused" else "",
                str(version[0]).split()[0] if version else "",
                blocking_statements(plan),
                ledger_of(engine),
                [m.version for m in plan.migrations if m.action in CHANGING],
                (largest[0], max(0, int(largest[1]))) if largest else None,
            )
    except BundleError as exc:
        return TargetPlan("failed", str(exc))
    except Exception as exc:  # a dropped connection mid-plan is the server going away
        if db.is_connection_failure(exc):
            return TargetPlan("unreachable", f"lost the connection to {endpoint.label(spec)}: {db.libpq_reason(exc)}")
        raise
    return result


def ledger_now(spec: TargetSpec) -> list[dict[str, str]] | None:
    """The target's ledger, per migration of sql/, read only; None when it cannot be read."""
    try:
        with db.connect(endpoint.dsn(spec), application_name="x402db-fleet") as conn, reads(conn, "the ledger"):
            cfg = endpoint.stack_config(spec)
            return ledger_of(Engine(conn, migrations.load(), detect_target(conn, cfg.target)))
    except Exception:  # unreachable, or gone since: the report keeps what the run last read
        return None


def blocking_statements(plan: Plan) -> list[dict[str, Any]]:
    """Every statement of the changes the plan would make that blocks writers of an existing table."""
    found = []
    for m in plan.migrations:
        if m.action not in CHANGING:
            continue
        for step in m.statements:
            for lock in step.locks:
                if lock.new or not blocks_writes(lock.mode) and lock.relation != ANY:
                    continue
                found.append(
                    {
                        "migration": f"{m.version}_{m.name}",
                        "statement": " ".join(step.sql.split())[:120],
                        "table": "any table" if lock.relation == ANY else lock.relation,
                        "mode": lock.mode,
                        "rows": lock.rows_estimate,
                        "effect": step.effect,
                    }
                )
    return found


def lock_gate(plans: dict[str, TargetPlan], max_rows: int | None) -> list[str]:
    """One sentence per statement the gate refuses, naming target, statement, table and rows."""
    if max_rows is None:
        return []
    refusals = []
    for name, plan in plans.items():
        for s in long_blocking(plan):
            table, rows = s["table"], s["rows"]
            if table == "any table":  # it may lock whatever it likes: judged by the largest there is
                table, rows = plan.largest or ("no table", 0)
                table = f"any table (the largest: {table})"
            if rows is not None and rows < max_rows:
                continue
            count = "an unknown number of" if rows is None else f"{rows:,}"
            refusals.append(
                f"{name}: {s['migration']} `{s['statement']}` takes {s['mode']} on {table} ({count} rows, "
                f"lockGate.maxRows {max_rows:,}) and {_does(s['effect'])} while every writer waits"
            )
    return refusals


def long_blocking(plan: TargetPlan) -> list[dict[str, Any]]:
    """The statements that block writers for as long as they take on a table's rows."""
    return [s for s in plan.blocking if s["effect"] in LONG_EFFECTS]


def locks_summary(plan: TargetPlan) -> str:
    """The locks column: how many statements block writers, and the longest-held one."""
    if not plan.blocking:
        return "no writer waits"
    long = long_blocking(plan)
    brief = len(plan.blocking) - len(long)
    parts = [f"{brief} brief"] if brief else []
    if long:
        worst = max(long, key=lambda s: s["rows"] or 0)
        rows = "?" if worst["rows"] is None else f"{worst['rows']:,}"
        parts.append(f"{len(long)} long (worst {worst['effect']} of {worst['table']}, {rows} rows)")
    return "writers wait: " + ", ".join(parts)


def _does(effect: str) -> str:
    return {"scan": "reads every row", "rewrite": "rewrites every row"}.get(
        effect, "does what the planner cannot predict"
    )


def evidence_problem(release: str, wave: str, evidence: dict[str, dict[str, Any] | None]) -> str | None:
    """Why the evidence of wave `wave`'s targets does not promote `release`, or None when it does."""
    if not evidence:  # a select that matched nothing vouches for nothing
        return f"wave {wave} has no target, so it holds no evidence for release {release}"
    missing = [name for name, e in evidence.items() if not e]
    if missing:
        return f"wave {wave} holds no evidence for {', '.join(missing)}: run wave {wave} of this release first"
    other = [f"{name} ({e['release']})" for name, e in evidence.items() if e and e.get("release") != release]
    if other:
        return f"wave {wave}'s evidence is for another release: {', '.join(other)}; this release is {release}"
    failed = [name for name, e in evidence.items() if e and e.get("smoke") != "passed"]
    if failed:
        return f"wave {wave}'s smoke did not pass on {', '.join(failed)} for release {release}"
    return None
