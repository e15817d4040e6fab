"""Operator input and secrets, attacked the way a tired operator or a
hostile input would: nothing echoed, nothing guessed, one line (no traceback) for every mistake,
and the exit code the contract names (2 usage/input/environment/connection, 1 refused/failed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.utils.scripts import MARKER, assert_one_line_error, run_script
from x402db import ROOT, db
from x402db.keys.crypto import Keyring

KEY = "sk-or-v1-" + "ab" * 32
NEW = "new-secret-0002"
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))


def secret_file(tmp_path, content: bytes | str, mode: int = 0o600, name: str = "secret"):
    f = tmp_path / name
    f.write_bytes(content.encode() if isinstance(content, str) else content)
    f.chmod(mode)
    return f


# -- a secret typed on argv is never echoed --------------------------------------------------


@pytest.mark.parametrize(
    "script,argv",
    [
        ("encrypt_key.py", ["--secret", MARKER]),
        ("rotate_keys.py", ["--new", MARKER]),
        ("rotate_keys.py", ["--new-secret", MARKER]),
        ("rotate_keys.py", ["--old", MARKER]),
        ("smoke.py", ["--secret", MARKER]),
        ("smoke.py", ["--secret=" + MARKER]),
        ("encrypt_key.py", ["--bogus", MARKER, MARKER + "2"]),  # argparse used to list the values
        ("encrypt_key.py", ["--" + MARKER]),
        ("encrypt_key.py", ["-h" + MARKER]),
        ("encrypt_key.py", ["--format", MARKER]),
        ("encrypt_key.py", ["--user-id", MARKER, "--store", "--dsn", "postgresql://x@127.0.0.1:1/x"]),
        ("migrate.py", [MARKER]),
        ("migrate.py", ["down", "--to", MARKER]),
        ("migrate.py", ["up", "--lock-timeout", MARKER]),
        ("local_db.py", [MARKER]),
    ],
)
def test_argv_values_are_never_echoed(script, argv):
    r = run_script(script, *argv, env={"INTEGRATION_ENCRYPTION_SECRET": "s"}, input=KEY)
    line = assert_one_line_error(r, 2)
    assert "--" in line or "argument" in line or "lock_timeout" in line  # names the option or the position


def test_abbreviations_are_off_and_the_message_names_the_option():
    r = run_script("encrypt_key.py", "--secret", MARKER, input=KEY)
    line = assert_one_line_error(r, 2)
    assert "--secret" in line and "--secret-file" in line and "command line" in line
    r = run_script("rotate_keys.py", "--new", MARKER)
    assert "--new-secret-file" in assert_one_line_error(r, 2)


# -- a secret file must be ours, private and regular -----------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_secret_file_owned_by_another_user_is_refused(tmp_path):
    f = secret_file(tmp_path, MARKER)
    os.chown(f, 65534, 65534)  # nobody: mode 0600, but someone else's file
    r = run_script("encrypt_key.py", "--secret-file", str(f), input=KEY)
    assert "belongs to another user" in assert_one_line_error(r, 2, str(f))


def test_secret_file_mode_link_and_kind(tmp_path):
    good = secret_file(tmp_path, MARKER + "\n")
    r = run_script("encrypt_key.py", "--secret-file", str(good), input=KEY)
    assert r.returncode == 0 and Keyring(MARKER).decrypt(r.stdout.strip()) == KEY
    ro = secret_file(tmp_path, MARKER, 0o400, "ro")
    assert run_script("encrypt_key.py", "--secret-file", str(ro), input=KEY).returncode == 0
    link = tmp_path / "link"
    link.symlink_to(good)  # a link to a good file is fine: the target is what is checked
    assert run_script("encrypt_key.py", "--secret-file", str(link), input=KEY).returncode == 0
    for mode in (0o640, 0o604, 0o700, 0o200):
        f = secret_file(tmp_path, MARKER, mode, f"m{mode:o}")
        assert "chmod 600" in assert_one_line_error(run_script("encrypt_key.py", "--secret-file", str(f), input=KEY), 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert "regular file" in assert_one_line_error(
        run_script("encrypt_key.py", "--secret-file", str(fifo), input=KEY, timeout=20), 2
    )
    assert "regular file" in assert_one_line_error(
        run_script("encrypt_key.py", "--secret-file", str(tmp_path), input=KEY), 2
    )
    missing = tmp_path / MARKER  # the secret pasted where the path belongs
    assert "never the secret itself" in assert_one_line_error(
        run_script("encrypt_key.py", "--secret-file", str(missing), input=KEY), 2
    )


# -- a secret file's content is exact, never guessed -----------------------------------------


@pytest.mark.parametrize(
    "content,words",
    [
        (MARKER + "\n\n", "more than one line"),
        (" " + MARKER + "\n", "whitespace"),
        (MARKER + " \n", "whitespace"),
        (MARKER + "\r\n", "carriage return"),
        ("\n" + MARKER, "more than one line"),
        (MARKER + "\t", "whitespace"),
        ("", "empty"),
        ("\n", "empty"),
        (b"\xff\xfe" + MARKER.encode(), "not UTF-8"),
        # Notepad's UTF-8 signature: invisible, yet it would become the key's first character.
        ("\ufeff" + MARKER, "byte-order mark"),
        ("\ufeff" + MARKER + "\n", "byte-order mark"),
        # No environment variable can hold a NUL, so the backend could never be given this key.
        (MARKER + "\x00", "NUL"),
    ],
)
def test_secret_file_content_that_would_change_the_key_is_refused(tmp_path, content, words):
    f = secret_file(tmp_path, content)
    for script, args in (
        ("encrypt_key.py", ["--secret-file", str(f)]),
        ("rotate_keys.py", ["--new-secret-file", str(f), "--dsn", "postgresql://x@127.0.0.1:1/x"]),
        ("rotate_keys.py", ["--old-secret-file", str(f), "--dsn", "postgresql://x@127.0.0.1:1/x"]),
    ):
        env = {"INTEGRATION_ENCRYPTION_SECRET": NEW} if "--old-secret-file" in args else {}
        line = assert_one_line_error(run_script(script, *args, input=KEY, env=env), 2)
        assert words in line and ("printf" in line or "UTF-8" in line), line


def test_secret_file_without_and_with_one_final_newline_give_the_same_key(tmp_path):
    tokens = []
    for content in (MARKER, MARKER + "\n"):
        f = secret_file(tmp_path, content, name=f"s{len(content)}")
        r = run_script("encrypt_key.py", "--secret-file", str(f), input=KEY)
        assert r.returncode == 0, r.stderr
        tokens.append(r.stdout.strip())
    assert all(Keyring(MARKER).decrypt(t) == KEY for t in tokens)


def test_stdin_key_with_extra_whitespace_is_refused_not_trimmed():
    env = {"INTEGRATION_ENCRYPTION_SECRET": MARKER}
    for value in (KEY + "\n\n", " " + KEY, KEY + "\r\n"):
        r = run_script("encrypt_key.py", "--any-key-shape", input=value, env=env)
        assert "stdin" in assert_one_line_error(r, 2, KEY)


# -- DSN credentials never printed ------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://postgres:t@{MARKER}@127.0.0.1:1/x",  # an unescaped @ in the password
        f"postgresql://postgres:{MARKER}@127.0.0.1:1/x?sslpassword={MARKER}",
        f"host=127.0.0.1 port=1 user=postgres password={MARKER} sslpassword={MARKER}x dbname=x",
        f"host=127.0.0.1 port=1 password='{MARKER}",  # unparseable: not echoed either
        f"{MARKER}",
    ],
)
@pytest.mark.parametrize("script", ["migrate.py", "smoke.py", "rotate_keys.py"])
def test_dsn_credentials_are_never_printed(dsn, script):
    args = ["status"] if script == "migrate.py" else []
    r = run_script(script, *args, "--dsn", dsn, env={"INTEGRATION_ENCRYPTION_SECRET": NEW})
    assert_one_line_error(r, 2)


def test_redaction_is_one_function_and_drops_every_credential():
    dsn = f"postgresql://u%40x:{MARKER}@db.example:6543/d%2Fb?sslpassword={MARKER}&sslmode=require&oauth_client_secret={MARKER}"
    red = db.redact(dsn)
    assert MARKER not in red and red.startswith("postgresql://")
    assert conninfo_to_dict(red) == {
        "user": "u@x",
        "host": "db.example",
        "port": "6543",
        "dbname": "d/b",
        "sslmode": "require",
    }
    assert db.redact(f"host=a,b port=1,2 password={MARKER}") == "postgresql://a:1,b:2/"
    assert MARKER not in db.redact(f"postgresql://x:t@{MARKER}@h/d")


@pytest.mark.parametrize("script", ["migrate.py", "smoke.py", "rotate_keys.py", "deploy_local.py"])
def test_an_unescaped_slash_in_the_url_password_is_not_printed(script):
    # libpq stops the user:password part at the first '/', so the rest of the password became
    # the database name, which the redacted URL printed ("cannot connect to postgresql://u:pa/<rest>").
    dsn = f"postgresql://postgres:12/{MARKER}@127.0.0.1:1/x"
    args = ["status"] if script == "migrate.py" else []
    r = run_script(script, *args, env={"DATABASE_URL": dsn, "INTEGRATION_ENCRYPTION_SECRET": NEW})
    assert "%2F" in assert_one_line_error(r, 2)
    assert MARKER not in db.redact(dsn)


def test_deploy_with_an_at_sign_in_the_password_names_the_fix():
    r = run_script("deploy_local.py", env={"DATABASE_URL": f"postgresql://postgres:t@{MARKER}@127.0.0.1:1/x"})
    assert "%40" in assert_one_line_error(r, 2)


# -- one line, never a traceback, and the right exit code ------------------------------------


def test_non_utf8_environment_secret_is_refused():
    for env in (
        {b"INTEGRATION_ENCRYPTION_SECRET": b"\xff" + MARKER.encode()},
        {
            b"INTEGRATION_ENCRYPTION_SECRET": NEW.encode(),
            b"INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": b"\xfe" + MARKER.encode(),
        },
    ):
        script = "encrypt_key.py" if len(env) == 1 else "rotate_keys.py"
        r = (
            run_script(script, "--dsn", "postgresql://x@127.0.0.1:1/x", input=KEY, env=env)
            if script == "rotate_keys.py"
            else run_script(script, input=KEY, env=env)
        )
        assert "not UTF-8" in assert_one_line_error(r, 2)


def test_non_utf8_stdin_and_closed_stdin():
    env = {"INTEGRATION_ENCRYPTION_SECRET": MARKER}
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts/encrypt_key.py")],
        input=b"sk-or-v1-\xff\xfe\n",
        capture_output=True,
        env={**os.environ, **env},
    )
    r.stdout, r.stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert "UTF-8" in assert_one_line_error(r, 2)
    for args in ([], ["--decrypt"]):
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/encrypt_key.py"), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            preexec_fn=lambda: os.close(0),
        )
        assert "stdin is closed" in assert_one_line_error(r, 2)


def test_bad_pgconnect_timeout_is_a_usage_error():
    for script, args in (("migrate.py", ["status"]), ("smoke.py", []), ("rotate_keys.py", [])):
        r = run_script(
            script,
            *args,
            "--dsn",
            "postgresql://x@127.0.0.1:1/x",
            env={"PGCONNECT_TIMEOUT": "abc", "INTEGRATION_ENCRYPTION_SECRET": NEW},
        )
        assert "PGCONNECT_TIMEOUT" in assert_one_line_error(r, 2)


def test_stdout_on_a_full_device_is_one_line():
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/encrypt_key.py"), "--generate-secret"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    r.stdout = ""
    assert "cannot write the output" in assert_one_line_error(r, 2)
