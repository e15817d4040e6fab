"""`scripts/smoke.py`: is this database what the bundle promises?"""

from __future__ import annotations

from pathlib import Path

from .. import db
from ..errors import UsageError
from ..keys.crypto import Keyring
from ..keys.source import SECRET_ENV, env_secret, primary_secret
from ..local.scratch import expected_state
from ..migrate.target import detect
from ..verify.smoke import run_checks
from .common import Parser, add_common, log_to_stderr, print_json, run

LABELS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "warn": "WARN"}
SUPABASE_READ_ONLY = (
    "target supabase: catalog checks only, as `make deploy` runs there; --full also runs the behaviour "
    "checks (rolled-back writes, which fire the project's auth.users triggers)"
)


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="smoke.py",
        description="Verify a deployed database; changes nothing. On a Supabase target, catalog checks only "
        "unless --full: the behaviour checks insert test users (rolled back), which fires whatever triggers "
        "the project hangs on auth.users, as `make deploy` avoids there too.",
    )
    add_common(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--read-only", action="store_true", help="catalog checks only, no rolled-back writes")
    scope.add_argument(
        "--full",
        action="store_true",
        help="on a Supabase target, also the behaviour checks (rolled-back writes; auth.users triggers fire)",
    )
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    parser.add_argument("--secret-file", help=f"check an encrypted round trip with this secret (or set {SECRET_ENV})")
    args = parser.parse_args(argv)
    keyring = None
    if args.secret_file is not None or env_secret(SECRET_ENV):
        keyring = Keyring(primary_secret(args.secret_file))
    dsn = db.resolve_dsn(args.dsn)
    read_only = args.read_only
    if not read_only and not args.full:
        with db.connect(dsn, application_name="x402db-smoke") as conn:
            read_only = detect(conn).name == "supabase"
        if read_only:
            log_to_stderr()(SUPABASE_READ_ONLY)
    result = run_checks(
        dsn,
        read_only=read_only,
        keyring=keyring,
        expectation=lambda: expected_state(log=log_to_stderr(not args.json)),
    )
    if args.junit:
        try:
            Path(args.junit).write_bytes(result.junit())
        except OSError as exc:
            raise UsageError(f"cannot write the JUnit report to the file given to --junit: {exc.strerror}") from None
    if args.json:
        print_json(result.as_dict())
    else:
        for c in result.checks:
            print(f"{LABELS[c.status]}  {c.name}{'' if c.passed or not c.detail else ': ' + c.detail}")
        print(result.summary())
    return 0 if result.passed else 1


def cli() -> None:
    """The console command: exits with main's code, or 2 with one line on bad input."""
    run(main)
