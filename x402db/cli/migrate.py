"""`scripts/migrate.py up|down|status|plan|new`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict

from .. import db
from ..errors import UsageError
from ..migrate import files as migrations
from ..migrate import scaffold
from ..migrate.engine import Engine, FileState, Outcome
from ..migrate.files import BASE, Direction
from ..migrate.ledger import State
from ..migrate.settings import Settings
from ..migrate.target import TARGETS, detect
from ..plan.catalog import detect_target
from ..plan.planner import Planner
from ..plan.view import print_plan
from .common import Parser, add_common, int_range, log_to_stderr, print_json, print_warnings, run
from .confirm import confirm

# States after which the database is not where any command left it: status exits 1 for them.
INCOMPLETE = (FileState.DRIFTED, FileState.MISSING_FILE, State.STEPS_PENDING, State.REVERTING)


def build_parser() -> Parser:
    parser = Parser(prog="migrate.py", description="Apply, revert or inspect the bundle's migrations.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    # Plain strings: argparse names an invalid command's choices by their repr().
    for name, help_ in (
        (Direction.UP.value, "apply pending migrations (and finish any left steps-pending)"),
        (Direction.DOWN.value, "revert the latest (or down to --to); finishes one left reverting"),
        ("status", "list migrations and their state"),
        ("plan", "show what up (or --down) would run, lock and refuse; changes nothing"),
    ):
        p = sub.add_parser(name, help=help_)
        add_common(p)
        p.add_argument("--target", choices=TARGETS, help="default: detected (supabase when auth and API roles exist)")
        if name != "status":
            p.add_argument(
                "--lock-timeout",
                default=Settings.lock_timeout,
                help="per DDL statement, above 0 and at most 1min (default %(default)s)",
            )
            p.add_argument(
                "--statement-timeout",
                default=Settings.statement_timeout,
                help="for the transactional part, above 0 and at most 2147483647ms (default %(default)s)",
            )
            p.add_argument(
                "--retries",
                type=int_range(0, 100),
                default=Settings.retries,
                help="lock-timeout retries (default %(default)s)",
            )
        if name in (Direction.UP, Direction.DOWN):
            p.add_argument("--yes", action="store_true", help="change the database without asking, even at a terminal")
        if name == Direction.UP:
            p.add_argument("--to", help="apply up to and including this known version (e.g. 1 or 001)")
        if name == "plan":
            p.add_argument("--down", action="store_true", help="plan a revert instead of an apply")
            p.add_argument("--to", help=f"as for up, or with --down as for down ({BASE}: all)")
            p.add_argument(
                "--allow-data-loss", action="store_true", help="with --down: plan as if data loss were allowed"
            )
        if name == Direction.DOWN:
            p.add_argument("--to", help=f"revert every migration above this known version ({BASE}: all)")
            p.add_argument(
                "--allow-data-loss",
                action="store_true",
                help="with --to: revert what --to covers even when rows would be dropped",
            )
            p.add_argument(
                "--accept-edited-down",
                action="store_true",
                help="run a down script that differs from the one recorded at apply time (review it first)",
            )
    new = sub.add_parser("new", help="write the files of the next migration (up, down, verify), directives off")
    new.add_argument("name", help="lowercase letters, digits and underscores, e.g. add_model_catalog_sync")
    new.add_argument("--no-verify", action="store_true", help="write no verify file")
    new.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser


def new_migration(args: argparse.Namespace) -> int:
    created = scaffold.create(args.name, verify=not args.no_verify)
    if args.json:
        print_json({"version": created.version, "name": created.name, "files": [str(p) for p in created.paths]})
    else:
        for path in created.paths:
            print(f"created {path}")
        print(
            f"next: write the change in {created.paths[0].name} and its revert in {created.paths[1].name}, "
            "then `make plan` and `make deploy` (docs/adding-a-migration.md)"
        )
    return 0


def engine_for(args: argparse.Namespace, log: Callable[[str], None]) -> Engine:
    # Everything the user typed is checked before connecting: a bad value exits 2 at once.
    settings = (
        Settings(lock_timeout=args.lock_timeout, statement_timeout=args.statement_timeout, retries=args.retries)
        if hasattr(args, "retries")
        else Settings()
    )
    files = migrations.load()
    if getattr(args, "to", None) is not None:
        migrations.resolve_version(
            files, args.to, allow_base=args.command == Direction.DOWN or getattr(args, "down", False)
        )
    if args.command == Direction.DOWN and args.allow_data_loss and args.to is None:
        # "The latest" is another migration on a second run: data loss is allowed only for what is named.
        raise UsageError(
            "down --allow-data-loss applies only to what you name: add --to VERSION (every migration "
            "above it is reverted, e.g. --to 1 reverts 005); run plan --down --to VERSION first"
        )
    dsn = db.resolve_dsn(args.dsn)
    if args.command != "status":
        db.require_session(dsn)
    conn = db.connect(dsn, application_name="x402db-migrate")
    # plan changes nothing and never waits, from its first read on.
    target = detect_target(conn, args.target) if args.command == "plan" else detect(conn, args.target)
    log(f"target: {target}")
    return Engine(conn, files, target, settings, log=log)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "new":  # files only: no database is needed or touched
        return new_migration(args)
    log = log_to_stderr(not args.json)
    engine = engine_for(args, log)
    with engine.conn:
        if args.command == "plan":
            result = Planner(engine).build(
                Direction.DOWN if args.down else Direction.UP, to=args.to, allow_data_loss=args.allow_data_loss
            )
            if args.json:
                print_json(result.as_json())
            else:
                print_plan(result)
            return 1 if result.verdict == "refused" else 0
        if args.command == "status":
            states = engine.status()
            if args.json:
                print_json(
                    [
                        {
                            "version": s.version,
                            "name": s.name,
                            "state": s.state,
                            **({"hint": s.hint} if s.hint else {}),
                            **({"down_edited": True} if s.down_edited else {}),
                            **({"superseded": s.superseded} if s.superseded else {}),
                            **({"stale_supersedes": True} if s.stale_supersedes else {}),
                        }
                        for s in states
                    ]
                )
            else:
                for s in states:
                    print(
                        f"{s.version}  {s.name:<32} {s.state}{' (adopted)' if s.kind == 'adopted' else ''}"
                        f"{' (down edited)' if s.down_edited else ''}{' (superseded)' if s.superseded else ''}"
                    )
                    if s.superseded:
                        print(
                            f"     the ledger holds an earlier text ({s.superseded[:12]}), accepted because this file's "
                            "x402:supersedes names it and pins the current text"
                        )
                    if s.stale_supersedes:
                        print(
                            "     the file was edited after its x402:supersedes was written (its pin no longer matches), "
                            "so that directive is void: restore the file"
                        )
                    if s.hint:
                        print(f"     {s.hint}")
                    if s.down_edited:
                        print(
                            "     its down file is not the one recorded when it was applied; down refuses it "
                            "unless --accept-edited-down: restore the file, or review the edit first"
                        )
            return 1 if any(s.state in INCOMPLETE or s.down_edited for s in states) else 0
        down = args.command == Direction.DOWN
        plan = Planner(engine).build(args.command, to=args.to, allow_data_loss=down and args.allow_data_loss)
        confirm(engine.conn, engine.target.name, plan, command=args.command, yes=args.yes)
        ran: Sequence[Outcome | None] = (
            engine.up(to=args.to)
            if args.command == Direction.UP
            else engine.down(
                to=args.to, allow_data_loss=args.allow_data_loss, accept_edited_down=args.accept_edited_down
            )
        )
        outcomes = [o for o in ran if o]
        # `up --to` below a pending migration changes nothing, yet the database is not up to date.
        pending = (
            [s.version for s in engine.status() if s.state in (FileState.PENDING, State.STEPS_PENDING)]
            if args.command == Direction.UP
            else []
        )
        if args.json:
            print_json(
                {
                    "target": engine.target.name,
                    "changes": [asdict(o) for o in outcomes],
                    **({"pending": pending} if args.command == Direction.UP else {}),
                }
            )
        elif not outcomes:
            if args.command == Direction.DOWN:
                print("nothing to revert")
            elif pending:
                print(f"nothing to apply up to {args.to}; still pending: {', '.join(pending)}")
            else:
                print("nothing to do: the database is up to date")
        else:
            for o in outcomes:
                print(f"{o.action:<9} {o.version}_{o.name} ({o.ms} ms)")
                print_warnings(o.notes)
    return 0


def cli() -> None:
    """The console command: exits with main's code, or 2 with one line on bad input."""
    run(main)
