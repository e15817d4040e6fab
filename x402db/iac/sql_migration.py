"""SqlMigration: one Pulumi dynamic resource per migration, wrapping the engine.

create applies up and records the ledger row; diff refuses an edited applied migration;
delete runs down behind the data-loss guard; read reports drift from the ledger and from the
catalog, judged against what the migration's own SQL makes (iac/drift.py states the rule). The resource
keeps its up and down SQL in state, so destroy runs the down that matches what was applied.
The provider object has no fields: the engine host unpickles a class reference and nothing
else (no connection, no module object, no secret). The DSN travels as a secret property.

The database, not state, says what is deployed: a migration belongs to one stack's deployment
(migrate/owner.py, recorded with the ledger row). diff reads the ledger, so a revert made behind
Pulumi's back shows as a change that up applies again; read reports a migration another stack
took over, or a database emptied, as gone. Where the resource points (host, port, database) and
its target are its identity: a change of either replaces it, on the new database first.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from ..errors import DriftError
from .oneline import one_line_methods

if TYPE_CHECKING:  # at run time imported by _engine: the provider host loads them only to run one
    import psycopg

    from ..migrate.engine import Engine
    from ..migrate.files import Migration
    from ..migrate.owner import Owner

# Properties whose change needs no database work: they only steer the next operation. A new
# down_sql is stored too, so that destroy runs the checkout's down; the engine refuses it if it
# differs from the down recorded in the ledger at apply time (an edited down).
_STEERING = ("dsn", "allow_data_loss", "lock_timeout", "down_sql", "owner")
# Which database, and as what: a change is a new deployment there, never an edit of this one.
_IDENTITY = ("identity", "target")
_REQUIRED = ("dsn", "version", "name", "checksum", "up_sql", "down_sql", "target")


def _owner(props: dict[str, Any]) -> Owner | None:
    from ..migrate.owner import Owner

    o = props.get("owner") or {}
    # State written before owners were recorded has none: such a resource judges by the ledger alone.
    if not o.get("deployment"):
        return None
    return Owner(o["project"], o["stack"], o["deployment"], o.get("take_over_from") or "")


def _connect(props: dict[str, Any], purpose: str) -> psycopg.Connection:
    from .. import db

    # The session that changes the database is plain `x402db-pulumi`, the name the runbook tells
    # operators to look for in pg_stat_activity; the reading ones say what they read for.
    name = "x402db-pulumi" if purpose == "migration" else f"x402db-pulumi-{purpose}"
    return db.connect(props["dsn"], application_name=name)


def _engine(props: dict[str, Any], resource: str = "") -> tuple[Engine, Migration]:
    # Imported here: the provider host only needs them when an operation really runs.
    from ..migrate import files as migrations
    from ..migrate.engine import Engine, applied_by
    from ..migrate.owner import StackRecorder
    from ..migrate.settings import Settings
    from ..migrate.target import detect

    conn = _connect(props, "migration")
    migration = migrations.from_texts(props["version"], props["name"], props["up_sql"], props["down_sql"])
    settings = Settings(lock_timeout=props.get("lock_timeout") or Settings.lock_timeout)
    owner = _owner(props)
    recorder = StackRecorder(owner, resource, applied_by(conn)) if owner and resource else None
    return Engine(conn, [migration], detect(conn, props["target"]), settings, recorder=recorder), migration


def _outs(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keep = (*_REQUIRED, "allow_data_loss", "lock_timeout", "identity", "owner")
    return {k: props[k] for k in keep if k in props} | extra


def _claim_applied(engine: Engine, migration: Migration) -> None:
    """Record this resource as the holder of a migration the ledger holds, or refuse. The apply
    claims what it runs, but not a row it found applied (by this stack before a replace, by
    migrate.py, by a release that recorded no owner) nor one a killed create left to resume."""
    from ..migrate.files import Direction

    recorder = engine.recorder
    if recorder is None:
        return
    # Under the migration lock, as the apply's own claim is: two stacks' first `up` on one
    # database take turns, and the second meets the first's owner row, never its uncommitted one.
    with engine.locked(), engine.conn.transaction():
        recorder.before(engine.conn, migration, Direction.UP)
        recorder.after(engine.conn, migration, Direction.UP)


def where_it_is(props: dict[str, Any], id_: str) -> tuple[str | None, str | None]:
    """(why this resource no longer holds its migration there, or None; the ledger state)."""
    from ..migrate import ledger, owner
    from .bounded import reads

    with _connect(props, "read") as conn, reads(conn, f"the ledger read of migration {props['version']}"):
        entry = ledger.entries(conn).get(props["version"])
        found = owner.recorded(conn)
        holder = owner.holders(conn).get(props["version"])
    mine = _owner(props)
    if entry is None:
        return "the ledger there does not record it", None
    if mine is not None and found is not None and found.deployment != mine.deployment:
        return f"that database is now deployed by {found.describe()}", entry.state
    if holder is not None and holder != id_:
        return "another resource of this stack holds it there now", entry.state
    return None, entry.state


@one_line_methods
class MigrationProvider(ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        from ..migrate.files import checksum
        from ..migrate.settings import timeout_problems

        failures = [CheckFailure(k, f"{k} is required") for k in _REQUIRED if not news.get(k)]
        if not failures and checksum(news["up_sql"]) != news["checksum"]:
            failures.append(CheckFailure("checksum", "checksum does not match up_sql"))
        if news.get("lock_timeout"):
            failures += [CheckFailure("lock_timeout", p) for p in timeout_problems(lock_timeout=news["lock_timeout"])]
        return CheckResult(news, failures)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        from ..migrate.ledger import State

        superseded = False
        if olds.get("checksum") and news.get("checksum") != olds["checksum"] and news.get("up_sql"):
            from ..migrate.files import from_texts

            # The new text declares (x402:supersedes) that it leaves the old one's result as it
            # is: take the new texts into state, touch nothing in the database.
            superseded = from_texts(news["version"], news["name"], news["up_sql"], news.get("down_sql", "")).matches(
                olds["checksum"]
            )
        if olds.get("checksum") and news.get("checksum") != olds["checksum"] and not superseded:
            raise DriftError(
                f"migration {olds.get('version')}_{olds.get('name')} is already applied with checksum "
                f"{olds['checksum'][:12]}, but its up file now hashes to {str(news.get('checksum'))[:12]}. "
                "Applied migrations are immutable: restore the file and ship the change as a new migration."
            )
        stables = ["version", "name"] + ([] if superseded else ["checksum"])
        # State written before identities were recorded has none: it keeps its place.
        moved = [k for k in _IDENTITY if k in olds and olds.get(k) != news.get(k)]
        if moved:
            return DiffResult(changes=True, replaces=moved, stables=stables, delete_before_replace=False)
        changed = [k for k in _STEERING if olds.get(k) != news.get(k)] + (["checksum"] if superseded else [])
        # `pulumi refresh` read a half-finished run from the ledger: the next `pulumi up` must
        # finish it (or refuse, for a half-reverted one), not report "no changes".
        if olds.get("ledger_state", State.APPLIED) != State.APPLIED:
            changed.append("ledger_state")
        # Refresh found the catalog changed by hand: the next up repairs it or says why not.
        if olds.get("drift"):
            changed.append("drift")
        # State is not the judge: a revert behind Pulumi's back (migrate.py down, make revert) or a
        # database emptied since is a change, so up applies it again instead of saying "unchanged".
        if not changed:
            gone, state = where_it_is(news, id_)
            if gone is not None or state != State.APPLIED:
                changed.append("ledger_state")
        return DiffResult(changes=bool(changed), replaces=[], stables=stables, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        from ..migrate.files import Direction
        from ..migrate.ledger import State
        from ..plan.planner import require_ready

        resource = f"{props['version']}-{uuid.uuid4().hex[:12]}"
        engine, migration = _engine(props, resource)
        with engine.conn:
            require_ready(engine, Direction.UP, what=f"SqlMigration {migration.label} create: up", single=True)
            outcome = engine.apply(migration)
            _claim_applied(engine, migration)
        return CreateResult(
            resource,
            _outs(props, action=outcome.action if outcome else "already-applied", ledger_state=State.APPLIED, drift=[]),
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        from ..migrate.ledger import State
        from . import drift

        engine, migration = _engine(news, id_)
        with engine.conn:
            # What `migrate.py up` does with the same ledger: apply a missing row, resume
            # steps-pending, refuse reverting; a row already applied is only claimed.
            outcome = engine.apply(migration)
            _claim_applied(engine, migration)
            action = outcome.action if outcome else "unchanged"
            differences = drift.found(engine.conn, migration.version) if olds.get("drift") else []
            if differences:
                drift.repair(engine.conn, migration.version, migration.label, differences)
                action = "repaired"
        return UpdateResult(_outs(news, action=action, ledger_state=State.APPLIED, drift=[]))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        from ..errors import ConnectError, Refused
        from ..migrate.files import Direction
        from ..plan.planner import require_ready

        label = f"{props['version']}_{props['name']}"
        try:
            gone, _state = where_it_is(props, id_)
        except ConnectError as exc:
            raise Refused(
                f"SqlMigration {label} delete refused, nothing reverted: the database it was deployed to "
                f"({props.get('identity') or 'its old address'}) cannot be reached ({exc}). If that database is gone "
                "for good, remove the old resources from state: pulumi stack export --file state.json, delete the "
                'resources marked "delete": true, pulumi stack import --file state.json (docs/runbooks/deploy.md, '
                '"A moved stack")'
            ) from None
        if gone is not None:
            # Not there, held by another resource (this stack's replacement, or a stack that took
            # the database in since: state written before owners has no owner to compare), or the
            # database is another stack's now: nothing of this resource's to revert, as read says.
            # `pulumi destroy` of a database taken over stops earlier, at the destroy guard.
            return
        engine, migration = _engine(props, id_)
        allow = bool(props.get("allow_data_loss"))
        with engine.conn:
            require_ready(
                engine,
                Direction.DOWN,
                allow_data_loss=allow,
                what=f"SqlMigration {migration.label} delete: down",
                single=True,
            )
            engine.revert(migration, allow_data_loss=allow)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        from ..migrate import ledger
        from . import drift
        from .bounded import reads

        gone, state = where_it_is(props, id_)
        if gone is not None:
            return ReadResult(None, {})  # Pulumi drops it from state: the next up deploys it again
        engine, migration = _engine(props)
        with engine.conn, reads(engine.conn, f"pulumi refresh of migration {migration.label}"):
            entry = ledger.entries(engine.conn)[migration.version]
            found = drift.lines(drift.found(engine.conn, migration.version)) if state == ledger.State.APPLIED else []
        # A checksum that differs from state shows up in `pulumi refresh` as drift.
        # So is a run that was cut off: the ledger's state (steps-pending, reverting) is read back.
        return ReadResult(id_, _outs(props, checksum=entry.checksum, ledger_state=entry.state, drift=found))


class SqlMigration(Resource, module="x402", name="SqlMigration"):
    version: pulumi.Output[str]
    checksum: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["dsn"]))
        super().__init__(MigrationProvider(), name, {**props, "action": None}, opts)
