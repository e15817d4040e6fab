"""A fuzz test over the argv of every script in scripts/. Random options (real ones,
abbreviations, unknown ones, `--opt=value` forms) and values that contain a marker secret, with
the marker also in the environment's secrets and DSN. No output may ever contain the marker,
and no run may end in a traceback: every run exits 0, 1 or 2, and a failure is one `error:` line.

Scripts run in-process (the same `run()` entry point their `__main__` calls) so that hundreds of
argv vectors fit in a few seconds; the DSN points at a closed port, so nothing is ever written."""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from x402db import ROOT

MARKER = "mK7-fuzz-SECRET-q2W"
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))
# local_db.py actions that would start, stop, revert or delete the developer's own .local server,
# and migrate.py new, which writes files into the checkout's sql/ (tests/unit/test_scaffold.py
# runs it on a copy, and checks that a name is never echoed); encrypt_key.py --out, which creates
# the file it is given (tests/unit/test_encrypt_cli.py runs it in a temporary directory).
NEVER = {"start", "stop", "revert", "delete", "new", "--out"}
ENV = {
    "DATABASE_URL": f"postgresql://fuzz:{MARKER}@127.0.0.1:1/x?sslpassword={MARKER}",
    "INTEGRATION_ENCRYPTION_SECRET": MARKER,
    "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": f"old-{MARKER}",
    "PGCONNECT_TIMEOUT": "2",
    "CI": "1",
}
KEY = "sk-or-v1-" + "cd" * 32


def run_in_process(script: str, argv: list[str], stdin: bytes = b"", env: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    saved = sys.argv, sys.stdin, dict(os.environ)
    sys.argv, sys.stdin = [script, *argv], fake_stdin
    os.environ.pop("PGPASSFILE", None)
    os.environ.update({**ENV, **(env or {})})
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv, sys.stdin = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])
    return code, out.getvalue(), err.getvalue()


def vocabulary(script: str) -> list[str]:
    """The script's options and sub-commands, read from its own --help (and its sub-commands')."""
    words: set[str] = set()
    pending, seen = [[]], set()
    while pending:
        prefix = pending.pop()
        _, text, _ = run_in_process(script, [*prefix, "--help"])
        words |= set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text))
        for group in re.findall(r"\{([^}]+)\}", text):
            for choice in group.split(","):
                words.add(choice)
                if not prefix and choice not in seen and choice not in NEVER:
                    seen.add(choice)
                    pending.append([choice])
    return sorted(words - NEVER)


VOCAB = {s: vocabulary(s) for s in SCRIPTS}

_junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
with_marker = st.builds(lambda a, b: a + MARKER + b, _junk, _junk)
dsn_with_marker = st.sampled_from(
    [
        f"postgresql://u:{MARKER}@127.0.0.1:1/x",
        f"postgresql://u:t@{MARKER}@127.0.0.1:1/x",
        f"postgresql://u:12/{MARKER}@127.0.0.1:1/x",  # libpq ends the password at an unescaped '/'
        f"host=127.0.0.1 port=1 password={MARKER}",
        f"host=127.0.0.1 port=1 sslpassword={MARKER} user=u",
        f"postgresql://127.0.0.1:1/x?password={MARKER}&sslpassword={MARKER}",
        f"port=1 host=127.0.0.1 password='{MARKER}",
    ]
)


def token(script: str):
    vocab = VOCAB[script]
    options = [w for w in vocab if w.startswith("--")]
    return st.one_of(
        st.sampled_from(vocab),
        with_marker,
        dsn_with_marker,
        st.sampled_from(options).map(lambda o: f"{o}={MARKER}"),
        st.sampled_from(options).flatmap(lambda o: st.integers(3, len(o)).map(lambda n: o[:n])),  # abbreviations
        st.sampled_from(["-h", "--", "-", "--x", "-x"]).map(lambda p: p + MARKER),
        # argparse quotes values with repr: a quote inside switches the quote style.
        st.sampled_from(["'", '"', "\\", "' (choose from 'x')", "\n"]).map(lambda q: MARKER + q),
        st.sampled_from(["0", "-1", "99999999999999999999", "1e3", "", " ", "\u0661"]),
    )


def argv_for(script: str):
    return st.lists(token(script), max_size=6)


stdin_bytes = st.one_of(
    st.just(b""),
    st.just((KEY + "\n").encode()),
    with_marker.map(str.encode),
    st.binary(max_size=12).map(lambda b: b + MARKER.encode()),
)


@pytest.mark.parametrize("script", SCRIPTS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_argv_ever_prints_the_marker_or_a_traceback(script, data):
    argv = data.draw(argv_for(script), label="argv")
    stdin = data.draw(stdin_bytes, label="stdin")
    database_url = data.draw(st.one_of(st.just(ENV["DATABASE_URL"]), dsn_with_marker), label="DATABASE_URL")
    code, out, err = run_in_process(script, argv, stdin, {"DATABASE_URL": database_url})
    both = out + err
    assert MARKER not in both, (argv, both)
    assert "Traceback" not in both and "internal error" not in err, (argv, both)
    assert code in (0, 1, 2), (argv, code, both)
    if code:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert last.startswith("error: "), (argv, both)


def test_every_script_is_fuzzed_with_its_real_options():
    assert set(SCRIPTS) >= {
        "encrypt_key.py",
        "rotate_keys.py",
        "smoke.py",
        "migrate.py",
        "deploy_local.py",
        "local_db.py",
    }
    assert "--new-secret-file" in VOCAB["rotate_keys.py"] and "--secret-file" in VOCAB["encrypt_key.py"]
    assert {"up", "down", "status", "--allow-data-loss"} <= set(VOCAB["migrate.py"])
    assert not NEVER & set(VOCAB["local_db.py"])
