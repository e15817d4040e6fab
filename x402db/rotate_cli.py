"""`scripts/rotate_keys.py`: dry run by default, --apply to write."""
from __future__ import annotations

import argparse
import sys

from . import db
from .cli import Parser, add_common, add_shape_args, print_json, quiet, shape_from_args
from .crypto import FORMATS, Keyring
from .rotation import TABLE, Rotator
from .secretsource import PREVIOUS_ENV, SECRET_ENV, previous_secrets, primary_secret


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def build_parser() -> Parser:
    p = Parser(prog="rotate_keys.py", description=(
        f"Re-encrypt every key in {TABLE} under the new secret (${SECRET_ENV} or --new-secret-file), "
        f"reading old ones with ${PREVIOUS_ENV} (comma-separated) or --old-secret-file. Dry run unless --apply."))
    p.add_argument("--apply", action="store_true", help="write; without it nothing is written")
    p.add_argument("--new-secret-file", help=f"file (mode 0600) with the new secret (default: ${SECRET_ENV})")
    p.add_argument("--old-secret-file", action="append", help=f"file with an old secret; repeatable (default: ${PREVIOUS_ENV})")
    p.add_argument("--to-format", choices=FORMATS, default="legacy", help="legacy (what today's backend reads; default) or v2")
    p.add_argument("--batch-size", type=_positive, default=1000, help="rows per short transaction (default %(default)s)")
    add_shape_args(p)
    add_common(p)
    return p


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return lambda n: None, lambda: None
    import shutil

    from tqdm import tqdm

    # A terminal that reports no size (0x0, e.g. some serial consoles) makes tqdm print
    # nothing; get_terminal_size falls back to 80x24 there.
    size = shutil.get_terminal_size()
    bar = tqdm(total=total, unit="rows", file=sys.stderr, ncols=size.columns, nrows=size.lines)
    return bar.update, bar.close


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    new = primary_secret(args.new_secret_file)
    olds = previous_secrets(args.old_secret_file)
    keyring = Keyring(new, olds)
    if args.to_format == "v2" and args.apply and not args.json:
        print("note: today's backend reads only the legacy format; write v2 only once it reads v2", file=sys.stderr)
    dsn = db.resolve_dsn(args.dsn)
    with db.connect(dsn, application_name="x402db-rotate-keys") as conn, \
            db.connect(dsn, application_name="x402db-rotate-keys-writer") as writer:
        total = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] if conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0] else 0
        update, close = _progress(total, not args.json and not quiet())
        try:
            report = Rotator(conn, keyring, args.to_format, args.batch_size, shape_from_args(args), progress=update,
                             write_conn=writer).run(args.apply)
        finally:
            close()
    doc = report.as_dict()
    if args.json:
        print_json(doc)
    else:
        _print_human(doc)
    if report.undecryptable and not any(report.by_key.get(fp) for fp in report.old_fingerprints):
        given = f"the old secret(s) given ({', '.join(report.old_fingerprints)})" if report.old_fingerprints else "no old secret"
        print(f"error: {len(report.undecryptable)} rows decrypt with neither the new secret nor {given}; "
              f"check {PREVIOUS_ENV} or --old-secret-file. Those rows were not changed", file=sys.stderr)
    return 0 if report.ok else 1


def _print_human(doc: dict) -> None:
    verb = "rotated" if doc["mode"] == "apply" else "would rotate"
    print(f"{'APPLY' if doc['mode'] == 'apply' else 'DRY RUN (nothing written; pass --apply)'}: {doc['total']} rows, to {doc['to_format']} under key {doc['new_key']}")
    for fp, n in sorted(doc["rows_by_key"].items()):
        role = "new" if fp == doc["new_key"] else "old"
        print(f"  key {fp} ({role}) decrypts {n} rows")
    print(f"  already under the new key: {doc['already_current']}")
    print(f"  {verb}: {doc.get('rotated', doc.get('to_rotate'))}" + (f" (re-handled {doc['conflicts_rehandled']} concurrent writes)" if doc["conflicts_rehandled"] else ""))
    if doc["undecryptable"]:
        print(f"  NO KEY DECRYPTS {doc['undecryptable']} rows (left untouched): {', '.join(doc['undecryptable_user_ids'])}")
    if doc["run_id"] is not None:
        print(f"  audit: x402_private.key_rotation_runs id {doc['run_id']}, status {doc['status']}")
