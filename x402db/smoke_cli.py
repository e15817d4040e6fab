"""`scripts/smoke.py`: is this database what the bundle promises?"""
from __future__ import annotations

import sys
from pathlib import Path

from . import db
from .cli import Parser, add_common, print_json
from .crypto import Keyring
from .errors import UsageError
from .secretsource import SECRET_ENV, env_secret, primary_secret
from .smoke import run_checks


def main(argv: list[str]) -> int:
    parser = Parser(prog="smoke.py", description="Verify a deployed database; changes nothing.")
    add_common(parser)
    parser.add_argument("--read-only", action="store_true", help="catalog checks only, no rolled-back writes")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    parser.add_argument("--secret-file", help=f"check an encrypted round trip with this secret (or set {SECRET_ENV})")
    args = parser.parse_args(argv)
    keyring = None
    if args.secret_file is not None or env_secret(SECRET_ENV):
        keyring = Keyring(primary_secret(args.secret_file))
    result = run_checks(db.resolve_dsn(args.dsn), read_only=args.read_only, keyring=keyring)
    if args.junit:
        try:
            Path(args.junit).write_bytes(result.junit())
        except OSError as exc:
            raise UsageError(f"cannot write the JUnit report to the file given to --junit: {exc.strerror}") from None
    if args.json:
        print_json(result.as_dict())
    else:
        for c in result.checks:
            print(f"{'PASS' if c.passed else 'FAIL'}  {c.name}{'' if c.passed else ': ' + c.detail}")
        failed = sum(not c.passed for c in result.checks)
        print(f"smoke: {len(result.checks) - failed}/{len(result.checks)} checks passed in {result.duration_ms} ms", file=sys.stdout)
    return 0 if result.passed else 1
