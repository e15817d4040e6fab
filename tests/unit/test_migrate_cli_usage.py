"""scripts/migrate.py and deploy_local.py refuse bad arguments with exit 2 and one line, before
connecting; a missing or unreachable database is exit 2 too."""

from __future__ import annotations

import pytest

from tests.utils.scripts import call_script


def test_cli_usage_and_connection_errors_exit_2():
    r = call_script("migrate.py", "up")
    assert r.returncode == 2 and "DATABASE_URL" in r.stderr
    r = call_script("migrate.py", "up", "--dsn", "postgresql://nobody:hunter2@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" in r.stderr and "hunter2" not in r.stderr
    r = call_script("migrate.py", "sideways")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--to", "7"],
        ["up", "--to", "abc"],
        ["up", "--to", "base"],
        ["up", "--to", "-1"],
        ["down", "--to", "2"],
        ["down", "--to", "005x"],
        ["up", "--lock-timeout", "0"],
        ["up", "--lock-timeout", "2min"],
        ["up", "--lock-timeout", "soon"],
        ["down", "--lock-timeout", "0ms"],
        ["up", "--statement-timeout", "0"],
        ["up", "--retries", "\uff15"],
        ["up", "--retries", "99999999999999999999"],
        ["down", "--retries", "-1"],
    ],
)
def test_bad_versions_and_timeouts_exit_2_before_connecting(args):
    r = call_script("migrate.py", *args, "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["2147483648", "2147483648ms", "2147484s", "35792min", "596524h"])
@pytest.mark.parametrize("command", ["up", "down", "plan"])
def test_statement_timeout_above_postgres_maximum_exits_2_before_connecting(command, value):
    # Above PostgreSQL's maximum: refused as usage, not let through to connect and fail with exit 1.
    r = call_script("migrate.py", command, "--statement-timeout", value, "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "statement_timeout" in r.stderr


def test_deploy_local_refuses_a_zero_lock_timeout():
    r = call_script("deploy_local.py", "--lock-timeout", "0", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert r.returncode == 2 and "lock_timeout must" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--to", "\u00b2"],
        ["up", "--to", "\u0665"],
        ["down", "--to", "\u0661"],
        ["up", "--lock-timeout", "\uff11s"],
        ["up", "--statement-timeout", "\u0665s"],
        ["up", "--lock-timeout", "1\u00a0s"],
    ],
)
def test_non_ascii_digits_are_refused_with_exit_2(args):
    # Python's isdigit() and \d take any Unicode digit: '²' crashed with a traceback, '٥' was
    # read as 5, and '１s' passed the check only for PostgreSQL to reject it after connecting.
    r = call_script("migrate.py", *args, "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 2 and "cannot connect" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
