"""libpq's password file, read the way libpq reads it.

libpq takes PGPASSWORD from the environment before the passfile a connection string names. The
embedded server's URL names its own passfile, so a developer with PGPASSWORD exported for another
database would get "password authentication failed" from every command. When a connection string
names a passfile and no password, the file's entry is meant for this server, so it wins; a file
that is missing, unsafe or without a match leaves libpq to do what it always does."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PORT = "5432"
# libpq's name for a connection without a host (the default Unix socket), as pgpass lines write it.
DEFAULT_HOST = "localhost"


def _field(line: str, pos: int, token: str) -> int | None:
    """Where the next field starts if the field at `pos` matches `token` (libpq's
    pwdfMatchesString: `*` matches anything, a backslash makes the next character literal)."""
    if line.startswith("*:", pos):
        return pos + 2
    i, j = pos, 0
    while i < len(line):
        escaped = line[i] == "\\"
        if escaped:
            i += 1
            if i == len(line):
                return None
        # An unescaped colon ends the field only once the token is used up: libpq lets one
        # match a colon of the token (an IPv6 address) too.
        if line[i] == ":" and j == len(token) and not escaped:
            return i + 1
        if j == len(token) or line[i] != token[j]:
            return None
        i, j = i + 1, j + 1
    return None


def _password(line: str, pos: int) -> str:
    """The rest of the line up to an unescaped colon, with its escapes removed."""
    out = []
    i = pos
    while i < len(line) and line[i] != ":":
        if line[i] == "\\" and i + 1 < len(line):
            i += 1
        out.append(line[i])
        i += 1
    return "".join(out)


def lookup(text: str, host: str, port: str, dbname: str, user: str) -> str | None:
    """The password of the first line of a pgpass file matching host:port:database:user."""
    for raw in text.split("\n"):
        line = raw.rstrip("\r\n")
        if not line or line.startswith("#"):
            continue
        pos: int | None = 0
        for token in (host, port, dbname, user):
            pos = _field(line, pos, token) if pos is not None else None
        if pos is not None:
            return _password(line, pos)
    return None


def _read(path: str) -> str | None:
    """The file's text, or None where libpq would not read it either (missing, not a regular
    file, readable by group or others)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            return None
        return Path(path).read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        return None


def password_over_environment(params: Mapping[str, str], env: Mapping[str, str] = os.environ) -> str | None:
    """The named passfile's password for this connection, when PGPASSWORD would otherwise win
    over it; None whenever libpq's own order already gives the intended answer."""
    passfile = params.get("passfile")
    if not passfile or params.get("password") or not env.get("PGPASSWORD"):
        return None
    host = params.get("host") or env.get("PGHOST") or params.get("hostaddr") or DEFAULT_HOST
    port = params.get("port") or env.get("PGPORT") or DEFAULT_PORT
    if "," in host + port or host.startswith(("/", "@")):
        return None  # several hosts, or a socket directory: not a case our URLs make
    user = params.get("user") or env.get("PGUSER") or pwd.getpwuid(os.geteuid()).pw_name
    dbname = params.get("dbname") or env.get("PGDATABASE") or user
    text = _read(passfile)
    return lookup(text, host, port, dbname, user) if text is not None else None
