"""The runbook's zero-window rotation, end to end, against a real PostgreSQL, from the backend's
side: the drop-in Node keyring (clients/node) configured with the new secret as primary and the
old one as INTEGRATION_ENCRYPTION_SECRET_PREVIOUS reads every row, again and again, in a separate
process while `rotate_keys.py --apply` runs; not one pass may find an unreadable row. Then the old
secret is removed and every row is still read. The same reader given one secret only (today's
backend, either order of deploys) must see the window: that is what proves the check can fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.utils.paths import NODE_DIR
from tests.utils.scripts import run_script
from x402db import ROOT
from x402db.keys.crypto import fingerprint

from .test_rotation import NEW, OLD, T, seed

NODE = shutil.which("node")
READER = NODE_DIR / "zero_window_reader.js"
ROWS = 2000
BATCH = "10"  # 200 short transactions

pytestmark = [
    pytest.mark.skipif(NODE is None and not os.environ.get("CI"), reason="node is not installed"),
    # What is under test is the client and the rotation's ordering; test_rotation.py already
    # runs the rotation on both servers. One server keeps the suite fast.
    pytest.mark.parametrize("server", ["pg18"], indirect=True),
]


class Reader:
    """The backend, as far as reading keys goes: a node process polling every row."""

    def __init__(self, server, dsn: str, expected: dict[str, str], tmp: Path, secrets: dict[str, str]):
        assert NODE, "node is not installed: .ci/run installs it (apt-get install nodejs)"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "expected.json").write_text(json.dumps(expected))
        self.stop_file = tmp / "stop"
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_ENCRYPTION_")}
        self.proc = subprocess.Popen(
            [NODE, str(READER), str(server.bindir / "psql"), dsn, str(tmp / "expected.json"), str(self.stop_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, **secrets},
        )
        self.passes: list[dict] = []

    def next_pass(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"the reader died: {self.proc.stderr.read()}"
        self.passes.append(json.loads(line))
        return self.passes[-1]

    def stop(self) -> list[dict]:
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        self.passes += [json.loads(line) for line in out.splitlines()]
        return self.passes


def read_once(server, dsn, expected, tmp, secrets) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "stop").touch()
    return Reader(server, dsn, expected, tmp, secrets).stop()[-1]


def run_rotation_under(reader: Reader, dsn: str, to_format: str):
    """Run rotate_keys.py --apply, pausing it (SIGSTOP) every few milliseconds until the
    reader has completed a pass that began during the pause: a slow rotation, and a reader that
    sees many intermediate states however loaded the machine is."""
    reader.next_pass()  # the reader is running before the rotation starts
    args = ["--apply", "--batch-size", BATCH] + (["--to-format", "v2"] if to_format == "v2" else [])
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL",) and not k.startswith("INTEGRATION_ENCRYPTION_")
    }
    env.update({"INTEGRATION_ENCRYPTION_SECRET": NEW, "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": OLD})
    rotation = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "rotate_keys.py"), "--dsn", dsn, "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        with psycopg.connect(dsn, autocommit=True) as c:  # no pauses while Python starts up

            def started() -> bool:
                if c.execute("SELECT to_regclass('x402_private.key_rotation_runs')").fetchone()[0] is None:
                    return False
                return c.execute(
                    "SELECT EXISTS (SELECT FROM x402_private.key_rotation_runs WHERE status = 'running')"
                ).fetchone()[0]

            while rotation.poll() is None and not started():
                time.sleep(0.005)
        while rotation.poll() is None:
            # Short runs between pauses: an idle machine rotates ~1,000 rows in 100 ms.
            time.sleep(0.005)
            try:
                os.kill(rotation.pid, signal.SIGSTOP)
            except ProcessLookupError:
                break
            paused_at = time.time() * 1000
            while reader.next_pass()["started"] < paused_at:
                pass
            os.kill(rotation.pid, signal.SIGCONT)
        out, err = rotation.communicate(timeout=300)
    finally:
        if rotation.poll() is None:
            os.kill(rotation.pid, signal.SIGCONT)
            rotation.kill()
    return subprocess.CompletedProcess(rotation.args, rotation.returncode, out, err), reader.stop()


@pytest.mark.parametrize("to_format", ["legacy", "v2"])
def test_zero_window_sequence(server, deployed_db, tmp_path, to_format):
    plain = seed(deployed_db, ROWS)  # every key under the old secret, as the backend wrote them

    # Before: the module with today's single-secret configuration reads every row.
    before = read_once(server, deployed_db, plain, tmp_path / "before", {"INTEGRATION_ENCRYPTION_SECRET": OLD})
    assert (before["rows"], before["unreadable"], before["wrong"]) == (ROWS, 0, 0), before

    # Deploy 1: the backend with the new secret as primary and the old one as previous.
    reader = Reader(
        server,
        deployed_db,
        plain,
        tmp_path / "during",
        {"INTEGRATION_ENCRYPTION_SECRET": NEW, "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": OLD},
    )
    # Rotate, with the backend reading all the while.
    r, passes = run_rotation_under(reader, deployed_db, to_format)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rotated"] == ROWS
    bad = [p for p in passes if p["unreadable"] or p["wrong"] or p["rows"] != ROWS]
    assert not bad, f"{len(bad)} of {len(passes)} passes found unreadable rows, e.g. {bad[0]}"
    midway = [p for p in passes if 0 < p["changed"] < ROWS]
    assert len(midway) >= 5, f"the reader saw only {len(midway)} intermediate states in {len(passes)} passes: {passes}"
    assert passes[-1]["changed"] == ROWS

    # Verify: the new secret alone reads every row (what the runbook's step 4 runs).
    r = run_script(
        "rotate_keys.py",
        "--dsn",
        deployed_db,
        "--json",
        *(["--to-format", "v2"] if to_format == "v2" else []),
        env={"INTEGRATION_ENCRYPTION_SECRET": NEW},
    )
    assert r.returncode == 0 and json.loads(r.stdout)["already_current"] == ROWS, r.stdout + r.stderr

    # Deploy 2: the backend without the old secret still reads every row.
    after = read_once(server, deployed_db, plain, tmp_path / "after", {"INTEGRATION_ENCRYPTION_SECRET": NEW})
    assert (after["rows"], after["unreadable"], after["wrong"]) == (ROWS, 0, 0), after


@pytest.mark.parametrize("backend_secret", [OLD, NEW], ids=["rotate-before-deploy", "deploy-before-rotate"])
def test_a_single_secret_backend_sees_the_window(server, deployed_db, tmp_path, backend_secret):
    """Today's backend (one secret), in either order of deploys: the same reader must catch it."""
    plain = seed(deployed_db, ROWS)
    reader = Reader(server, deployed_db, plain, tmp_path / "during", {"INTEGRATION_ENCRYPTION_SECRET": backend_secret})
    r, passes = run_rotation_under(reader, deployed_db, "legacy")
    assert r.returncode == 0, r.stderr
    broken = [p for p in passes if p["unreadable"]]
    assert broken, f"no pass found an unreadable row: {passes}"
    assert {q["reason"] for p in broken for q in p["problems"]} <= {"wrong-key", "not-a-key"}


def _runbook_sql() -> list[str]:
    """The check and the fix of the runbook's section 3a, as printed there."""
    text = (ROOT / "docs" / "runbooks" / "key-rotation.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text[text.index("### 3a.") : text.index("### 3b.")], re.S)


def test_runbook_finds_and_fixes_non_canonical_values(server, deployed_db, tmp_path):
    """The module reads canonical values only; the runbook's query lists the others and its
    update rewrites them to the canonical spelling of the same bytes, which the module reads."""
    check, fix = _runbook_sql()
    plain = {**seed(deployed_db, 30), **seed(deployed_db, 30, fmt="v2")}
    spoil = {
        "upper": "upper(encrypted_api_key)",
        "padded": "E' ' || encrypted_api_key || E'\\n'",
        "inner tab": "overlay(encrypted_api_key placing E'\\t' from 40 for 0)",
    }
    damaged = set()
    with psycopg.connect(deployed_db, autocommit=True) as c:
        ids = sorted(plain)
        for i, expr in enumerate(spoil.values()):
            chosen = ids[i * 10 : i * 10 + 4] + ids[30 + i * 10 : 30 + i * 10 + 4]  # legacy and v2 rows
            c.execute(f"UPDATE {T} SET encrypted_api_key = {expr} WHERE user_id = ANY(%s::uuid[])", (chosen,))
            damaged.update(chosen)
        assert {str(u) for (u,) in c.execute(check)} == damaged
    before = read_once(server, deployed_db, plain, tmp_path / "before", {"INTEGRATION_ENCRYPTION_SECRET": OLD})
    assert before["unreadable"] == len(damaged) and {p["reason"] for p in before["problems"]} == {"malformed"}, before
    with psycopg.connect(deployed_db, autocommit=True) as c:
        assert c.execute(fix).rowcount == len(damaged)
        assert c.execute(check).fetchall() == []
    after = read_once(server, deployed_db, plain, tmp_path / "after", {"INTEGRATION_ENCRYPTION_SECRET": OLD})
    assert (after["rows"], after["unreadable"], after["wrong"]) == (60, 0, 0), after


def _runbook_fingerprint_lines() -> list[str]:
    """The commands of the runbook's fingerprint comparison, as printed there (continuations joined)."""
    text = (ROOT / "docs" / "runbooks" / "key-rotation.md").read_text()
    section = text[text.index("### Compare the backend's fingerprints with the script's") : text.index("## 2.")]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[0].replace("\\\n", " ")
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_runbook_fingerprint_comparison_catches_another_secret(deployed_db, tmp_path):
    """The runbook's block, verbatim: the script's line and the backend's (the Node keyring, in the
    backend's environment) are identical when the backend holds the files' secrets, differ when it
    holds another secret, and the backend refuses a secret stored with its file's final newline."""
    script, backend = _runbook_fingerprint_lines()
    assert script.startswith(".venv/bin/python scripts/rotate_keys.py") and backend.startswith("node -e"), (
        script,
        backend,
    )
    home = tmp_path / "home"
    (home / "x402-rotation").mkdir(parents=True)
    for name, secret in (("new.secret", NEW), ("old.secret", OLD)):
        (home / "x402-rotation" / name).write_text(secret + "\n")  # what `echo "$S" > file` leaves
        (home / "x402-rotation" / name).chmod(0o600)
    app = tmp_path / "app"  # the backend's checkout, with the module copied as section 3a says
    shutil.copytree(ROOT / "clients" / "node", app / "src" / "lib" / "x402-keyring")
    if not (ROOT / ".venv/bin/python").exists():  # a checkout whose interpreter lives elsewhere
        script = script.replace(".venv/bin/python", sys.executable)
    base = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_ENCRYPTION_")}

    def sh(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", "-c", line], cwd=cwd, env=base | env, capture_output=True, text=True, timeout=120)

    ours = sh(script, ROOT, {"HOME": str(home), "DATABASE_URL": deployed_db})
    assert (
        ours.returncode == 0
        and ours.stdout.strip() == f"key fingerprints: new {fingerprint(NEW)}; old {fingerprint(OLD)}"
    ), ours.stdout + ours.stderr
    step2 = {"INTEGRATION_ENCRYPTION_SECRET": NEW, "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS": OLD}
    theirs = sh(backend, app, step2)
    assert theirs.returncode == 0 and theirs.stdout.strip() == ours.stdout.strip(), theirs.stdout + theirs.stderr
    other = sh(backend, app, step2 | {"INTEGRATION_ENCRYPTION_SECRET": NEW + "x"})
    assert other.returncode == 0 and other.stdout.strip() != ours.stdout.strip()
    verbatim = sh(backend, app, step2 | {"INTEGRATION_ENCRYPTION_SECRET": NEW + "\n"})
    assert verbatim.returncode != 0 and "without a final newline" in verbatim.stderr and NEW not in verbatim.stderr
