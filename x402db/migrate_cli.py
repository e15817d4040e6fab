"""`scripts/migrate.py up|down|status`."""
from __future__ import annotations

from dataclasses import asdict

from . import db, migrations
from .cli import Parser, add_common, int_range, interval, log_to_stderr, print_json
from .engine import BASE, Engine, Settings
from .target import TARGETS, detect


def build_parser() -> Parser:
    parser = Parser(prog="migrate.py", description="Apply, revert or inspect the bundle's migrations.")
    versions = [m.version for m in migrations.load()]
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_ in (("up", "apply pending migrations"), ("down", "revert the latest (or down to --to)"),
                        ("status", "list migrations and their state")):
        p = sub.add_parser(name, help=help_)
        add_common(p)
        p.add_argument("--target", choices=TARGETS, help="default: detected (supabase when auth and API roles exist)")
        if name != "status":
            p.add_argument("--lock-timeout", type=interval, default=Settings.lock_timeout, help="per DDL statement (default %(default)s)")
            p.add_argument("--retries", type=int_range(0, 100), default=Settings.retries, help="lock-timeout retries (default %(default)s)")
        if name == "up":
            p.add_argument("--to", choices=versions, help="apply up to and including this version")
        if name == "down":
            p.add_argument("--to", choices=[BASE, *versions], help=f"revert every migration above this version ({BASE}: all)")
            p.add_argument("--allow-data-loss", action="store_true", help="revert even when rows would be dropped")
    return parser


def engine_for(args, log) -> Engine:
    conn = db.connect(db.resolve_dsn(args.dsn), application_name="x402db-migrate")
    target = detect(conn, args.target)
    log(f"target: {target}")
    settings = Settings(lock_timeout=args.lock_timeout, retries=args.retries) if hasattr(args, "retries") else Settings()
    return Engine(conn, migrations.load(), target, settings, log=log)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    log = log_to_stderr(not args.json)
    engine = engine_for(args, log)
    with engine.conn:
        if args.command == "status":
            states = engine.status()
            if args.json:
                print_json([{"version": s.version, "name": s.name, "state": s.state} for s in states])
            else:
                for s in states:
                    print(f"{s.version}  {s.name:<32} {s.state}{' (adopted)' if s.kind == 'adopted' else ''}")
            return 1 if any(s.state in ("drifted", "missing-file") for s in states) else 0
        if args.command == "up":
            outcomes = engine.up(to=args.to)
        else:
            outcomes = engine.down(to=args.to, allow_data_loss=args.allow_data_loss)
        outcomes = [o for o in outcomes if o]
        if args.json:
            print_json({"target": engine.target.name, "changes": [asdict(o) for o in outcomes]})
        elif not outcomes:
            print("nothing to do: the database is up to date" if args.command == "up" else "nothing to revert")
        else:
            for o in outcomes:
                print(f"{o.action:<9} {o.version}_{o.name} ({o.ms} ms)")
    return 0
