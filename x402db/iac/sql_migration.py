"""SqlMigration: one Pulumi dynamic resource per migration, wrapping the engine.

create applies up and records the ledger row; diff refuses an edited applied migration;
delete runs down behind the data-loss guard; read reports drift from the ledger and from the
catalog, judged against what the migration's own SQL makes (iac/drift.py states the rule). The resource
keeps its up and down SQL in state, so destroy runs the down that matches what was applied.
The provider object has no fields: the engine host unpickles a class reference and nothing
else (no connection, no module object, no secret). The DSN travels as a secret property.
"""

from __future__ import annotations

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
    from ..migrate.engine import Engine
    from ..migrate.files import Migration

# Properties whose change needs no database work: they only steer the next operation. A new
# down_sql is stored too, so that destroy runs the checkout's down; the engine refuses it if it
# differs from the down recorded in the ledger at apply time (an edited down).
_STEERING = ("dsn", "allow_data_loss", "lock_timeout", "target", "down_sql")
_REQUIRED = ("dsn", "version", "name", "checksum", "up_sql", "down_sql", "target")


def _engine(props: dict[str, Any]) -> tuple[Engine, Migration]:
    # Imported here: the provider host only needs them when an operation really runs.
    from .. import db
    from ..migrate import files as migrations
    from ..migrate.engine import Engine
    from ..migrate.settings import Settings
    from ..migrate.target import detect

    conn = db.connect(props["dsn"], application_name="x402db-pulumi")
    migration = migrations.from_texts(props["version"], props["name"], props["up_sql"], props["down_sql"])
    settings = Settings(lock_timeout=props.get("lock_timeout") or Settings.lock_timeout)
    return Engine(conn, [migration], detect(conn, props["target"]), settings), migration


def _outs(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {k: props[k] for k in (*_REQUIRED, "allow_data_loss", "lock_timeout") if k in props} | extra


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

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
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
        changed = [k for k in _STEERING if olds.get(k) != news.get(k)] + (["checksum"] if superseded else [])
        # `pulumi refresh` read a half-finished run from the ledger: the next `pulumi up` must
        # finish it (or refuse, for a half-reverted one), not report "no changes".
        if olds.get("ledger_state", State.APPLIED) != State.APPLIED:
            changed.append("ledger_state")
        # Refresh found the catalog changed by hand: the next up repairs it or says why not.
        if olds.get("drift"):
            changed.append("drift")
        stables = ["version", "name"] + ([] if superseded else ["checksum"])
        return DiffResult(changes=bool(changed), replaces=[], stables=stables, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        from ..migrate.files import Direction
        from ..migrate.ledger import State
        from ..plan.planner import require_ready

        engine, migration = _engine(props)
        with engine.conn:
            require_ready(engine, Direction.UP, what=f"SqlMigration {migration.label} create: up", single=True)
            outcome = engine.apply(migration)
        return CreateResult(
            migration.version,
            _outs(props, action=outcome.action if outcome else "already-applied", ledger_state=State.APPLIED, drift=[]),
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        from ..migrate.ledger import State
        from . import drift

        if olds.get("ledger_state", State.APPLIED) == State.APPLIED and not olds.get("drift"):
            return UpdateResult(_outs(news, action="unchanged", ledger_state=State.APPLIED, drift=[]))
        engine, migration = _engine(news)
        with engine.conn:
            if olds.get("ledger_state", State.APPLIED) != State.APPLIED:
                # What `migrate.py up` does with the same ledger: resume steps-pending, refuse reverting.
                outcome = engine.apply(migration)
                action = outcome.action if outcome else "unchanged"
            else:
                action = "unchanged"
            differences = drift.found(engine.conn, migration.version)
            if differences:
                drift.repair(engine.conn, migration.version, migration.label, differences)
                action = "repaired"
        return UpdateResult(_outs(news, action=action, ledger_state=State.APPLIED, drift=[]))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from ..migrate.files import Direction
        from ..plan.planner import require_ready

        engine, migration = _engine(props)
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

        engine, migration = _engine(props)
        with engine.conn, reads(engine.conn, f"pulumi refresh of migration {migration.label}"):
            entry = ledger.entries(engine.conn).get(migration.version)
            found = (
                drift.lines(drift.found(engine.conn, migration.version))
                if entry and entry.state == ledger.State.APPLIED
                else []
            )
        if entry is None:
            return ReadResult(None, {})  # gone from the ledger: Pulumi drops it from state
        # A checksum that differs from state shows up in `pulumi refresh` as drift.
        # So is a run that was cut off: the ledger's state (steps-pending, reverting) is read back.
        return ReadResult(id_, _outs(props, checksum=entry.checksum, ledger_state=entry.state, drift=found))


class SqlMigration(Resource, module="x402", name="SqlMigration"):
    version: pulumi.Output[str]
    checksum: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["dsn"]))
        super().__init__(MigrationProvider(), name, {**props, "action": None}, opts)
