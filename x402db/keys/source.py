"""Where secrets come from: the environment, or a file only its owner can read. Never argv.

Nothing is guessed: the backend reads INTEGRATION_ENCRYPTION_SECRET verbatim, so a file whose
content is not exactly "the secret, plus at most one final newline" would give another key.
Such a file is refused with a line that says how to fix it. The variables themselves are held to
the same rule, without the newline: a value with whitespace at either end is refused here and by
the Node keyring, so the same bytes never give the backend and the scripts two different keys. No message names the path or
repeats the content: the user may have typed the secret where the path belongs.
"""

from __future__ import annotations

import os
import re
import stat

from ..errors import UsageError

SECRET_ENV = "INTEGRATION_ENCRYPTION_SECRET"
PREVIOUS_ENV = "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS"
MAX_SECRET_FILE = 64 * 1024  # a secret is short; a large file is a wrong file
# One wording for the Python and the Node keyring (clients/node/keyring.js), never the value.
EDGE_SPACE_FIX = (
    "starts or ends with whitespace (a space or a newline), which would become part of the key; "
    "set it to the secret alone, without a final newline"
)
FIX_FILE = "write it with `printf '%s' \"$SECRET\" > FILE` (or with a single final newline)"


def check_value(text: str, what: str, fix: str) -> str:
    """`text` minus at most one final "\\n", refusing anything that would silently change the key."""
    value = text[:-1] if text.endswith("\n") else text
    problem = None
    if not value:
        problem = "is empty"
    elif "\r" in value or "\n" in value:
        problem = "has a carriage return or more than one line (Windows line ending or a blank line)"
    elif value.startswith("\ufeff"):
        # An editor's UTF-8 signature (Notepad writes one): invisible, yet part of the key.
        problem = "starts with a byte-order mark (an editor's UTF-8 signature), which would become part of the key"
    elif _EDGE_SPACE.search(value):
        problem = "starts or ends with whitespace, which would become part of the key"
    elif "\x00" in value:
        # No environment variable can hold a NUL: the backend could never be given this key.
        problem = "contains a NUL byte, which no environment variable can hold"
    if problem:
        raise UsageError(f"{what} {problem}: {fix}")
    return value


def read_secret_file(path: str, option: str = "--secret-file") -> str:
    """The secret in `path`: owned by us (or root), mode 0600/0400, a regular file, UTF-8."""
    what = f"the file given to {option}"
    try:
        # O_NONBLOCK: a FIFO would otherwise block the open; it is refused below. The checks
        # run on the opened file (fstat), so a link swapped meanwhile changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a usable path"
        raise UsageError(
            f"{what} cannot be opened ({reason}); pass the path of a file holding the secret, never the secret itself"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{what} is not a regular file (after following links); keep the secret in a plain file")
        if st.st_uid not in (os.geteuid(), 0):
            raise UsageError(
                f"{what} belongs to another user (uid {st.st_uid}); use a secret file you own "
                f"(cp it, then chmod 600), since its owner could replace the secret"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode not in (0o600, 0o400):
            raise UsageError(f"{what} has mode {mode:o}; run chmod 600 on it (only 0600 or 0400 are accepted)")
        if st.st_size > MAX_SECRET_FILE:
            raise UsageError(f"{what} is larger than {MAX_SECRET_FILE // 1024} KiB; it does not hold just a secret")
        chunks = []
        while chunk := os.read(fd, MAX_SECRET_FILE + 1):
            chunks.append(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"{what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not UTF-8 text; {FIX_FILE}") from None
    return check_value(text, what, FIX_FILE)


def write_secret_file(path: str, secret: str, option: str = "--out") -> None:
    """A new file holding exactly `secret` (no newline), mode 0600 whatever the umask; an existing
    file is never replaced, since it may hold the only copy of another secret."""
    what = f"the file given to {option}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise UsageError(f"{what} already exists; give a new path (a secret file is never overwritten)") from None
    except (OSError, ValueError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a usable path"
        raise UsageError(f"{what} cannot be created ({reason})") from None
    try:
        os.fchmod(fd, 0o600)
        data = secret.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)  # a half-written secret would be a wrong key later
        raise UsageError(f"{what} cannot be written ({exc.strerror})") from None
    os.close(fd)


def env_secret(name: str) -> str | None:
    """The variable's value exactly as the backend reads it; refused if it is not UTF-8."""
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        value.encode("utf-8")  # non-UTF-8 bytes arrive as lone surrogates
    except UnicodeEncodeError:
        raise UsageError(f"{name} contains bytes that are not UTF-8; set it to the secret as UTF-8 text") from None
    return value


def primary_secret(file: str | None, env: str = SECRET_ENV, option: str = "--secret-file") -> str:
    if file is not None:
        return read_secret_file(file, option)
    value = env_secret(env)
    if value is None:
        raise UsageError(f"no encryption secret: set {env} or pass {option}")
    if not value:
        raise UsageError(f"{env} is set but empty")
    if _EDGE_SPACE.search(value):
        # The backend reads the variable verbatim, so a secret manager's copy of a file with its
        # final newline would silently be another key; the Node keyring refuses it the same way.
        raise UsageError(f"{env} {EDGE_SPACE_FIX}")
    return value


def previous_secrets(files: list[str] | None, env: str = PREVIOUS_ENV, option: str = "--old-secret-file") -> list[str]:
    if files:
        return [read_secret_file(f, option) for f in files]
    value = env_secret(env) or ""
    parts = value.split(",") if value else []
    if any(not p for p in parts):
        raise UsageError(f"{env} has an empty entry; separate secrets with single commas")
    if any(_EDGE_SPACE.search(p) for p in parts):
        # "old1, old2" would otherwise yield the secret " old2": refused, never guessed.
        raise UsageError(
            f"{env} has an entry with leading or trailing whitespace; separate secrets with single commas and no spaces"
        )
    return parts


# Whitespace at either end of a secret from the environment, the same class as the Node keyring's (JavaScript's
# trim() and Python's strip() differ on U+FEFF and U+001C-U+001F, so neither is used).
_SPACE = "\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_EDGE_SPACE = re.compile(f"^[{_SPACE}]|[{_SPACE}]\\Z")
