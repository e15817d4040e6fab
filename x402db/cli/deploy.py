"""`scripts/deploy_local.py` (make deploy) and `scripts/local_db.py` (start/stop/revert/url)."""

from __future__ import annotations

from .. import db
from ..errors import BundleError
from ..local.deploy import LOCAL_DB, deploy, local_server, start_local_server
from ..migrate import files as migrations
from ..migrate.engine import Engine
from ..migrate.files import BASE, Direction
from ..migrate.settings import Settings
from ..migrate.target import TARGETS, detect
from ..plan.planner import Planner
from .common import Parser, add_common, interval, log_to_stderr, print_json, print_warnings, run
from .confirm import confirm

# Said by `make status`, `smoke`, `plan` and `revert` alone when no DATABASE_URL is set.
STOPPED = "the local server is stopped: make start (or make deploy), or set DATABASE_URL"


def deploy_main(argv: list[str]) -> int:
    parser = Parser(prog="deploy_local.py", description="Deploy the bundle to $DATABASE_URL or an embedded PostgreSQL.")
    add_common(parser, dsn=False)
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--lock-timeout", type=interval, default=Settings.lock_timeout)
    parser.add_argument("--no-smoke", action="store_true", help="skip the post-deploy verification")
    parser.add_argument(
        "--full-smoke",
        action="store_true",
        help="on target supabase, also run the behaviour checks (rolled-back writes, auth.users triggers fire)",
    )
    parser.add_argument("--yes", action="store_true", help="deploy without asking, even at a terminal")
    args = parser.parse_args(argv)
    log = log_to_stderr(not args.json)
    smoke = None
    if not args.no_smoke:
        from ..local.scratch import expected_state
        from ..verify.smoke import run_checks

        def smoke(dsn: str, target: str) -> dict:
            # On a real Supabase project, inserting test users fires whatever triggers the
            # project hangs on auth.users; catalog checks only, unless asked.
            read_only = target == "supabase" and not args.full_smoke
            return run_checks(dsn, read_only=read_only, expectation=expected_state(log)).as_dict()

    report = deploy(
        args.target,
        Settings(lock_timeout=args.lock_timeout),
        log,
        smoke,
        confirm=lambda conn, target, plan: confirm(conn, target, plan, command="deploy", yes=args.yes),
    )
    if args.json:
        print_json(report.as_dict())
        return 0 if report.ok else 1
    print(f"server:     {report.server}")
    print(f"target:     {report.target}")
    applied = [f"{m['version']}_{m['name']} ({m['action']})" for m in report.migrations]
    print(f"migrations: {', '.join(applied) if applied else 'nothing to apply, already up to date'}")
    print_warnings([n for m in report.migrations for n in m["notes"]])
    print(f"grants:     {'; '.join(report.grants) if report.grants else 'already in place'}")
    if report.smoke is not None:
        checks = report.smoke["checks"]
        noted = [c for c in checks if c["status"] != "passed"]
        others = "".join(
            f", {n} {s}" for s in ("failed", "skipped", "warn") if (n := sum(c["status"] == s for c in checks))
        )
        print(f"smoke:      {len(checks) - len(noted)}/{len(checks)} checks passed{others}")
        for c in noted:
            print(f"  {c['status'].upper()} {c['name']}: {c['detail']}")
    print(f"DATABASE_URL={report.database_url}")
    return 0 if report.ok else 1


def local_main(argv: list[str]) -> int:
    parser = Parser(prog="local_db.py", description="Manage the embedded PostgreSQL under .local/.")
    parser.add_argument(
        "action",
        choices=("start", "stop", "status", "url", "revert", "delete"),
        help="delete: stop the server and delete the local database (make clean-local)",
    )
    parser.add_argument("--allow-data-loss", action="store_true", help="with revert: drop rows too")
    parser.add_argument(
        "--to", default=BASE, help=f"with revert: keep migrations up to this version (default: {BASE}, all)"
    )
    parser.add_argument(
        "--accept-edited-down",
        action="store_true",
        help="with revert: run a down script that differs from the one recorded at apply time",
    )
    args = parser.parse_args(argv)
    files = migrations.load()
    migrations.resolve_version(files, args.to, allow_base=True)  # a bad --to exits 2 before anything runs
    server = local_server()
    if args.action == "start":
        server = start_local_server()
        server.ensure_database(LOCAL_DB)
        print(f"DATABASE_URL={db.redact(server.url(LOCAL_DB))}")
    elif args.action == "delete":
        server.delete()
        print(f"deleted the local database in {server.base}")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        print(f"{server.version()} in {server.base}: {'running' if server.running() else 'stopped'}")
    elif args.action == "url":
        if not server.running():
            raise BundleError(STOPPED)
        print(db.redact(server.url(LOCAL_DB)))
    else:
        if not server.running():
            raise BundleError(STOPPED)
        with db.connect(server.url(LOCAL_DB)) as conn:
            engine = Engine(conn, files, detect(conn), log=log_to_stderr())
            plan = Planner(engine).build(Direction.DOWN, to=args.to, allow_data_loss=args.allow_data_loss)
            confirm(conn, engine.target.name, plan, command="down", yes=False)  # names it; asks for no embedded one
            done = [
                o
                for o in engine.down(
                    to=args.to, allow_data_loss=args.allow_data_loss, accept_edited_down=args.accept_edited_down
                )
                if o
            ]
        print(f"reverted: {', '.join(o.version + '_' + o.name for o in done) or 'nothing'}")
        print_warnings([n for o in done for n in o.notes])
    return 0


def deploy_cli() -> None:
    """The console command: exits with deploy_main's code, or 2 with one line on bad input."""
    run(deploy_main)


def local_cli() -> None:
    """The console command: exits with local_main's code, or 2 with one line on bad input."""
    run(local_main)
