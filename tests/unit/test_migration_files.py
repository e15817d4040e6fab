"""The migration files as data: every down ever shipped is listed, a supersedes line needs its pin,
and the timeouts are bounded in the engine settings and the stack config alike."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.utils.migrations import copy_sql
from x402db import ROOT
from x402db.errors import UsageError
from x402db.migrate import files as migrations
from x402db.migrate.settings import Settings

STALE = "x402db/migrate/shipped_downs.json is stale: run `make shipped-downs` and commit it"


def test_shipped_downs_list_every_down_this_repository_shipped():
    """The list is data committed with the package: every down in sql/ and in git's history of sql/ is in it."""
    shipped = migrations.shipped_downs()
    for m in migrations.load():
        assert shipped.get(m.version, ("none",))[-1] == m.down_checksum, STALE
    git = shutil.which("git")
    if not git or subprocess.run([git, "-C", str(ROOT), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    for path in sorted((ROOT / "sql").glob("*.down.sql")):
        rel = path.relative_to(ROOT).as_posix()
        commits = subprocess.run(
            [git, "-C", str(ROOT), "log", "--format=%H", "--", rel], capture_output=True, text=True, check=True
        ).stdout.split()
        history = {migrations.checksum(path.read_text(encoding="utf-8"))}
        for c in commits:
            text = subprocess.run([git, "-C", str(ROOT), "show", f"{c}:{rel}"], capture_output=True, check=True).stdout
            history.add(migrations.checksum(text.decode("utf-8")))
        # Exactly what was shipped: a checksum added by hand for a down never committed is refused too.
        assert set(shipped.get(path.name[:3], ())) == history, f"{rel}: {STALE}"


def test_timeouts_are_bounded_in_engine_and_pulumi_config():
    from x402db.errors import UsageError
    from x402db.iac import config

    for bad in ("0", "0s", "61s", "2min", "1h"):
        with pytest.raises(UsageError):
            Settings(lock_timeout=bad)
    with pytest.raises(UsageError):
        Settings(statement_timeout="0")
    assert Settings(lock_timeout="1min").lock_timeout == "1min"

    class Cfg:
        def __init__(self, **values):
            self.values = values

        def get(self, key):
            return self.values.get(key)

        def get_secret(self, key):
            return None

    for bad in ("0", "90s"):
        with pytest.raises(config.ConfigError, match="lockTimeout must"):
            config.load(Cfg(host="h", lockTimeout=bad))
    assert config.load(Cfg(host="h", lockTimeout="500ms")).lock_timeout == "500ms"


def test_supersedes_without_a_pin_is_refused(tmp_path):
    d = copy_sql(tmp_path, lambda s: re.sub(r" pin [0-9a-f]{64}", "", s))
    with pytest.raises(UsageError, match="pin"):
        migrations.load(d)
