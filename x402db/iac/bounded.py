"""The Pulumi program's reads of the database never queue behind another session's lock: the rule
`migrate.py plan` keeps (plan/catalog.py). A session holding ACCESS EXCLUSIVE on the keys table in
an open transaction once kept `pulumi preview` waiting for as long as it stayed open, and every
writer of that table queued behind the preview's own wait.

`reads` gives a connection the plan's lock_timeout for its block and turns a read that would wait
into one sentence naming the session that holds the lock, read from pg_locks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import errors as pgerr

from ..errors import BundleError
from ..plan.catalog import PLAN_LOCK_TIMEOUT, WOULD_WAIT
from ..plan.locks import MODES, blocks_reads

# Relation locks other sessions hold in this database (or on a shared catalog), with what they
# are doing. pg_locks and pg_stat_activity take no lock, so this read cannot wait itself.
_HELD = """
SELECT l.pid, l.mode, format('%I.%I', n.nspname, c.relname), a.state
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.database IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
"""


class Blocked(BundleError):
    """A read would have waited on another session's lock, so it stopped; nothing was changed."""


def blocker(conn: psycopg.Connection) -> str | None:
    """Who holds a relation lock that blocks reads, as "pid N (state), which holds MODE on
    RELATION". What these reads wait for is AccessShareLock (a GRANT too, where it locks the
    table), so no weaker lock can be the one in the way. None when there is none: it ended
    meanwhile, or what blocked was an advisory lock."""
    try:
        held = [r for r in conn.execute(_HELD).fetchall() if r[1] in MODES and blocks_reads(r[1])]
    except psycopg.Error:
        return None
    if not held:
        return None
    pid, mode, relation, state = min(held)  # the lowest pid's first, for a stable sentence
    return f"pid {pid}{f' ({state})' if state else ''}, which holds {mode} on {relation}"


def sentence(conn: psycopg.Connection, what: str) -> str:
    holder = blocker(conn)
    behind = f"behind {holder}" if holder else "behind a lock another session holds (see pg_locks)"
    return f"{what} would wait {behind}, so it stopped and changed nothing: run it again when that session ends"


@contextmanager
def reads(conn: psycopg.Connection, what: str) -> Iterator[psycopg.Connection]:
    """The block's statements on `conn` wait at most the plan's lock_timeout; one that would wait
    longer raises Blocked, saying `what` stopped and behind whom."""
    previous = conn.execute("SHOW lock_timeout").fetchone()
    conn.execute(f"SET lock_timeout = '{PLAN_LOCK_TIMEOUT}'")
    try:
        yield conn
    except pgerr.LockNotAvailable:
        raise Blocked(sentence(conn, what)) from None
    except BundleError as exc:
        if str(exc) != WOULD_WAIT:  # the planner's own report of the same event, without the holder
            raise
        raise Blocked(sentence(conn, what)) from None
    finally:
        if previous and not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0],))
