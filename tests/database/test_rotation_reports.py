"""Rotation tells the truth: a connection cut mid-run, the decrypt reason with a hint, a wrong old
secret, the same secret, and an interrupt mid-batch counted in the audit exactly as in the table."""

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

from tests.utils.scripts import assert_one_line_error, call_script, run_script
from x402db import ROOT, db
from x402db.keys.crypto import Keyring
from x402db.keys.rotation import Rotator

KEY = "sk-or-v1-" + "ab" * 32
OLD, NEW = "old-secret-0001", "new-secret-0002"
T = "public.user_openrouter_integrations"


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
        r = _rotate(dsn, "--apply", "--batch-size", "100", fresh_process=True)
    finally:
        proxy.drop()
    line = assert_one_line_error(r, 2, password)
    assert proxy.seen > 150_000  # it really was dropped mid-run
    assert line.startswith("error: lost the connection to the database: ") and "OperationalError" not in line, line


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


def _rotate(dsn, *args, new=NEW, old=OLD, fresh_process=False):
    env = {"INTEGRATION_ENCRYPTION_SECRET": new, "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": old}
    if fresh_process:  # bounded by a timeout, should the cut connection leave it waiting
        return run_script("rotate_keys.py", "--dsn", dsn, *args, env=env, timeout=120)
    return call_script("rotate_keys.py", "--dsn", dsn, *args, env=env)


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
