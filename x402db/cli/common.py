"""What every script shares: DSN and --json options, argument parsing that never echoes a value,
error-to-exit-code mapping, and output that fails with one line instead of a traceback.

A new script gets all of it by building its parser with `Parser` and running its main with `run`:
- usage errors name the option and never repeat what was typed (a secret pasted into the wrong
  place must not be printed back); abbreviated options are off, so `--secret X` is an unknown
  option rather than `--secret-file X`;
- exit 0 success, 1 a check or operation failed or was refused, 2 usage, input, environment or
  connection error; one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import psycopg

from .. import db
from ..errors import FAILED_EXIT, USAGE_EXIT, BundleError, UsageError


def add_common(parser: argparse.ArgumentParser, dsn: bool = True) -> None:
    if dsn:
        parser.add_argument("--dsn", help="PostgreSQL URL or key=value string (default: $DATABASE_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_shape_args(parser: argparse.ArgumentParser) -> None:
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--key-pattern", help="regex a key must fully match (default: sk-or-v1- and 64 hex digits)")
    shape.add_argument("--any-key-shape", action="store_true", help="accept any UTF-8 text as a key")


def shape_from_args(args):
    """The decrypted-value check the user asked for; OpenRouter's key shape by default."""
    from ..keys.crypto import OPENROUTER_KEY

    if args.any_key_shape:
        return None
    if args.key_pattern:
        try:
            return re.compile(args.key_pattern)
        except re.error as exc:
            # re.error's own text is "<what> at position N": it does not repeat the pattern.
            raise UsageError(f"--key-pattern is not a valid regex: {exc.msg} at position {exc.pos}") from None
    return OPENROUTER_KEY


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for a whole number in [low, high]; the message never repeats the value."""

    def parse(value: str) -> int:
        if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}")
        return int(value)

    return parse


def interval(value: str) -> str:
    """An argparse type for a PostgreSQL timeout such as 1s, 500ms or 2min."""
    from ..migrate.settings import is_interval

    if not is_interval(value):
        raise argparse.ArgumentTypeError("must be a PostgreSQL interval like 1s, 500ms or 2min")
    return value


def quiet() -> bool:
    """Progress and chatter only for a human at a terminal, never in CI."""
    return bool(os.environ.get("CI")) or sys.stderr is None or not sys.stderr.isatty()


def fit(msg: str, width: int) -> str:
    """A message longer than the terminal, one clause (`; `) per line, each further line indented:
    a revert's warning names every default privilege it revoked, 1,500 characters on one line."""
    if len(msg) <= width:
        return msg
    clauses = msg.split("; ")
    lines: list[str] = []
    for i, clause in enumerate(clauses):
        text = clause + (";" if i < len(clauses) - 1 else "")
        first = "" if i == 0 else "    "
        lines += textwrap.wrap(text, width, initial_indent=first, subsequent_indent="    ", break_on_hyphens=False)
    return "\n".join(lines)


def _width(stream: Any) -> int:
    """The terminal's width, or 0 when not a terminal: a CI log keeps one line per message, for grep."""
    return os.get_terminal_size(stream.fileno()).columns if stream is not None and stream.isatty() else 0


def print_warnings(notes: Sequence[str]) -> None:
    """A run's warnings (the server's, from a migration), once each, fit to the terminal."""
    width = _width(sys.stdout)
    for note in notes:
        print(fit(f"  warning: {note}", width) if width else f"  warning: {note}")


def log_to_stderr(enabled: bool = True) -> Callable[[str], None]:
    width = _width(sys.stderr)

    def log(msg: str) -> None:
        if enabled:
            print(fit(msg, width) if width else msg, file=sys.stderr, flush=True)

    return log


def progress_bar(total: int, unit: str) -> Any:
    """A tqdm bar on stderr. A terminal that reports no size (0x0, e.g. some serial consoles or a
    fresh pty) makes tqdm print nothing; get_terminal_size falls back to 80x24 there."""
    import shutil

    from tqdm import tqdm

    size = shutil.get_terminal_size()
    return tqdm(total=total, unit=unit, file=sys.stderr, ncols=size.columns, nrows=size.lines)


def print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def read_stdin(what: str, prompt: str) -> str:
    """One value from stdin (a pipe, or a no-echo prompt on a terminal); same rules as a secret file."""
    from ..keys.source import check_value

    if sys.stdin is None or sys.stdin.closed:
        raise UsageError(f"stdin is closed: pipe the {what} in, e.g. `pbpaste | ...`")
    if sys.stdin.isatty():
        import getpass

        text = getpass.getpass(prompt)
    else:
        try:
            raw = sys.stdin.buffer.read()
        except OSError as exc:
            raise UsageError(f"cannot read stdin: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"stdin is not UTF-8 text: pipe the {what} in as UTF-8") from None
    if text in ("", "\n"):
        raise UsageError(f"nothing on stdin: pipe the {what} in, e.g. `pbpaste | ...`")
    return check_value(text, f"the {what} on stdin", "pipe exactly the value, with at most one final newline")


# -- parsing ------------------------------------------------------------------------------------

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line naming the option, never a value that was typed."""

    _typed: ClassVar[list[str]]  # what the user typed last, so that no error message can repeat it

    def __init__(self, *args: Any, value_hint: str = "", guessed: Sequence[str] = (), **kwargs: Any) -> None:
        """value_hint: where a value typed on the command line belongs instead (stdin, a file), said
        after a stray argument; guessed: option names users invent for such a value (`--key`),
        answered with that hint alone rather than a close real option."""
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.value_hint = value_hint
        self.guessed = tuple(guessed)

    def _safe_words(self) -> set[str]:
        words = {self.prog, *self.guessed}
        for action in self._actions:
            words.update(action.option_strings)
            if action.dest:
                words.add(action.dest)
            if action.metavar:
                words.add(str(action.metavar))
            for choice in action.choices or ():
                words.add(str(choice))
                sub = action.choices[choice] if isinstance(action.choices, dict) else None
                if isinstance(sub, Parser):
                    words |= sub._safe_words()
        return words

    def _option_strings(self) -> list[str]:
        opts = [o for a in self._actions for o in a.option_strings]
        for a in self._actions:
            if isinstance(a.choices, dict):
                for sub in a.choices.values():
                    opts += sub._option_strings() if isinstance(sub, Parser) else []
        return opts

    def parse_args(  # type: ignore[override]  # one signature for argparse's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = list(args if args is not None else sys.argv[1:])
        Parser._typed = argv  # what the user typed, so that no error message can repeat it
        ns, extras = self.parse_known_args(argv, namespace)
        if extras:
            self._unrecognized(argv, extras)
        return ns

    def _unrecognized(self, argv: list[str], extras: list[str]) -> None:
        first = extras[0]
        position = argv.index(first) + 1 if first in argv else None
        where = f"argument {position}" if position else "an argument"
        options = self._option_strings()
        hint = f"; {self.value_hint}" if self.value_hint else ""
        if first.startswith("-"):
            name = first.split("=", 1)[0]
            if hint and name in self.guessed:
                self.error(f"unrecognized option {name}{hint}")
            # Name it only when its text is part of a real option's name: anything else the
            # user typed could be a secret pasted into the wrong place.
            longer = sorted({o for o in options if o.startswith(name) and o != name}) if len(name) > 2 else []
            shown = name if longer else None
            close = longer or difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            if any("secret" in o for o in close):
                hint += " Secrets are never taken on the command line: use the environment or a 0600 file"
            label = f"option {shown}" if shown else f"{where} (an unknown option, not shown)"
            self.error(f"unrecognized {label}{hint}")
        self.error(
            (f"unexpected {where} and {len(extras) - 1} more" if len(extras) > 1 else f"unexpected {where} (not shown)")
            + hint
        )

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {self._sanitize(message)} (see --help)", file=sys.stderr)
        sys.exit(USAGE_EXIT)

    def _sanitize(self, message: str) -> str:
        """argparse repeats the offending value (as repr, in either quote style) in several
        messages; keep only our own words, then strip anything typed that is still there."""
        if ": invalid choice: " in message and "(choose from " in message:
            # The choices come last; the value, before them, may itself contain anything.
            head = message.split(": invalid choice: ", 1)[0]
            message = f"{head}: invalid choice; choose from {message.rsplit('(choose from ', 1)[1].rstrip(')')}"
        message = re.sub(r"invalid (\S+) value: .*$", r"invalid \1 value", message, flags=re.S)
        message = re.sub(r"ignored explicit argument .*$", "takes no value", message, flags=re.S)
        message = re.sub(r"unrecognized arguments: .*$", "unrecognized arguments (not shown)", message, flags=re.S)
        safe = self._safe_words()
        typed = {piece for tok in getattr(Parser, "_typed", []) for piece in (tok, *tok.split("=", 1))}
        for piece in sorted(typed - safe, key=len, reverse=True):
            # Text that is part of a real option's name (an abbreviation) is ours, not a secret.
            if len(piece) >= 4 and not any(piece in word for word in safe):
                message = message.replace(repr(piece), "<value not shown>").replace(piece, "<value not shown>")
        message = _QUOTED.sub(lambda m: m.group(0) if m.group(1) in safe else "<value not shown>", message)
        return " ".join(message.split())


# -- running ------------------------------------------------------------------------------------


def _stderr(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass  # nowhere left to report to; the exit code still says it


def _flush_stdout() -> None:
    if sys.stdout is not None:
        sys.stdout.flush()


def _silence_stdout() -> None:
    # After a failed write, Python would try to flush again at exit and print a traceback.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> None:
    """Run a script's main and exit: 0 ok, 1 failed or refused, 2 usage, input or connection error."""
    # psycopg logs the errors it ignores (a rollback after Ctrl-C) through logging's last-resort
    # handler, straight to stderr: the one error line below says what happened.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    logging.getLogger("psycopg").propagate = False
    try:
        code = main(sys.argv[1:] if argv is None else argv)
        _flush_stdout()
    except BundleError as exc:
        _stderr(f"error: {exc}")
        code = exc.exit_code
    except psycopg.Error as exc:
        # Only libpq's or the server's primary message: details could quote row values.
        if db.is_connection_failure(exc):
            _stderr(f"error: lost the connection to the database: {db.libpq_reason(exc)}")
            code = USAGE_EXIT
        else:
            _stderr(f"error: database error: {db.libpq_reason(exc)}")
            code = FAILED_EXIT
    except KeyboardInterrupt:
        _stderr("error: interrupted")
        code = 130
    except OSError as exc:
        # Never exc.filename or str(exc): the path may be something the user typed.
        if exc.errno in (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EFBIG) or isinstance(exc, BrokenPipeError):
            _silence_stdout()
            _stderr(f"error: cannot write the output: {exc.strerror or 'write failed'}")
        else:
            _stderr(f"error: the operating system refused an operation: {exc.strerror or type(exc).__name__}")
        code = USAGE_EXIT
    except Exception as exc:  # a bug: still one line, and no value that could be a secret
        if os.environ.get("X402_DEBUG"):
            raise
        _stderr(
            f"error: internal error ({type(exc).__name__}); run again with X402_DEBUG=1 for the traceback and report it"
        )
        code = FAILED_EXIT
    sys.exit(code)
