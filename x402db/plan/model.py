"""The plan as data: what `migrate.py plan --json` prints and the view renders. Plain dataclasses,
no database: whatever builds a plan (the planner) and whatever shows it (the view, Pulumi, the
local deploy) agree on this shape and on nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Lock:
    relation: str
    mode: str
    rows_estimate: int | None = None
    bytes: int | None = None
    new: bool = False  # created by this migration's own transaction: invisible to others until COMMIT


@dataclass
class RowLock:
    """Row locks a statement takes on an existing relation: held until COMMIT in the migration's
    transaction, until the statement ends for a no-transaction step."""

    relation: str
    mode: str  # FOR KEY SHARE | FOR SHARE | FOR NO KEY UPDATE | FOR UPDATE
    rows: str  # all | where | returned | conflicting | matched | referenced | referencing | inserted
    which: str  # the same, in words
    until: str  # COMMIT | end of statement
    waits: list[str] = field(default_factory=list)  # the writes of such a row that wait (from the conflict table)


@dataclass
class Step:
    phase: str  # transaction | no-transaction
    sql: str
    locks: list[Lock]
    effect: str
    rows_estimate: int | None
    bytes: int | None
    writers: str
    kind: str = ""
    source: str = (
        "file"  # file | engine (the LOCK between the guards' two counts) | guard (its count query) | access (grants)
    )
    note: str = ""
    row_locks: list[RowLock] = field(default_factory=list)


@dataclass
class GuardCheck:
    kind: str  # data-loss | always
    count: int | None
    message: str
    verdict: str  # pass | refuse | allowed | unknown


@dataclass
class MigrationPlan:
    version: str
    name: str
    verdict: str  # ready | refused
    reasons: list[str]
    statements: list[Step]
    guards: list[GuardCheck]
    action: str = (
        "apply"  # apply | adopt | resume (steps left) | revert | finish-revert (steps left) | forget | refuse (drifted)
    )
    requires: list[dict] = field(default_factory=list)
    verdict_with_allow_data_loss: str | None = None


@dataclass
class Plan:
    direction: str
    target: str
    verdict: str  # ready | refused | nothing-to-do
    migrations: list[MigrationPlan]
    engine: dict
    blocked_reads: list[str] = field(default_factory=list)
    verdict_with_allow_data_loss: str | None = None

    def as_json(self) -> dict:
        return asdict(self)
