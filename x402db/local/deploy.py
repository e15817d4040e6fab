"""The local path: the same plan as `pulumi up` (migrations through the one engine, grants
from the one access model, then the smoke checks), onto DATABASE_URL or an embedded server."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg

from .. import ROOT, access, db
from ..migrate import files as migrations
from ..migrate.engine import Engine
from ..migrate.files import Direction
from ..migrate.settings import Settings
from ..migrate.target import detect
from ..plan.model import Plan
from ..plan.planner import require_ready
from ..plan.view import summary
from .server import LocalServer, embedded_bindir, write_private

LOCAL_BASE = ROOT / ".local" / "pg18"
LOCAL_DB = "x402"
LOCAL_PORT = 54329  # the port the deploy page's dev stack is given first (docs/runbooks/deploy.md)
# The local server's password alone (mode 0600), for `pulumi config set --secret password < .local/password`.
LOCAL_PASSWORD = ROOT / ".local" / "password"


def local_server() -> LocalServer:
    return LocalServer(embedded_bindir(), LOCAL_BASE, preferred_port=LOCAL_PORT)


def start_local_server() -> LocalServer:
    """Start (or create) the embedded server and hand its password to the dev stack's file."""
    server = local_server()
    server.start()
    if server.password:
        write_private(LOCAL_PASSWORD, server.password + "\n")
    return server


@dataclass
class Report:
    server: str
    target: str
    database_url: str
    migrations: list[dict] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)
    smoke: dict | None = None

    @property
    def ok(self) -> bool:
        return self.smoke is None or bool(self.smoke.get("passed"))

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def resolve_target_dsn(log: Callable[[str], None]) -> tuple[str, str]:
    """(dsn, description); DATABASE_URL wins, else the embedded server under .local/."""
    if os.environ.get("DATABASE_URL"):
        dsn = os.environ["DATABASE_URL"]
        db.require_session(dsn)
        return dsn, f"DATABASE_URL ({db.redact(dsn)})"
    log(f"starting embedded PostgreSQL in {LOCAL_BASE.relative_to(ROOT)}")
    server = start_local_server()
    server.ensure_database(LOCAL_DB)
    if server.port() != LOCAL_PORT:
        # On a line of its own: a dev stack still on LOCAL_PORT would reach whatever holds it, and
        # report a password failure rather than a wrong server.
        log(
            f"port {server.port()}, not {LOCAL_PORT}: another program holds {LOCAL_PORT}; the dev stack names "
            f"{LOCAL_PORT}, so give it this one: pulumi config set port {server.port()}"
        )
    return server.url(LOCAL_DB), f"embedded {server.version()} in {server.base.relative_to(ROOT)}"


def deploy(
    requested_target: str | None,
    settings: Settings,
    log: Callable[[str], None],
    run_smoke: Callable[[str, str], dict] | None = None,
    confirm: Callable[[psycopg.Connection, str, Plan], None] | None = None,
) -> Report:
    """`confirm` sees the plan before anything runs, and may refuse: then nothing has changed."""
    dsn, server = resolve_target_dsn(log)
    with db.connect(dsn, application_name="x402db-deploy") as conn:
        target = detect(conn, requested_target)
        log(f"target: {target}")
        engine = Engine(conn, migrations.load(), target, settings, log=log)
        # One line of the plan before anything runs: what will lock which table, how big.
        plan = require_ready(engine, Direction.UP, what="deploy")
        log(summary(plan))
        if confirm is not None:
            confirm(conn, target.name, plan)
        outcomes = engine.up()
        grants = access.apply(conn)
    report = Report(
        server=server,
        target=target.name,
        database_url=db.redact(dsn),
        migrations=[asdict(o) for o in outcomes],
        grants=grants,
    )
    if run_smoke is not None:
        report.smoke = run_smoke(dsn, target.name)
    return report
