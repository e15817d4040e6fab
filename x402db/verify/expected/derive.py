"""The expectation: what each shipped migration leaves in a database, derived from its own SQL.

The migrations run through the same engine as a deploy (one `up(to=version)` at a time, then the
access model's grants, as the local deploy and the Pulumi program do) in a scratch database, and
the catalog is read as facts (facts.py) before and after each one. What a migration touched or
dropped is what it owns; a later migration that touches the same fact takes it over, so each
fact is judged by the latest applied migration that touched it (compare.py).

Where the scratch database lives: a private cluster of its own, never the live server. The
caller passes a `Scratch` (x402db/local/scratch.py starts the embedded PostgreSQL in a temporary
directory and deletes it afterwards; verify/ sits below local/ in the layers, so it is handed in).
A `CREATE DATABASE` on the live server was ruled out: roles are cluster-wide, so migration 000
would find the live roles, create none and record none, and the expectation would inherit the
live cluster's state, drift included (an `ALTER ROLE authenticated BYPASSRLS` would become
expected); it would also write to the production server. The scratch runs on target postgres,
which is why 000 exists: it replicates Supabase's platform layer on plain PostgreSQL. A migration
that does not apply to target postgres cannot be derived there and owns nothing.

The migrating role of the scratch is not the live one: it is recorded as MIGRATOR wherever a
role is named, and compare.py resolves it to the role in the live ledger's `applied_by`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ... import access, db
from ...migrate import files as migration_files
from ...migrate.engine import Engine
from ...migrate.files import Migration
from ...migrate.target import Target
from . import cache
from .facts import Facts, Key, delta, rename_role, snapshot

MIGRATOR = "<migrator>"
SCRATCH_TARGET = Target("postgres", "scratch database of the expectation")


class Scratch(Protocol):
    """A throwaway PostgreSQL cluster: its major version (cheap, for the cache key) and a
    database on it, as a DSN for its superuser, that exists only inside the context."""

    def major(self) -> int: ...

    def database(self) -> AbstractContextManager[str]: ...


@dataclass
class Owned:
    """One migration's share: the facts it touched, as it left them, and the keys it dropped."""

    version: str
    name: str
    checksum: str
    touched: Facts = field(default_factory=dict)
    dropped: set[Key] = field(default_factory=set)


@dataclass
class Expectation:
    key: str
    server_major: int
    migrations: list[Owned]
    source: str = "derived"  # or "cache": where this object came from (not stored)
    seconds: float = 0.0  # how long deriving or loading took (not stored)

    def as_json(self) -> dict[str, Any]:
        return {
            "server_major": self.server_major,
            "migrations": [
                {
                    "version": m.version,
                    "name": m.name,
                    "checksum": m.checksum,
                    "touched": [[k[0], k[1], v] for k, v in sorted(m.touched.items())],
                    "dropped": sorted([list(k) for k in m.dropped]),
                }
                for m in self.migrations
            ],
        }

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any]) -> Expectation:
        return cls(
            key=key,
            server_major=int(data["server_major"]),
            migrations=[
                Owned(
                    m["version"],
                    m["name"],
                    m["checksum"],
                    {(str(k), str(i)): _fact(v) for k, i, v in m["touched"]},
                    {(str(k), str(i)) for k, i in m["dropped"]},
                )
                for m in data["migrations"]
            ],
        )


def _fact(value: Any) -> dict[str, Any]:
    # A cached fact that is not a mapping is a damaged file: a miss, derived anew.
    if not isinstance(value, dict):
        raise ValueError("a cached fact is not a mapping")
    return value


def _roles(conn: Any) -> list[str]:
    """Every role of the scratch cluster but the built-in ones and the migrating role: the roles
    a migration may create or alter (on a fresh cluster nobody else made any)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' AND rolname <> current_user"
        )
    ]


def _snapshot(conn: Any, migrator: str) -> Facts:
    return rename_role(snapshot(conn, _roles(conn)), migrator, MIGRATOR)


def build(dsn: str, migrations: list[Migration]) -> list[Owned]:
    """Apply `migrations` to the empty database at `dsn`, one at a time, and return what each owns."""
    owned: list[Owned] = []
    with db.connect(dsn, application_name="x402db-expected") as conn:
        row = conn.execute("SELECT current_user::text").fetchone()
        migrator = str(row[0]) if row else ""
        engine = Engine(conn, migrations, SCRATCH_TARGET)
        before = _snapshot(conn, migrator)
        for m in engine.migrations:
            engine.up(to=m.version)
            after = _snapshot(conn, migrator)
            touched, dropped = delta(before, after)
            owned.append(Owned(m.version, m.name, m.checksum, {k: after[k] for k in touched}, dropped))
            before = after
        # The deploy's last step; on target postgres 000 already made the same grants, but what it
        # changes, if anything, belongs to the last migration.
        access.apply(conn)
        after = _snapshot(conn, migrator)
        touched, dropped = delta(before, after)
        if owned and (touched or dropped):
            owned[-1].touched.update({k: after[k] for k in touched})
            owned[-1].dropped |= dropped
    return owned


def derive(
    scratch: Scratch,
    migrations: list[Migration] | None = None,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> Expectation:
    """The expectation of `migrations` (default: the shipped sql/), from the cache when the same
    files were derived before on the same major version, else built in a scratch database."""
    started = time.monotonic()
    migrations = migration_files.load() if migrations is None else migrations
    major = scratch.major()
    cache_key = cache.key(migrations, major)
    stored = cache.load(cache_key, cache_dir)
    if stored is not None:
        try:
            found = Expectation.from_json(cache_key, stored)
        except (KeyError, TypeError, ValueError):
            found = None
        if found is not None:
            found.source, found.seconds = "cache", time.monotonic() - started
            return found
    log(
        f"deriving what {len(migrations)} migrations should leave, on a scratch PostgreSQL {major} "
        "(once per version of sql/; cached after)"
    )
    with scratch.database() as dsn:
        owned = build(dsn, migrations)
    expectation = Expectation(cache_key, major, owned)
    cache.store(cache_key, expectation.as_json(), cache_dir)
    expectation.seconds = time.monotonic() - started
    return expectation
