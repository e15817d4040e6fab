"""What every script shares: DSN and --json options, error-to-exit-code mapping, output."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import psycopg

from .errors import BundleError


def add_common(parser: argparse.ArgumentParser, dsn: bool = True) -> None:
    if dsn:
        parser.add_argument("--dsn", help="PostgreSQL DSN or URL (default: $DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--key-pattern", help="regex a key must fully match (default: sk-or-v1- and 64 hex digits)")
    shape.add_argument("--any-key-shape", action="store_true", help="accept any UTF-8 text as a key")


def shape_from_args(args):
    """The decrypted-value check the user asked for; OpenRouter's key shape by default."""
    import re

    from .crypto import OPENROUTER_KEY
    from .errors import UsageError

    if args.any_key_shape:
        return None
    if args.key_pattern:
        try:
            return re.compile(args.key_pattern)
        except re.error as exc:
            raise UsageError(f"--key-pattern is not a valid regex: {exc}") from None
    return OPENROUTER_KEY


def quiet() -> bool:
    """Progress and chatter only for a human at a terminal, never in CI."""
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def log_to_stderr(enabled: bool = True) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if enabled:
            print(msg, file=sys.stderr, flush=True)

    return log


def print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> None:
    """Run a script's main and exit: 0 ok, 1 failed or refused, 2 usage or connection error."""
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except psycopg.Error as exc:
        # Only the primary message: details could quote row values.
        diag = getattr(exc, "diag", None)
        msg = diag.message_primary if diag and diag.message_primary else type(exc).__name__
        print(f"error: database error: {msg}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message (its default prints the whole usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
