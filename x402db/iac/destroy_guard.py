"""DestroyGuard: the last resource `pulumi up` creates, so the first one `pulumi destroy` deletes.

Its delete plans the revert of every migration of the stack, as `scripts/migrate.py plan --down
--to base` does, and refuses when that plan refuses (stored keys without allowDataLoss, rows of
type openrouter_instant, drift). It must come first: destroy deletes the grants before the
migrations, so a refusal from a migration's own delete came after the backend's privileges were
already revoked, and a refused destroy left service_role without access to its table. Now a
refused destroy changes nothing at all. It holds the migrations' texts as state has them, never
the checkout's, and the DSN only as a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from ..errors import Refused
from .oneline import one_line_methods

if TYPE_CHECKING:
    from ..migrate.owner import Owner


def refusal(props: dict[str, Any]) -> str | None:
    """None when the whole revert would run, else the plan's reasons in one sentence."""
    from .. import db
    from ..migrate import files
    from ..migrate import owner as owners
    from ..migrate.engine import Engine
    from ..migrate.target import detect
    from ..plan.planner import Planner, refusal_reasons
    from .bounded import Blocked, reads, sentence

    migrations = [files.from_texts(m["version"], m["name"], m["up_sql"], m["down_sql"]) for m in props["migrations"]]
    allow = bool(props.get("allow_data_loss"))
    what = "pulumi destroy's check of the revert"
    with db.connect(props["dsn"], application_name="x402db-pulumi-destroy-guard") as conn, reads(conn, what):
        mine, found = _owner(props), owners.recorded(conn)
        if mine is not None and found is not None and found.deployment != mine.deployment:
            # Another stack took this database over: reverting here would drop its deployment.
            return (
                f"pulumi destroy refused, nothing changed: this database is now deployed by {found.describe()}, not "
                f"by this stack ({mine.label}). To drop this stack's state without touching the database: "
                f"pulumi stack rm --force {mine.stack}"
            )
        plan = Planner(Engine(conn, migrations, detect(conn, props["target"]))).build(
            files.Direction.DOWN, to=files.BASE, allow_data_loss=allow
        )
        if plan.blocked_reads:
            # A guard's count not read is no count: refusing for data loss would send the operator
            # to back up data that may not exist, when the cure is to wait for the holder.
            raise Blocked(sentence(conn, what))
    if plan.verdict != "refused":
        return None
    reasons = "; ".join(refusal_reasons(plan))
    hint = ""
    if plan.verdict_with_allow_data_loss == "ready" and not allow:
        hint = ". Back the data up, then `pulumi config set allowDataLoss true && pulumi up` before `pulumi destroy`"
    return f"pulumi destroy refused by the revert's plan, nothing changed: {reasons}{hint}"


def _owner(props: dict[str, Any]) -> Owner | None:
    from ..migrate.owner import Owner

    o = props.get("owner") or {}
    if not o.get("deployment"):
        return None  # a guard written before owners were recorded
    return Owner(o["project"], o["stack"], o["deployment"])


@one_line_methods
class DestroyGuardProvider(ResourceProvider):
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # New texts or a new allowDataLoss must reach state before a destroy reads them.
        return DiffResult(changes=olds != news, replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult("destroy-guard", props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        reason = refusal(props)
        if reason:
            raise Refused(reason)


class DestroyGuard(Resource, module="x402", name="DestroyGuard"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["dsn"]))
        super().__init__(DestroyGuardProvider(), name, props, opts)
