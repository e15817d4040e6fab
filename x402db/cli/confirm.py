"""Explicit targets: before `make deploy`, `migrate.py up` or `down` change a database, one line on
stderr names it (host, database, detected target) and what its plan will change; at a terminal,
for any database but the embedded one, the command then asks, as `pulumi up` does.

An exported DATABASE_URL is common on a developer's machine: without the question it was deployed
to in under a second, without a word. Without a terminal the command goes on after its line, so
CI jobs and scripts keep working; --yes skips the question.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

from .. import ROOT
from ..errors import Refused
from ..plan.model import Plan

YES = ("y", "yes")
# command -> (the question, what a refusal says did not happen)
QUESTIONS = {"deploy": ("Deploy?", "deployed"), "up": ("Apply?", "applied"), "down": ("Revert?", "reverted")}


def changes(plan: Plan) -> str:
    """What the plan will do, by action, in its order: `apply 000, 001, 005` or `revert 005`."""
    by_action: dict[str, list[str]] = {}
    for m in plan.migrations:
        by_action.setdefault(m.action, []).append(m.version)
    return "; ".join(f"{action} {', '.join(versions)}" for action, versions in by_action.items()) or "nothing to change"


def embedded_home(conn: psycopg.Connection) -> Path | None:
    """The checkout's embedded server's directory when `conn` is to it, else None. Told by its data
    directory, which only a superuser may read (the embedded server's owner is one): a port alone
    could be another server's since the embedded one stopped."""
    from ..local.deploy import local_server

    row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
    if row is None or not row[0]:
        return None
    try:
        server = local_server()
        return server.base if Path(row[0]).resolve() == server.datadir.resolve() else None
    except (OSError, ValueError):
        return None


def describe(conn: psycopg.Connection, target: str, plan: Plan, embedded: Path | None) -> str:
    info = conn.info
    where = f"{info.host}:{info.port}" if not info.host.startswith("/") else f"the socket in {info.host}"
    server = (
        f"the embedded server in {embedded.relative_to(ROOT)}, " if embedded and embedded.is_relative_to(ROOT) else ""
    )
    return f"database {info.dbname} on {where} ({server}target {target}): {changes(plan)}"


def confirm(conn: psycopg.Connection, target: str, plan: Plan, *, command: str, yes: bool) -> None:
    """Name the database and the change on stderr; at a terminal, unless --yes or the embedded
    server, ask and refuse, changing nothing, on any answer but yes."""
    question, done = QUESTIONS[command]
    embedded = embedded_home(conn)
    print(describe(conn, target, plan, embedded), file=sys.stderr, flush=True)
    if yes or embedded is not None or not plan.migrations or sys.stdin is None or not sys.stdin.isatty():
        return
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in YES:
        # Never the answer itself: whatever was typed may have been meant for another prompt.
        raise Refused(f"not {done}: the answer was not yes, so nothing changed (--yes skips the question)")
