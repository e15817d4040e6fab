"""The password file is read as libpq reads it: the first matching line wins, `*` matches any
value, `\\:` and `\\\\` are a literal colon and backslash, and an entry the connection string's
passfile holds wins over an exported PGPASSWORD (which libpq would otherwise take first)."""

from __future__ import annotations

import os

import pytest

from x402db.pgpass import lookup, password_over_environment

FILE = "\n".join(
    [
        "# a comment line is skipped, even when it looks like an entry",
        "#127.0.0.1:5432:*:*:commented",
        "",
        "db\\:1.example:5432:app:alice:colon-host",
        "127.0.0.1:5432:app:alice:first",
        "127.0.0.1:5432:app:alice:second",
        "127.0.0.1:*:*:bob:any-port-any-db",
        "::1:5432:*:*:ipv6",
        "127.0.0.1:5433:*:*:pa\\:ss\\\\word:trailing field",
        "127.0.0.1:5434:*:*:windows\r",
        "localhost:5432:*:*:star\\*-is-literal-inside",
        "*:*:*:carol:any-host",
    ]
)


@pytest.mark.parametrize(
    ("host", "port", "dbname", "user", "password"),
    [
        ("127.0.0.1", "5432", "app", "alice", "first"),  # the first of two matching lines
        ("db:1.example", "5432", "app", "alice", "colon-host"),  # \: in a field is a colon
        ("127.0.0.1", "6000", "other", "bob", "any-port-any-db"),
        ("::1", "5432", "x", "y", "ipv6"),  # libpq lets unescaped colons match an IPv6 address
        ("127.0.0.1", "5433", "x", "y", "pa:ss\\word"),  # escapes undone, the password ends at a colon
        ("127.0.0.1", "5434", "x", "y", "windows"),
        ("localhost", "5432", "x", "y", "star*-is-literal-inside"),
        ("anywhere", "1", "x", "carol", "any-host"),
        ("127.0.0.1", "5432", "app", "mallory", None),
        ("127.0.0.12", "5432", "app", "alice", None),  # a prefix is not a match
        ("127.0.0.", "5432", "app", "alice", None),
        ("#127.0.0.1", "5432", "x", "y", None),
    ],
)
def test_lookup_follows_libpqs_rules(host, port, dbname, user, password):
    assert lookup(FILE, host, port, dbname, user) == password


def test_a_star_is_a_wildcard_only_as_the_whole_field():
    assert lookup("1*:5432:*:*:p", "1x", "5432", "d", "u") is None
    assert lookup("1*:5432:*:*:p", "1*", "5432", "d", "u") == "p"


def _passfile(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "pgpass"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_the_named_passfile_wins_over_pgpassword_only_where_it_has_the_entry(tmp_path):
    passfile = _passfile(tmp_path, "127.0.0.1:54329:*:*:from-file\n")
    params = {"host": "127.0.0.1", "port": "54329", "user": "postgres", "dbname": "x402", "passfile": passfile}
    env = {"PGPASSWORD": "exported-elsewhere"}
    assert password_over_environment(params, env) == "from-file"
    # libpq's own order already gives the intended answer in each of these: nothing is added.
    assert password_over_environment(params, {}) is None
    assert password_over_environment({**params, "password": "typed"}, env) is None
    assert password_over_environment({**params, "port": "5432"}, env) is None
    assert password_over_environment({k: v for k, v in params.items() if k != "passfile"}, env) is None
    assert password_over_environment({**params, "passfile": str(tmp_path / "missing")}, env) is None
    # libpq ignores a passfile others can read: so do we.
    assert password_over_environment({**params, "passfile": _passfile(tmp_path, "*:*:*:*:p", 0o644)}, env) is None


def test_defaults_come_from_the_environment_as_libpqs_do(tmp_path):
    passfile = _passfile(tmp_path, "localhost:5432:appdb:app:default-host\n127.0.0.1:6000:app:app:env\n")
    env = {"PGPASSWORD": "wrong"}
    assert password_over_environment({"passfile": passfile, "user": "app", "dbname": "appdb"}, env) == "default-host"
    # No database named: libpq uses the user's name.
    env_defaults = {**env, "PGHOST": "127.0.0.1", "PGPORT": "6000", "PGUSER": "app"}
    assert password_over_environment({"passfile": passfile}, env_defaults) == "env"
