"""What PostgreSQL itself takes when a statement runs: the strongest lock per relation (from
pg_locks), whether each table's relfilenode changed (a rewrite), and its sequential scans.

Only tables, views, materialized views, foreign tables and sequences outside the system schemas
are compared: an index or TOAST table goes with its table, and catalog locks are PostgreSQL's
own bookkeeping."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

from x402db.plan.locks import strongest

_RELATIONS = """
SELECT c.oid, format('%s.%s', n.nspname, c.relname), c.relfilenode,
       coalesce(pg_stat_get_xact_numscans(c.oid), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'
"""
_HELD = "SELECT relation, mode FROM pg_locks WHERE locktype = 'relation' AND pid = %s AND granted"


@dataclass
class Observed:
    locks: dict[str, str]  # relation -> strongest mode held
    rewritten: set[str] = field(default_factory=set)  # tables whose relfilenode changed
    scanned: set[str] = field(default_factory=set)  # tables with a sequential scan counted


def _relations(conn) -> dict[int, tuple[str, int, int]]:
    return {oid: (name, node, scans) for oid, name, node, scans in conn.execute(_RELATIONS)}


def _fold(rows, names) -> dict[str, str]:
    held: dict[str, list[str]] = {}
    for oid, mode in rows:
        if oid in names:
            held.setdefault(names[oid][0], []).append(mode)
    return {rel: strongest(modes) for rel, modes in held.items()}


def in_transaction(conn: psycopg.Connection, statement: str) -> Observed:
    """Run `statement` in its own transaction and read the session's own locks before COMMIT."""
    with conn.transaction():
        return in_open_transaction(conn, statement)


def in_open_transaction(conn: psycopg.Connection, statement: str) -> Observed:
    """Run `statement` in the transaction `conn` has open, which keeps its locks afterwards."""
    before = _relations(conn)
    conn.execute(statement)
    after = _relations(conn)
    rows = conn.execute(_HELD, (conn.info.backend_pid,)).fetchall()
    names = {**after, **before}
    obs = Observed(_fold(rows, names))
    for oid, (name, node, scans) in before.items():
        if oid in after:
            if after[oid][1] != node:
                obs.rewritten.add(name)
            if after[oid][2] > scans:
                obs.scanned.add(name)
    return obs


_WAITING = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"


def watched(
    conn: psycopg.Connection, watcher: psycopg.Connection, statement: str, blocker: psycopg.Connection
) -> Observed:
    """Run a statement that cannot run in a transaction block, with a second session polling
    pg_locks for the first one's pid until it returns. A third session holds a snapshot open, so
    a CONCURRENTLY build waits for it (holding its locks) until the watcher has looked: without
    it, a build on a small table would be over before the first poll."""
    pid = conn.info.backend_pid
    before = _relations(watcher)
    seen: list[tuple[int, str]] = []
    done = threading.Event()
    blocker.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    blocker.execute("SELECT 1")  # takes the snapshot

    def poll() -> None:
        held = True
        while not done.is_set():
            seen.extend(watcher.execute(_HELD, (pid,)).fetchall())
            if held and watcher.execute(_WAITING, (pid,)).fetchone()[0]:
                seen.extend(watcher.execute(_HELD, (pid,)).fetchall())
                blocker.execute("COMMIT")
                held = False
            time.sleep(0.001)
        if held:
            blocker.execute("COMMIT")

    t = threading.Thread(target=poll)
    t.start()
    try:
        conn.execute(statement)
    finally:
        done.set()
        t.join()
    after = _relations(watcher)
    obs = Observed(_fold(seen, {**after, **before}))
    for oid, (name, node, _) in before.items():
        if oid in after and after[oid][1] != node:
            obs.rewritten.add(name)
    return obs
