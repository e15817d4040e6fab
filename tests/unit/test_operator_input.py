"""Issue 10: operator input and secrets. Every finding, attacked the way a tired operator or a
hostile input would: nothing echoed, nothing guessed, one line (no traceback) for every mistake,
and the exit code the contract names (2 usage/input/environment/connection, 1 refused/failed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from x402db import ROOT, db
from x402db.keys.crypto import Context, Keyring, fingerprint
from x402db.keys.rotation import Rotator

from tests.utils.scripts import run_script

MARKER = "Zq9-marker-secret-7Hx"  # a secret that must never be printed back
KEY = "sk-or-v1-" + "ab" * 32
OLD, NEW = "old-secret-0001", "new-secret-0002"
T = "public.user_openrouter_integrations"
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))


def assert_one_line_error(r, code: int, *secrets: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == code, (r.returncode, out)
    assert "Traceback" not in out and "Exception ignored" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for s in (MARKER, *secrets):
        assert s not in out, out
    return lines[0]


def secret_file(tmp_path, content: bytes | str, mode: int = 0o600, name: str = "secret"):
    f = tmp_path / name
    f.write_bytes(content.encode() if isinstance(content, str) else content)
    f.chmod(mode)
    return f


# -- finding 1: a secret typed on argv is never echoed --------------------------------------


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


def test_unwritable_junit_path_is_not_echoed(deployed_db):
    r = run_script("smoke.py", "--read-only", "--junit", f"/nonexistent/{MARKER}/x.xml", "--dsn", deployed_db)
    assert "--junit" in assert_one_line_error(r, 2)


def test_abbreviations_are_off_and_the_message_names_the_option():
    r = run_script("encrypt_key.py", "--secret", MARKER, input=KEY)
    line = assert_one_line_error(r, 2)
    assert "--secret" in line and "--secret-file" in line and "command line" in line
    r = run_script("rotate_keys.py", "--new", MARKER)
    assert "--new-secret-file" in assert_one_line_error(r, 2)


# -- finding 2: a secret file must be ours, private and regular -----------------------------


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


# -- finding 3: a secret file's content is exact, never guessed -----------------------------


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


# -- finding 4: DSN credentials never printed --------------------------------------------------


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


# -- finding 5: one line, never a traceback, and the right exit code ------------------------


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


def test_batch_size_out_of_range_is_a_usage_error(deployed_db):
    for value in ("99999999999999999999", "0", "-1", "1e3", "\u0661\u0662"):  # the last: Arabic-Indic digits
        r = run_script(
            "rotate_keys.py",
            "--dsn",
            deployed_db,
            "--apply",
            "--batch-size",
            value,
            env={"INTEGRATION_ENCRYPTION_SECRET": NEW},
        )
        assert "--batch-size" in assert_one_line_error(r, 2, value if len(value) > 2 else MARKER)


class CuttableProxy:
    """A TCP proxy in front of the server that can drop every connection at once, the way a
    network or a failover drops it: no error message from the server, the socket just closes."""

    def __init__(self, port: int, cut_after_bytes: int) -> None:
        self.upstream, self.limit, self.seen = port, cut_after_bytes, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src, dst, count: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if count:
                    self.seen += len(data)
                    if self.seen > self.limit:
                        self.drop()
                        return
        except OSError:
            pass

    def drop(self) -> None:
        self.cut.set()
        for s in [self.listener, *self.socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_connection_dropped_mid_run_says_why_without_credentials(server, deployed_db):
    _seed(deployed_db, 3000)
    params = conninfo_to_dict(deployed_db)
    proxy = CuttableProxy(int(params["port"]), cut_after_bytes=150_000)
    password = server.password
    dsn = f"postgresql://{params['user']}:{quote(password, safe='')}@127.0.0.1:{proxy.port}/{params['dbname']}?sslmode=disable"
    try:
        r = _rotate(dsn, "--apply", "--batch-size", "100", timeout=120)
    finally:
        proxy.drop()
    line = assert_one_line_error(r, 2, password)
    assert proxy.seen > 150_000  # it really was dropped mid-run
    assert line.startswith("error: lost the connection to the database: ") and "OperationalError" not in line, line


# -- finding 6: rotation tells the truth ----------------------------------------------------


def _seed(dsn: str, n: int, secret: str = OLD, plaintext=lambda i: KEY) -> list[str]:
    ring, ids = Keyring(secret), [str(uuid.uuid4()) for _ in range(n)]
    with psycopg.connect(dsn, autocommit=True) as c:
        with c.cursor().copy("COPY auth.users (id, email) FROM STDIN") as cp:
            for uid in ids:
                cp.write_row((uid, f"{uid[:8]}@example.invalid"))
        with c.cursor().copy(f"COPY {T} (user_id, encrypted_api_key) FROM STDIN") as cp:
            for i, uid in enumerate(ids):
                cp.write_row((uid, ring.encrypt(plaintext(i))))
    return ids


def _rotate(dsn, *args, new=NEW, old=OLD, **kw):
    env = {"INTEGRATION_ENCRYPTION_SECRET": new, "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": old}
    return run_script("rotate_keys.py", "--dsn", dsn, *args, env=env, **kw)


def test_rotation_reports_the_decrypt_reason_with_a_hint(deployed_db):
    _seed(deployed_db, 5)
    _seed(deployed_db, 3, plaintext=lambda i: f"not an api key {i}")  # right secret, unexpected shape
    r = _rotate(deployed_db, "--json")
    doc = json.loads(r.stdout)
    line = assert_one_line_error(r, 1, OLD, NEW)
    assert doc["undecryptable_by_reason"] == {"not-a-key": 3} and doc["to_rotate"] == 5
    assert "not-a-key 3" in line and "--key-pattern" in line and "neither" not in line
    human = _rotate(deployed_db)
    assert "not-a-key: 3 rows" in human.stdout and "--any-key-shape" in human.stdout
    assert _rotate(deployed_db, "--any-key-shape").returncode == 0


def test_rotation_with_a_wrong_old_secret_reports_every_row_as_wrong_key(deployed_db):
    # A wrong key passes CBC's padding check for ~1 row in 256 per key: those rows were
    # reported as not-a-key, whose hint points at --key-pattern instead of the secret.
    _seed(deployed_db, 1000)
    r = _rotate(deployed_db, "--json", old="not-the-old-secret")
    assert json.loads(r.stdout)["undecryptable_by_reason"] == {"wrong-key": 1000}
    assert "--key-pattern" not in assert_one_line_error(r, 1, OLD, NEW)


def test_rotation_to_the_same_secret_is_refused(deployed_db):
    _seed(deployed_db, 4)
    for old in (OLD, f"another,{OLD}"):
        r = _rotate(deployed_db, "--apply", new=OLD, old=old)
        assert "same as an old secret" in assert_one_line_error(r, 1, OLD)
    with db.connect(deployed_db) as c:
        assert (
            c.execute("SELECT to_regclass('x402_private.key_rotation_runs')").fetchone()[0] is None
        )  # nothing audited


def _rotated_rows(dsn) -> int:
    ring = Keyring(NEW)
    with db.connect(dsn) as c:
        tokens = [t for (t,) in c.execute(f"SELECT encrypted_api_key FROM {T}")]
    n = 0
    for t in tokens:
        try:
            ring.decrypt(t)
            n += 1
        except Exception:
            pass
    return n


def _last_audit(dsn):
    with db.connect(dsn) as c:
        return c.execute(
            "SELECT status, (summary->>'rotated')::int FROM x402_private.key_rotation_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()


def test_interrupt_while_a_batch_is_being_written_is_counted_in_the_audit(deployed_db):
    """The interrupt lands while the writer connection commits batch 2 (the main thread is
    reading batch 3): that batch is in the table, so the audit must count it."""
    _seed(deployed_db, 500)

    class InterruptedOnThirdRead(Rotator):
        reads = 0

        def _read(self, after):
            InterruptedOnThirdRead.reads += 1
            if InterruptedOnThirdRead.reads == 3:
                time.sleep(0.2)  # let the in-flight write commit, as Ctrl-C during a read would
                raise KeyboardInterrupt
            return super()._read(after)

    with db.connect(deployed_db) as conn, db.connect(deployed_db) as writer:
        with pytest.raises(KeyboardInterrupt):
            InterruptedOnThirdRead(conn, Keyring(NEW, [OLD]), batch_size=100, write_conn=writer).run(apply=True)
    assert _rotated_rows(deployed_db) == 200
    assert _last_audit(deployed_db) == ("interrupted", 200)


@pytest.mark.slow
def test_sigint_mid_rotation_audit_matches_the_table(deployed_db):
    _seed(deployed_db, 20_000)
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "INTEGRATION_ENCRYPTION_SECRET": NEW,
        "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": OLD,
    }
    p = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts/rotate_keys.py"),
            "--dsn",
            deployed_db,
            "--apply",
            "--json",
            "--batch-size",
            "200",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while _rotated_rows_fast(deployed_db) < 1000 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err and err.strip().splitlines() == ["error: interrupted"], err
    status, counted = _last_audit(deployed_db)
    assert status == "interrupted" and counted == _rotated_rows(deployed_db) and 0 < counted < 20_000


def _rotated_rows_fast(dsn) -> int:
    with db.connect(dsn) as c:
        return c.execute(f"SELECT count(*) FROM {T} WHERE updated_at > created_at").fetchone()[0]
