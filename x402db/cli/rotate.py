"""`scripts/rotate_keys.py`: dry run by default, --apply to write."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack

import psycopg

from .. import db
from ..access import INTEGRATIONS
from ..errors import Refused
from ..keys.crypto import FORMATS, Keyring, fingerprint
from ..keys.rotation import MAX_BATCH, REASON_HINTS, WRITERS, Rotator
from ..keys.source import PREVIOUS_ENV, SECRET_ENV, previous_secrets, primary_secret
from .common import (
    Parser,
    add_common,
    add_shape_args,
    int_range,
    print_json,
    progress_bar,
    quiet,
    run,
    shape_from_args,
)


def build_parser() -> Parser:
    p = Parser(
        prog="rotate_keys.py",
        value_hint=(
            f"secrets are never taken on the command line: the new one from ${SECRET_ENV} or --new-secret-file, "
            f"old ones from ${PREVIOUS_ENV} or --old-secret-file (files of mode 0600)"
        ),
        guessed=("--key", "--secret", "--new-key", "--old-key", "--new", "--old"),
        description=(
            f"Re-encrypt every key in {INTEGRATIONS} under the new secret (${SECRET_ENV} or --new-secret-file), "
            f"reading old ones with ${PREVIOUS_ENV} (comma-separated) or --old-secret-file. Dry run unless --apply."
        ),
    )
    p.add_argument("--apply", action="store_true", help="write; without it nothing is written")
    p.add_argument("--new-secret-file", help=f"file (mode 0600) with the new secret (default: ${SECRET_ENV})")
    p.add_argument(
        "--old-secret-file", action="append", help=f"file with an old secret; repeatable (default: ${PREVIOUS_ENV})"
    )
    p.add_argument(
        "--to-format", choices=FORMATS, default="legacy", help="legacy (what today's backend reads; default) or v2"
    )
    p.add_argument(
        "--batch-size",
        type=int_range(1, MAX_BATCH),
        default=1000,
        help="rows per short transaction (default %(default)s)",
    )
    add_shape_args(p)
    add_common(p)
    return p


def _progress(total: int, enabled: bool) -> tuple[Callable[[int], object], Callable[[], object]]:
    if not enabled or total == 0:
        return lambda n: None, lambda: None
    bar = progress_bar(total, "rows")
    return bar.update, bar.close


def _rows_to_rotate(conn: psycopg.Connection) -> int:
    """For the progress bar; 0 when the table is missing (the Rotator refuses that itself)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (INTEGRATIONS,)).fetchone()
    if not (exists and exists[0]):
        return 0
    counted = conn.execute(f"SELECT count(*) FROM {INTEGRATIONS}").fetchone()
    assert counted is not None  # an aggregate returns one row
    return int(counted[0])


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    new = primary_secret(args.new_secret_file, option="--new-secret-file")
    olds = previous_secrets(args.old_secret_file)
    same = fingerprint(new) in {fingerprint(o) for o in olds}
    if same:
        # The keyring would silently merge them, and the run would "complete" having rotated
        # nothing: the operator almost certainly swapped or mistyped a file.
        raise Refused(
            f"the new secret is the same as an old secret (key {fingerprint(new)}): rotating to it changes "
            "nothing; check which file or variable holds the new secret"
        )
    keyring = Keyring(new, olds)
    if args.to_format == "v2" and args.apply and not args.json:
        print("note: today's backend reads only the legacy format; write v2 only once it reads v2", file=sys.stderr)
    dsn = db.resolve_dsn(args.dsn)
    with ExitStack() as stack:
        conn = stack.enter_context(db.connect(dsn, application_name="x402db-rotate-keys"))
        writers = [
            stack.enter_context(db.connect(dsn, application_name="x402db-rotate-keys-writer")) for _ in range(WRITERS)
        ]
        total = _rows_to_rotate(conn)
        update, close = _progress(total, not args.json and not quiet())
        try:
            report = Rotator(
                conn,
                keyring,
                args.to_format,
                args.batch_size,
                shape_from_args(args),
                progress=update,
                write_conn=writers[0],
                more_writers=writers[1:],
            ).run(args.apply)
        finally:
            close()
    doc = report.as_dict()
    if args.json:
        print_json(doc)
    else:
        _print_human(doc)
    if report.undecryptable:
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(report.undecryptable_reasons.items()))
        print(
            f"error: {len(report.undecryptable)} rows could not be decrypted ({counts}) and were left unchanged; "
            + "; ".join(f"{reason}: {REASON_HINTS.get(reason, '')}" for reason in sorted(report.undecryptable_reasons)),
            file=sys.stderr,
        )
    return 0 if report.ok else 1


def _print_human(doc: dict) -> None:
    verb = "rotated" if doc["mode"] == "apply" else "would rotate"
    print(
        f"{'APPLY' if doc['mode'] == 'apply' else 'DRY RUN (nothing written; pass --apply)'}: {doc['total']} rows, to {doc['to_format']} under key {doc['new_key']}"
    )
    # The same line as the runbook's Node command prints for the backend: equal lines, same keys.
    print(f"  key fingerprints: new {doc['new_key']}; old {', '.join(doc['old_keys']) or 'none'}")
    for fp, n in sorted(doc["rows_by_key"].items()):
        role = "new" if fp == doc["new_key"] else "old"
        print(f"  key {fp} ({role}) decrypts {n} rows")
    print(f"  already under the new key: {doc['already_current']}")
    print(
        f"  {verb}: {doc.get('rotated', doc.get('to_rotate'))}"
        + (f" (re-handled {doc['conflicts_rehandled']} concurrent writes)" if doc["conflicts_rehandled"] else "")
    )
    if doc["undecryptable"]:
        print(
            f"  NOT DECRYPTED {doc['undecryptable']} rows (left untouched): {', '.join(doc['undecryptable_user_ids'])}"
        )
        for reason, n in sorted(doc["undecryptable_by_reason"].items()):
            print(f"    {reason}: {n} rows; {REASON_HINTS.get(reason, '')}")
    if doc["run_id"] is not None:
        print(f"  audit: x402_private.key_rotation_runs id {doc['run_id']}, status {doc['status']}")


def cli() -> None:
    """The console command: exits with main's code, or 2 with one line on bad input."""
    run(main)
