"""PostgreSQL's lock modes, weakest to strongest, and their conflict tables: the vocabulary the
lock map, the planner and the view share. From "Explicit Locking" in PostgreSQL's documentation
(Table 13.2, conflicting table-level lock modes; Table 13.3, conflicting row-level locks). Every
sentence about who waits is derived from these tables, never written per mode.
"""

from __future__ import annotations

MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
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
EFFECTS = ("catalog", "create", "drop", "scan", "rewrite", "unknown")  # weakest to strongest for writers

# Table 13.2: the modes each mode conflicts with (the relation is symmetric).
CONFLICTS: dict[str, frozenset[str]] = {
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

# Row-level locks, weakest to strongest, as SELECT's locking clause names them.
ROW_MODES = ("FOR KEY SHARE", "FOR SHARE", "FOR NO KEY UPDATE", "FOR UPDATE")
KEY_SHARE, FOR_SHARE, NO_KEY_UPDATE, FOR_UPDATE = ROW_MODES
# Table 13.3.
ROW_CONFLICTS: dict[str, frozenset[str]] = {
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


def strongest(modes) -> str:
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


def strongest_row(modes) -> str:
    return max(modes, key=ROW_MODES.index)


def row_conflicts(a: str, b: str) -> bool:
    return b in ROW_CONFLICTS[a]


def row_writers_waiting(mode: str) -> list[str]:
    """The writes of a row that wait for a row lock in `mode`, from the conflict table."""
    return [what for what, taken in ROW_WRITERS if row_conflicts(mode, taken)]
