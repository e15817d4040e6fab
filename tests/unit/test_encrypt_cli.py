"""scripts/encrypt_key.py: every mode, every exit code, and no secret where it does not belong."""

from __future__ import annotations

import json
import re

from tests.utils.encrypt import ENV, KEY, SECRET, assert_no_leak, enc
from tests.utils.scripts import run_script
from x402db.keys.crypto import Context, Keyring, fingerprint


def test_encrypt_prints_backend_format_and_nothing_else():
    r = enc()
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"[0-9a-f]{32}:[0-9a-f]{160}\n", r.stdout)
    assert_no_leak(r, KEY)
    assert KEY not in r.stdout
    assert Keyring(SECRET).decrypt(r.stdout) == KEY


def test_secret_file_and_its_permissions(tmp_path):
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    f.chmod(0o600)
    r = enc("--secret-file", str(f), env={})
    assert r.returncode == 0 and Keyring(SECRET).decrypt(r.stdout) == KEY
    f.chmod(0o640)
    r = enc("--secret-file", str(f), env={})
    assert r.returncode == 2 and "chmod 600" in r.stderr
    assert_no_leak(r, KEY)


def test_json_and_v2():
    uid = "6c0d6f4e-3a0e-4b7e-9f4b-5b0a7d2f1c11"
    r = enc("--format", "v2", "--user-id", uid, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["format"] == "v2" and doc["key_fingerprint"] == fingerprint(SECRET)
    assert Keyring(SECRET).decrypt(doc["ciphertext"], Context(uid)) == KEY
    assert KEY not in r.stdout and SECRET not in r.stdout
    assert enc("--format", "v2").returncode == 2


def test_decrypt_mode_round_trips_and_errors_are_clear():
    token = enc().stdout
    r = run_script("encrypt_key.py", "--decrypt", input=token, env=ENV)
    assert r.returncode == 0 and r.stdout == KEY + "\n"
    assert SECRET not in r.stdout + r.stderr
    cases = {
        "nothing at all": ("", 2, "nothing on stdin"),
        "malformed": ("abc:def\n", 1, "malformed"),
        "unknown format": ("v7:aa:bb\n", 1, "unknown-format"),
    }
    for label, (stdin, code, words) in cases.items():
        r = run_script("encrypt_key.py", "--decrypt", input=stdin, env=ENV)
        assert (r.returncode, words in r.stderr) == (code, True), (label, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_script("encrypt_key.py", "--decrypt", input=token, env={"INTEGRATION_ENCRYPTION_SECRET": "wrong"})
    assert r.returncode == 1 and ("wrong-key" in r.stderr or "not-a-key" in r.stderr)
    assert KEY not in r.stderr and "wrong" not in r.stdout


def test_missing_or_empty_secret_is_exit_2():
    r = enc(env={})
    assert r.returncode == 2 and "INTEGRATION_ENCRYPTION_SECRET" in r.stderr
    r = enc(env={"INTEGRATION_ENCRYPTION_SECRET": ""})
    assert r.returncode == 2 and "empty" in r.stderr


def test_empty_input_and_non_key_input():
    assert enc(input="").returncode == 2
    assert enc(input="\n").returncode == 2
    r = enc(input="my password\n")
    assert r.returncode == 1 and "--key-pattern" in r.stderr and "my password" not in r.stderr
    assert enc("--any-key-shape", input="other-provider-key\n").returncode == 0
    assert enc("--key-pattern", "[", input="x\n").returncode == 2


def test_secret_is_never_taken_from_argv():
    r = run_script("encrypt_key.py", "--secret", SECRET, input=KEY, env={})
    assert r.returncode == 2


def test_generate_secret_redirected_is_the_secret_byte_for_byte(tmp_path):
    """`--generate-secret > new.secret`: the file holds exactly what the backend must be given, so
    storing it verbatim in a secret manager gives the backend the scripts' key."""
    import subprocess
    import sys

    from x402db import ROOT

    out = tmp_path / "new.secret"
    with open(out, "wb") as f:
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts/encrypt_key.py"), "--generate-secret"],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
        )
    raw = out.read_bytes()
    assert r.returncode == 0 and r.stderr == "" and re.fullmatch(rb"[0-9a-f]{64}", raw), (raw, r.stderr)
    assert raw != run_script("encrypt_key.py", "--generate-secret").stdout.encode()
    doc = json.loads(run_script("encrypt_key.py", "--generate-secret", "--json").stdout)
    assert re.fullmatch(r"[0-9a-f]{64}", doc["secret"]) and doc["key_fingerprint"] == fingerprint(doc["secret"])


def test_generate_secret_out_file_is_0600_without_newline_and_never_overwritten(tmp_path):
    import os

    out = tmp_path / "new.secret"
    old_umask = os.umask(0)  # the script must not rely on the caller's umask
    try:
        r = run_script("encrypt_key.py", "--generate-secret", "--out", str(out))
    finally:
        os.umask(old_umask)
    assert r.returncode == 0, r.stderr
    raw = out.read_bytes()
    assert re.fullmatch(rb"[0-9a-f]{64}", raw) and out.stat().st_mode & 0o777 == 0o600
    assert raw.decode() not in r.stdout + r.stderr and fingerprint(raw.decode()) in r.stdout
    again = run_script("encrypt_key.py", "--generate-secret", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr and str(out) not in again.stderr
    assert out.read_bytes() == raw
    r = enc("--out", str(tmp_path / "other"))
    assert r.returncode == 2 and "--generate-secret" in r.stderr and not (tmp_path / "other").exists()


def test_generate_secret_on_a_terminal_says_how_to_store_it():
    import os

    from tests.utils.tty import run_in_pty
    from x402db import ROOT

    env = {k: v for k, v in os.environ.items() if k != "CI"}
    code, text = run_in_pty([str(ROOT / "scripts/encrypt_key.py"), "--generate-secret"], env)
    secret = re.search(r"[0-9a-f]{64}", text).group(0)
    assert code == 0 and "no newline" in text and "--out" in text and fingerprint(secret) in text, text


def test_tty_prompt_does_not_echo_the_key():
    import os

    from tests.utils.tty import run_in_pty
    from x402db import ROOT

    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"INTEGRATION_ENCRYPTION_SECRET": SECRET}
    code, text = run_in_pty(
        [str(ROOT / "scripts/encrypt_key.py")], env, answer=(KEY + "\n").encode(), prompt=b"not echoed"
    )
    assert code == 0, text
    assert "OpenRouter API key (not echoed)" in text
    assert KEY not in text
    token = re.search(r"[0-9a-f]{32}:[0-9a-f]{160}", text).group(0)
    assert Keyring(SECRET).decrypt(token) == KEY


def test_a_key_or_secret_on_the_command_line_says_where_it_goes_without_echoing_it():
    from tests.utils.scripts import assert_one_line_error

    for args in ([KEY], ["--key", KEY], [f"--key={KEY}"], ["--api-key", KEY], ["--json", KEY]):
        line = assert_one_line_error(enc(*args), 2, KEY, SECRET)
        # --key-pattern takes a regex: suggesting it would invite pasting the key there
        assert "goes on stdin" in line and "--key-pattern" not in line, (args, line)
    for args in (["--dsn", "postgresql://x@127.0.0.1:1/x", SECRET], ["--key", SECRET]):
        line = assert_one_line_error(run_script("rotate_keys.py", *args, env={}), 2, SECRET)
        assert "--new-secret-file" in line and "never" in line and "--key-pattern" not in line, (args, line)
