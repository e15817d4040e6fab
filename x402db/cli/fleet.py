"""`scripts/fleet.py validate|plan|up|resume|status`: the bundle rolled out to many databases,
one Pulumi stack each, in the waves of a fleet file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import Refused
from ..fleet import fleetfile, plan, report
from ..fleet.orchestrator import rollout
from ..fleet.status import STATUS_COLUMNS, status, status_rows
from .common import Parser, log_to_stderr, print_json, progress_bar, quiet, run
from .confirm import YES


def build_parser() -> Parser:
    parser = Parser(prog="fleet.py", description="Roll the bundle out to a fleet of databases in waves.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    helps = {
        "validate": "check the fleet file and its secret sources; connects to nothing",
        "plan": "each target's plan and the gates, per wave; changes nothing",
        "up": "roll out, wave by wave",
        "resume": "finish the last run after it was interrupted (kill -9 included)",
        "status": "each target's ledger, stack agreement, release, smoke, drift and lock",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--fleet", default="fleet.yaml", help="the fleet file (default %(default)s)")
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        if name == "up":
            p.add_argument("--yes", action="store_true", help="do not ask before changing databases")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    fleet = fleetfile.load(Path(args.fleet))
    # Every target's secrets before anything connects or any journal starts: a source that fails
    # only when its target's turn comes would stop a rollout after earlier waves had changed.
    fleet.check_secrets()
    say = log_to_stderr(not args.json)
    if args.command == "validate":
        doc = plan.validate(fleet)
        print_json(doc) if args.json else print("\n".join(plan.render_validate(doc)))
        return 0
    if args.command == "plan":
        doc = plan.plan(fleet)
        print_json(doc) if args.json else print(report.render(doc, args.fleet))
        return 0 if doc["result"] == "ok" else 1
    if args.command == "status":
        doc = status(fleet)
        if args.json:
            print_json(doc)
        else:
            print("\n".join(report.table(STATUS_COLUMNS, status_rows(doc))))
        return 0 if doc["result"] == "ok" else 1
    if args.command == "up" and not args.yes:
        _ask(fleet, args.fleet)
    if args.json or quiet():
        doc = rollout(fleet, resume=args.command == "resume", say=say)
    else:
        with _bar(sum(len(names) for _, names in fleet.wave_targets())) as (bar_say, progress):
            doc = rollout(fleet, resume=args.command == "resume", say=bar_say, progress=progress)
    print_json(doc) if args.json else print(report.render(doc, args.fleet))
    return 0 if doc["result"] == "ok" else 1


def _ask(fleet: fleetfile.Fleet, fleet_arg: str) -> None:
    """At a terminal, name every wave's targets and ask, as `pulumi up` does; elsewhere go on."""
    if sys.stdin is None or not sys.stdin.isatty():
        return
    for wave, names in fleet.wave_targets():
        print(f"wave {wave.name}: {', '.join(names)}", file=sys.stderr)
    print(f"Roll out {fleet_arg}? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() not in YES:
        raise Refused("not rolled out: the answer was not yes, so nothing changed (--yes skips the question)")


@contextmanager
def _bar(total: int) -> Iterator[tuple[Callable[[str], None], Callable[[int, int, str], None]]]:
    """At a terminal: a bar of targets done, what runs now as its text, the log lines above it."""
    # A bar made with total 0 never draws, even once its total grows: the count is known up front.
    bar = progress_bar(total, "target")

    def say(message: str) -> None:
        bar.write(message, file=sys.stderr)

    def progress(done: int, total: int, running: str) -> None:
        bar.set_description_str(running[:60], refresh=False)
        bar.update(done - bar.n)

    try:
        yield say, progress
    finally:
        bar.close()


def cli() -> None:
    run(main)
