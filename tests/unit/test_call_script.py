"""call_script stands in for run_script in the database tier's CLI tests: the same script file
must give the same exit code and the same streams in this process as in a fresh one, see only
the environment it is given, and leave this process's environment and streams as they were."""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.utils.scripts import MARKER, call_script, run_script

KEY = "sk-or-v1-" + "ab" * 32
TOKEN = re.compile(r"[0-9a-f]{32}:[0-9a-f]+\n")

CASES = [
    # (script and argv, env, stdin)
    (("migrate.py", "plan", "--bogus"), {}, None),
    (("migrate.py", "up"), {}, None),  # no DSN: DATABASE_URL below must not be inherited
    (("encrypt_key.py",), {"INTEGRATION_ENCRYPTION_SECRET": "s"}, KEY),
    (("encrypt_key.py",), {}, KEY),  # the caller's secret is not inherited either
    (("encrypt_key.py",), {"INTEGRATION_ENCRYPTION_SECRET": "s"}, None),  # nothing on stdin
    (("encrypt_key.py", "--secret", MARKER), {}, KEY),
    (("smoke.py", "--help"), {}, None),
]


@pytest.mark.parametrize("argv, env, stdin", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_call_script_gives_what_a_fresh_process_gives(argv, env, stdin, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody:{MARKER}@127.0.0.1:1/x")
    monkeypatch.setenv("INTEGRATION_ENCRYPTION_SECRET", MARKER)
    environ, streams = dict(os.environ), (sys.stdin, sys.stdout, sys.stderr)
    inside = call_script(*argv, env=env, input=stdin)
    assert dict(os.environ) == environ and (sys.stdin, sys.stdout, sys.stderr) == streams
    fresh = run_script(*argv, env=env, input=stdin)
    assert inside.returncode == fresh.returncode, (inside, fresh)
    assert inside.stderr == fresh.stderr
    if TOKEN.fullmatch(fresh.stdout):  # a random IV: the same shape, not the same bytes
        assert TOKEN.fullmatch(inside.stdout), inside.stdout
    else:
        assert inside.stdout == fresh.stdout
    assert MARKER not in inside.stdout + inside.stderr
