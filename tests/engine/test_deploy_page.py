"""docs/runbooks/deploy.md, run as a newcomer runs it: its shell blocks verbatim, in bash, in a fresh
`git clone` of this checkout, with a home of its own and nothing exported but what the page
exports. Only the values the page says are the reader's are replaced (the Supabase host, and the
port, database and sslmode of the test server standing in for it); the password files the page
asks the reader to write, the test writes. On PostgreSQL 18 the run reaches a deployed dev stack
(on `make deploy`'s local server) and a production stack refused by the preflight the page
quotes, then the page's way out; on 15 the production stack deploys with its backend role.
Nothing may print a `warning:`, and `git status` stays clean throughout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.utils.deploy_page import PAGE, page_block
from tests.utils.scripts import run_script
from tests.utils.targets import Target
from x402db import ROOT
from x402db.local.server import embedded_bindir

BACKEND_PASSWORD = "b4ckend-Pw-for-tests"
# The backend role the page's prod stack makes, as the page names it.
BACKEND_ROLE = re.search(r"pulumi config set backendRole (\S+)", PAGE.read_text())[1]
WARNING = re.compile(r"\bwarning: ", re.I)


class Reader:
    """A fresh clone and a shell environment of its own; runs page blocks as bash scripts."""

    def __init__(self, base: Path, tools: Path, target: Target):
        self.dir = base / "x402"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(self.dir)], check=True, timeout=120)
        edits = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD", "--binary"], capture_output=True, check=True)
        if edits.stdout:  # a checkout with uncommitted edits: the clone holds what it would commit
            self.git("apply", "--index", input=edits.stdout)
            self.git("-c", "user.name=t", "-c", "user.email=t@invalid", "commit", "-qm", "uncommitted edits")
        # The suite's venv, never installed into: `make venv` must find it up to date.
        (self.dir / ".venv").symlink_to(ROOT / ".venv")
        would = subprocess.run(["make", "-s", "-n", "venv"], cwd=self.dir, capture_output=True, text=True)
        if would.stdout.strip():
            pytest.skip("the shared .venv is not up to date with this checkout's pins; `make venv` there first")
        self.home = base / "home"
        self.home.mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PULUMI_", "PG", "MAKE")) and k not in ("DATABASE_URL", "MFLAGS")
        }
        # No pulumi on PATH: the page's own tools step finds it, in the suite's tools cache.
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != tools)
        go = {}
        if shutil.which("go"):  # a rebuild, if the clone's tools differ, stays warm
            out = subprocess.run(["go", "env", "GOPATH", "GOMODCACHE", "GOCACHE"], capture_output=True, text=True)
            go = dict(zip(("GOPATH", "GOMODCACHE", "GOCACHE"), out.stdout.split(), strict=False))
        self.env = (
            env
            | go
            | {
                "HOME": str(self.home),
                "X402_PULUMI_TOOLS_CACHE": str(tools.parent),
                # The clone runs its own package: the venv's editable install points at another checkout.
                "PYTHONPATH": str(self.dir),
                "NO_COLOR": "1",
            }
        )
        self.replace = {
            "db.<project-ref>.supabase.co": "127.0.0.1",
            "port=5432": f"port={target.server.port()}",
            "database=postgres": f"database={target.database}",
            "dbname=postgres": f"dbname={target.database}",
            "sslmode=require": "sslmode=disable",  # the test servers speak no TLS
        }

    def git(self, *args: str, input: bytes | None = None) -> str:
        r = subprocess.run(["git", "-C", str(self.dir), *args], input=input, capture_output=True, check=True)
        return r.stdout.decode()

    def secret_file(self, name: str, value: str) -> None:
        """What the page asks the reader to do by hand: a 0600 file with the password and a newline."""
        path = self.home / ".config" / "x402" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(0o600)
        path.write_text(value + "\n")

    def run(self, script: str, ok: bool = True) -> subprocess.CompletedProcess:
        for placeholder, value in self.replace.items():
            script = re.sub(re.escape(placeholder) + r"(?![\w.])", value, script)  # not port=54329
        r = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = r.stdout + r.stderr
        if ok:
            assert r.returncode == 0, out[-8000:]
        assert not WARNING.search(out), out[-8000:]
        assert self.git("status", "--porcelain") == "", self.git("status", "--porcelain")
        return r

    def block(self, name: str, ok: bool = True) -> subprocess.CompletedProcess:
        """A new shell: the page's environment block, then block `name`."""
        return self.run(page_block("env") + page_block(name), ok=ok)


@pytest.fixture
def supabase_target(server):
    t = Target(server, "supabase")
    yield t
    t.drop()
    # Roles are the server's, not the database's: the backend role the page makes on 15 would
    # outlive the database and meet the next test of this server that creates it.
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {BACKEND_ROLE}")


# The local path prefers port 54329: its deploys run on one xdist worker, one at a time.
@pytest.mark.xdist_group("local-deploy")
def test_the_deploy_page_runs_verbatim_in_a_fresh_clone(pulumi_tools, supabase_target):
    target = supabase_target
    assert "tests/engine/test_deploy_page.py" in PAGE.read_text()
    # Not under pytest's 0700 tmp: as root, the local server runs as the postgres OS user.
    base = Path(tempfile.mkdtemp(prefix="x402db-deploy-page-"))
    base.chmod(0o755)
    reader = None
    try:
        reader = Reader(base, pulumi_tools, target)
        reader.run(page_block("tools"))
        reader.block("once")
        if target.server.bindir == embedded_bindir():  # make deploy runs the embedded 18: once is enough
            _dev_stack(reader)
        reader.secret_file("db-password", target.server.password)
        reader.secret_file("backend-role-password", BACKEND_PASSWORD)
        before = target.snapshot()
        if target.server_version >= 160000:
            r = reader.block("prod", ok=False)
            out = r.stdout + r.stderr
            # The page's own order: the plan ran, then the preview met the preflight.
            assert r.returncode != 0 and "preflight refused, nothing was changed" in out, out[-8000:]
            quoted = next(
                line
                for line in PAGE.read_text().splitlines()
                if line.startswith("preflight refused, nothing was changed")
            )
            assert re.search(re.escape(quoted).replace("PostgreSQL\\ 17", r"PostgreSQL\ \d+"), out), (quoted, out)
            assert "Updating (prod)" not in out and target.snapshot() == before
            reader.block("prod-without-backend-role")
        else:
            reader.block("prod")
            assert target.query("SELECT pg_has_role(%s, 'service_role', 'MEMBER')", (BACKEND_ROLE,))[0][0]
        smoke = run_script("smoke.py", "--read-only", "--dsn", target.dsn, env={"PGPASSWORD": target.server.password})
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        reader.run(page_block("env") + "pulumi preview --expect-no-changes\n")
        assert reader.git("ls-files", "Pulumi.*.yaml") == ""
    finally:
        if reader is not None and (reader.dir / ".local").exists():
            subprocess.run(
                [str(ROOT / ".venv/bin/python"), "scripts/local_db.py", "delete"],
                cwd=reader.dir,
                env=reader.env,  # the clone's server, not the checkout's
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(base, ignore_errors=True)


def _dev_stack(reader: Reader) -> None:
    """The dev block, with the one line the page adds when `make deploy` found 54329 taken."""
    block = page_block("dev")
    at = block.index("pulumi preview")
    r = reader.run(page_block("env") + block[:at])
    url = next(line.split("=", 1)[1] for line in r.stdout.splitlines() if line.startswith("DATABASE_URL="))
    port = psycopg.conninfo.conninfo_to_dict(url)["port"]
    rest = block[at:]
    if port != "54329":
        assert "`pulumi config set port <that port>` before `pulumi preview`" in PAGE.read_text()
        rest = f"pulumi config set port {port}\n" + rest
    reader.run(page_block("env") + rest)
    smoke = run_script(
        "smoke.py", "--dsn", url.split("?")[0], env={"PGPASSFILE": str(reader.dir / ".local/pg18/pgpass")}
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
