"""PostgreSQL's table lock modes, weakest to strongest, and what each blocks: the vocabulary the
lock map, the planner and the view share. From "Explicit Locking" in PostgreSQL's documentation.
"""
from __future__ import annotations

MODES = (
    "AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
    "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock",
)
ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE = MODES
ANY = "*"  # an unknown statement may lock any relation
EFFECTS = ("catalog", "create", "drop", "scan", "rewrite", "unknown")  # weakest to strongest for writers


def strongest(modes) -> str:
    return max(modes, key=MODES.index)


def blocks_writes(mode: str) -> bool:
    return MODES.index(mode) >= MODES.index(SHARE)  # conflicts with RowExclusiveLock


def blocks_reads(mode: str) -> bool:
    return mode == ACCESS_EXCLUSIVE  # the only mode that conflicts with AccessShareLock
