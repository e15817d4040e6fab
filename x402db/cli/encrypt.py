"""`scripts/encrypt_key.py`: encrypt, decrypt or store one user's OpenRouter API key."""

from __future__ import annotations

import sys

from .. import db
from ..errors import Refused, UsageError
from ..keys import store
from ..keys.crypto import FORMATS, Context, DecryptError, Keyring, fingerprint, generate_secret, shape_ok
from ..keys.source import SECRET_ENV, primary_secret, write_secret_file
from .common import Parser, add_common, add_shape_args, print_json, read_stdin, run, shape_from_args

# Options a user may try for the API key itself; none exists, and --key-pattern takes a regex.
GUESSED_KEY_OPTIONS = ("--key", "--api-key", "--apikey", "--openrouter-key", "--token", "--plaintext")


def build_parser() -> Parser:
    p = Parser(
        prog="encrypt_key.py",
        value_hint=(
            "the API key goes on stdin, never on the command line (e.g. `pbpaste | encrypt_key.py`), "
            f"and the secret in ${SECRET_ENV} or --secret-file"
        ),
        guessed=GUESSED_KEY_OPTIONS,
        description=(
            "Encrypt an OpenRouter API key read from stdin (never argv) in the backend's format. "
            f"The secret comes from ${SECRET_ENV} or --secret-file (mode 0600)."
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--decrypt", action="store_true", help="read a ciphertext from stdin, print the plaintext")
    mode.add_argument(
        "--store", action="store_true", help="encrypt and upsert the user's row (needs --user-id and a DSN)"
    )
    mode.add_argument(
        "--generate-secret",
        action="store_true",
        help="a new random 32-byte secret as 64 hex digits: to --out FILE (0600), or stdout with no final newline "
        "(a newline on a terminal only)",
    )
    p.add_argument("--out", help="with --generate-secret: a new file (mode 0600, never overwritten) for the secret")
    p.add_argument("--format", choices=FORMATS, default="legacy", help="legacy (what the backend reads; default) or v2")
    p.add_argument("--user-id", help="the row's user_id: required by --store and by the v2 format")
    p.add_argument("--secret-file", help=f"file holding the secret (default: ${SECRET_ENV})")
    add_shape_args(p)
    add_common(p)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.generate_secret:
        return _generate(args.out, args.json)
    if args.out is not None:
        raise UsageError("--out is only for --generate-secret; ciphertexts go to stdout")
    user_id = store.parse_user_id(args.user_id, "--user-id") if args.user_id else None
    if args.store and not user_id:
        raise UsageError("--store needs --user-id")
    if args.format == "v2" and not user_id and not args.decrypt:
        raise UsageError("the v2 format binds the ciphertext to its row: pass --user-id")
    shape = shape_from_args(args)
    keyring = Keyring(primary_secret(args.secret_file))
    context = Context(user_id) if user_id else None

    if args.decrypt:
        token = read_stdin("ciphertext", "Ciphertext: ")
        try:
            plaintext, fp = keyring.decrypt_with_key(token, context, shape)
        except DecryptError as exc:
            raise Refused(f"cannot decrypt ({exc.reason}): {exc}") from None
        print_json({"plaintext": plaintext, "key_fingerprint": fp}) if args.json else print(plaintext)
        return 0

    dsn = db.resolve_dsn(args.dsn) if args.store else None  # fail on usage before reading a key
    plaintext = read_stdin("API key", "OpenRouter API key (not echoed): ")
    if not shape_ok(plaintext, shape):
        raise Refused(
            "the input does not look like an OpenRouter key (sk-or-v1- and 64 hex digits); "
            "pass --key-pattern or --any-key-shape for other key shapes"
        )
    token = keyring.encrypt(plaintext, args.format, context)
    if not keyring.verify(token, plaintext, context):  # never store what cannot be read back
        raise Refused("internal check failed: the new ciphertext does not decrypt to the input")
    if dsn is not None:  # --store
        assert user_id, "--store without --user-id was refused above"
        with db.connect(dsn, application_name="x402db-encrypt-key") as conn:
            action = store.store(conn, user_id, token)
        doc = {
            "user_id": user_id,
            "action": action,
            "format": args.format,
            "key_fingerprint": keyring.primary_fingerprint,
        }
        print_json(doc) if args.json else print(
            f"{action} the key of user {user_id} ({args.format}, secret {keyring.primary_fingerprint})"
        )
        return 0
    doc = {"ciphertext": token, "format": args.format, "key_fingerprint": keyring.primary_fingerprint}
    print_json(doc) if args.json else print(token)
    return 0


def _generate(out: str | None, as_json: bool) -> int:
    """The exact bytes the backend must be given: no newline goes into a file or a pipe, since a
    secret manager would keep it and the backend would read another key (both keyrings refuse it)."""
    secret = generate_secret()
    fp = fingerprint(secret)
    if out is not None:
        write_secret_file(out, secret)
        doc = {"out": "written", "key_fingerprint": fp}
        print_json(doc) if as_json else print(f"wrote a new secret to the --out file (mode 0600, no newline): key {fp}")
    elif as_json:
        print_json({"secret": secret, "key_fingerprint": fp})
    elif sys.stdout.isatty():
        print(secret)
        print(
            f"new secret, key {fp}: store exactly these 64 characters, with no newline after them "
            "(or run with --out FILE to get a 0600 file)",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(secret)
    return 0


def cli() -> None:
    """The console command: exits with main's code, or 2 with one line on bad input."""
    run(main)
