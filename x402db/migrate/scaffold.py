"""`migrate.py new NAME`: the files of a new migration, with the directives written out but off.

A migration is its files and nothing else: no Python names it, and its version is the next free
number. The directives are shown commented with a `#` after the `--`, which `files.py` does not
read as a directive, so the skeleton applies and reverts as it is (it runs no SQL) until the
author writes the change.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import SQL_DIR
from ..errors import UsageError
from .files import load

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")

UP = """\
-- {version}_{name}: <what this migration changes, and why>
--
-- Directives: the engine reads a comment line that starts with "-- x402:". Each is off below; delete
-- the "#" to turn one on (x402db/migrate/files.py documents them all).
-- #x402:targets: postgres
--     apply only on these targets (supabase, postgres; default: all)
-- #x402:require: to_regclass('public.some_table') IS NOT NULL | some_table must exist first
--     refuse up, changing nothing, unless the SQL is true
-- #x402:adopt-if: to_regclass('public.my_new_table') IS NOT NULL
--     the change is already there (made by hand): record it, run nothing
--
-- Everything above the no-transaction line runs in one transaction, statement by statement under a
-- short lock_timeout, and is retried whole when a lock is busy. Statements that cannot run in a
-- transaction, or that must not hold their lock for long (CREATE INDEX CONCURRENTLY, VALIDATE
-- CONSTRAINT on a large table), go below it and run one by one; keep them idempotent
-- (IF NOT EXISTS), since a run that stops there resumes them.
--
-- #x402:no-transaction

"""

DOWN = """\
-- {version}_{name}: the revert of {version}_{name}.up.sql; it drops exactly what the up made.
--
-- Directives, off until the "#" is deleted (x402db/migrate/files.py):
-- #x402:guard data-loss: SELECT count(*) FROM public.my_new_table | rows of my_new_table
--     refuse down while the count is above 0, unless the operator allows data loss
-- #x402:guard always: SELECT count(*) FROM public.my_new_table WHERE keep | rows that must stay
--     refuse down while the count is above 0, always
-- #x402:lock: public.my_new_table
--     lock these tables against writes before the guards count again

"""

VERIFY = """\
-- {version}_{name}: behaviour that the catalog cannot show (what a role may read or write).
--
-- Full smoke (scripts/smoke.py without --read-only) runs this file in one transaction that it
-- rolls back, after the catalog checks. Each statement is one check: it passes when it runs, and
-- fails with the message of the exception it raises. Act as a role the way PostgREST does:
--
--   SELECT set_config('role', 'authenticated', true),
--          set_config('request.jwt.claims', '{{"sub": "00000000-0000-0000-0000-000000000001"}}', true);
--
-- DO $$
-- BEGIN
--   IF EXISTS (SELECT 1 FROM public.my_new_table WHERE owner <> auth.uid()) THEN
--     RAISE EXCEPTION 'authenticated reads another user''s rows of my_new_table';
--   END IF;
-- END
-- $$;
"""


@dataclass(frozen=True)
class Created:
    version: str
    name: str
    paths: tuple[Path, ...]


def next_version(sql_dir: Path) -> str:
    versions = [int(m.version) for m in load(sql_dir)]
    following = max(versions, default=0) + 1
    if following > 999:
        raise UsageError("no migration version is left above 999")
    return f"{following:03d}"


def _write_new(path: Path, text: str) -> None:
    # O_EXCL: an existing file (or a second `new` racing this one) is never overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def create(name: str, sql_dir: Path = SQL_DIR, verify: bool = True) -> Created:
    """Write the skeleton of the next migration; all of its files, or none."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            "a migration name is lowercase letters, digits and underscores, starting with a letter, "
            "at most 63 characters (e.g. add_model_catalog_sync)"
        )
    version = next_version(sql_dir)
    texts = {"up": UP, "down": DOWN, **({"verify": VERIFY} if verify else {})}
    written: list[Path] = []
    try:
        for kind, template in texts.items():
            path = sql_dir / f"{version}_{name}.{kind}.sql"
            _write_new(path, template.format(version=version, name=name))
            written.append(path)
    except FileExistsError:
        for path in written:
            path.unlink(missing_ok=True)
        raise UsageError(f"a file of migration {version} already exists in {sql_dir}; nothing was written") from None
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    # A second `new` under another name may have taken the same number at the same instant:
    # the one that finds a rival removes its own files, so sql/ never holds two of one version.
    rivals = [p for p in sql_dir.glob(f"{version}_*.up.sql") if p != written[0]]
    if rivals:
        for path in written:
            path.unlink(missing_ok=True)
        raise UsageError(
            f"another migration took version {version} at the same time; nothing was written, run new again"
        )
    return Created(version, name, tuple(written))
