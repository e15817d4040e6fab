"""At `pulumi preview`, the program prints the one line `scripts/migrate.py plan` ends with, so the
reader sees the locks and the largest table touched next to Pulumi's own diff."""

from __future__ import annotations

import pulumi

from ..errors import BundleError


def plan_summary(dsn: str, target: str) -> str:
    from .. import db
    from ..migrate import files
    from ..migrate.engine import Engine
    from ..migrate.files import Direction
    from ..migrate.target import detect
    from ..plan.planner import Planner
    from ..plan.view import summary
    from .bounded import reads

    with db.connect(dsn, application_name="x402db-pulumi-preview") as conn, reads(conn, "the preview's plan"):
        return summary(Planner(Engine(conn, files.load(), detect(conn, target))).build(Direction.UP))


def log_plan_summary(dsn: str, target: str, resource: pulumi.Resource) -> None:
    try:
        line = plan_summary(dsn, target)
    except BundleError:
        return  # unreachable or refused: the preflight says so, in one sentence
    pulumi.log.info(line, resource)
