"""PostgreSQL's lock modes, weakest to strongest, and their conflict tables: the vocabulary the
lock map, the planner and the view share. From "Explicit Locking" in PostgreSQL's documentation
(Table 13.2, conflicting table-level lock modes; Table 13.3, conflicting row-level locks). Every
sentence about who waits is derived from these tables, never written per mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Mode(StrEnum):
    """A table-level lock mode, named as pg_locks names it (the value is what JSON and the view print)."""

    ACCESS_SHARE = "AccessShareLock"
    ROW_SHARE = "RowShareLock"
    ROW_EXCLUSIVE = "RowExclusiveLock"
    SHARE_UPDATE_EXCLUSIVE = "ShareUpdateExclusiveLock"
    SHARE = "ShareLock"
    SHARE_ROW_EXCLUSIVE = "ShareRowExclusiveLock"
    EXCLUSIVE = "ExclusiveLock"
    ACCESS_EXCLUSIVE = "AccessExclusiveLock"


class Effect(StrEnum):
    """What a statement does to the rows already there, weakest to strongest for writers."""

    CATALOG = "catalog"
    CREATE = "create"
    DROP = "drop"
    SCAN = "scan"
    REWRITE = "rewrite"
    UNKNOWN = "unknown"


MODES = tuple(Mode)  # weakest to strongest: the definition order
(
    ACCESS_SHARE,
    ROW_SHARE,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    EXCLUSIVE,
    ACCESS_EXCLUSIVE,
) = MODES
ANY = "*"  # an unknown statement may lock any relation
EFFECTS = tuple(Effect)

# Table 13.2: the modes each mode conflicts with (the relation is symmetric).
CONFLICTS: dict[str, frozenset[Mode]] = {
    ACCESS_SHARE: frozenset({ACCESS_EXCLUSIVE}),
    ROW_SHARE: frozenset({EXCLUSIVE, ACCESS_EXCLUSIVE}),
    ROW_EXCLUSIVE: frozenset({SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    SHARE_UPDATE_EXCLUSIVE: frozenset(
        {SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}
    ),
    SHARE: frozenset({ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    SHARE_ROW_EXCLUSIVE: frozenset(
        {ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}
    ),
    EXCLUSIVE: frozenset(MODES[1:]),
    ACCESS_EXCLUSIVE: frozenset(MODES),
}
# Who takes each mode (the documentation's list of commands): facts about commands, not about
# conflicts. A sentence names the takers of the modes CONFLICTS says a lock blocks.
TAKERS = {
    ACCESS_SHARE: "SELECT",
    ROW_SHARE: "SELECT FOR UPDATE/SHARE",
    ROW_EXCLUSIVE: "INSERT, UPDATE, DELETE, MERGE",
    SHARE_UPDATE_EXCLUSIVE: "VACUUM, ANALYZE, CREATE INDEX CONCURRENTLY, VALIDATE CONSTRAINT",
    SHARE: "CREATE INDEX",
    SHARE_ROW_EXCLUSIVE: "CREATE TRIGGER, ADD FOREIGN KEY",
    EXCLUSIVE: "REFRESH MATERIALIZED VIEW CONCURRENTLY",
    ACCESS_EXCLUSIVE: "most ALTER TABLE, DROP, TRUNCATE, VACUUM FULL",
}


class RowMode(StrEnum):
    """A row-level lock, as SELECT's locking clause names it."""

    KEY_SHARE = "FOR KEY SHARE"
    FOR_SHARE = "FOR SHARE"
    NO_KEY_UPDATE = "FOR NO KEY UPDATE"
    FOR_UPDATE = "FOR UPDATE"


ROW_MODES = tuple(RowMode)  # weakest to strongest
KEY_SHARE, FOR_SHARE, NO_KEY_UPDATE, FOR_UPDATE = ROW_MODES
# Table 13.3.
ROW_CONFLICTS: dict[str, frozenset[RowMode]] = {
    KEY_SHARE: frozenset({FOR_UPDATE}),
    FOR_SHARE: frozenset({NO_KEY_UPDATE, FOR_UPDATE}),
    NO_KEY_UPDATE: frozenset({FOR_SHARE, NO_KEY_UPDATE, FOR_UPDATE}),
    FOR_UPDATE: frozenset(ROW_MODES),
}
# What another session's write of a row takes on it (the documentation, "Row-Level Locks").
ROW_WRITERS = (
    ("UPDATE", NO_KEY_UPDATE),  # of columns outside any unique index
    ("UPDATE of a key column", FOR_UPDATE),
    ("DELETE", FOR_UPDATE),
    ("SELECT FOR SHARE", FOR_SHARE),
    ("SELECT FOR UPDATE", FOR_UPDATE),
    ("a foreign-key check (INSERT or UPDATE of a row referencing it)", KEY_SHARE),
)

# A row this transaction inserted is invisible to others, but another session inserting the same
# unique key waits for this transaction to end (the uniqueness check waits on it).
SAME_KEY_INSERT = "INSERT of one of the same unique keys"


def strongest(modes: Iterable[str]) -> str:
    return max(modes, key=MODES.index)


def conflicts(a: str, b: str) -> bool:
    return b in CONFLICTS[a]


def blocks_writes(mode: str) -> bool:
    return conflicts(mode, ROW_EXCLUSIVE)


def blocks_reads(mode: str) -> bool:
    return conflicts(mode, ACCESS_SHARE)


def blocked_by(mode: str) -> list[str]:
    """The commands a table lock in `mode` makes wait, from the conflict table."""
    return [TAKERS[m] for m in MODES if conflicts(mode, m)]


def strongest_row(modes: Iterable[str]) -> str:
    return max(modes, key=ROW_MODES.index)


def row_conflicts(a: str, b: str) -> bool:
    return b in ROW_CONFLICTS[a]


def row_writers_waiting(mode: str) -> list[str]:
    """The writes of a row that wait for a row lock in `mode`, from the conflict table."""
    return [what for what, taken in ROW_WRITERS if row_conflicts(mode, taken)]
