"""`migrate.py new NAME`: a migration is files, numbered after the last one, with every directive
written out but off, all of them or none, and never over an existing file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from x402db import SQL_DIR
from x402db.errors import UsageError
from x402db.migrate import files as migrations
from x402db.migrate import scaffold


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SQL_DIR, target)
    return target


def test_new_writes_the_next_version_with_directives_off(sql_dir):
    created = scaffold.create("model_catalog_sync", sql_dir)
    assert created.version == "006"
    assert [p.name for p in created.paths] == [
        "006_model_catalog_sync.up.sql",
        "006_model_catalog_sync.down.sql",
        "006_model_catalog_sync.verify.sql",
    ]
    m = migrations.find(migrations.load(sql_dir), "006")
    # The directives are there to read, and none is on: the skeleton runs no SQL and refuses nothing.
    assert "#x402:targets" in m.up_text and "#x402:guard data-loss" in m.down_text
    assert m.up.targets is None and not m.up.requires and not m.down.guards and not m.up.steps
    assert m.up.statements == () and m.down.statements == ()
    assert scaffold.create("second", sql_dir).version == "007"


def test_new_refuses_a_bad_name_and_writes_nothing(sql_dir):
    before = sorted(p.name for p in sql_dir.iterdir())
    for bad in ("Has Caps", "1starts_with_digit", "semi;colon", "", "x" * 64, "../escape"):
        with pytest.raises(UsageError):
            scaffold.create(bad, sql_dir)
    assert sorted(p.name for p in sql_dir.iterdir()) == before


def test_new_never_overwrites_and_leaves_no_half_migration(sql_dir):
    (sql_dir / "006_taken.verify.sql").write_text("-- someone's work\n")
    (sql_dir / "006_taken.up.sql").write_text("-- someone's work\n")
    (sql_dir / "006_taken.down.sql").write_text("-- someone's work\n")
    # The next version is 007, so a clash needs a file of 007 left by hand.
    (sql_dir / "007_clash.down.sql").write_text("-- a down whose up was lost\n")
    with pytest.raises(UsageError, match="already exists"):
        scaffold.create("clash", sql_dir)
    assert not (sql_dir / "007_clash.up.sql").exists()
    assert (sql_dir / "007_clash.down.sql").read_text() == "-- a down whose up was lost\n"
    assert (sql_dir / "006_taken.up.sql").read_text() == "-- someone's work\n"


def test_an_orphan_verify_file_is_refused(sql_dir):
    (sql_dir / "009_lost.verify.sql").write_text("SELECT 1;\n")
    with pytest.raises(UsageError, match="no up file"):
        migrations.load(sql_dir)


def test_two_news_at_once_never_leave_two_migrations_of_one_version(sql_dir):
    from concurrent.futures import ThreadPoolExecutor

    def attempt(name: str) -> str:
        try:
            return scaffold.create(name, sql_dir).version
        except UsageError:
            return "refused"

    for round_ in range(5):
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(attempt, (f"first_{round_}", f"second_{round_}")))
        versions = [m.version for m in migrations.load(sql_dir)]  # load() refuses duplicate versions
        assert len(versions) == len(set(versions)), outcomes
        assert any(o != "refused" for o in outcomes) or outcomes == ["refused", "refused"]


def test_the_command_never_echoes_a_refused_name(sql_dir, monkeypatch, capsys):
    from x402db.cli import migrate as cli

    monkeypatch.setattr(scaffold, "SQL_DIR", sql_dir)
    monkeypatch.setattr(scaffold.create, "__defaults__", (sql_dir, True))
    marker = "mK7-fuzz-SECRET-q2W"
    with pytest.raises(UsageError) as refused:
        cli.main(["new", f"Bad {marker}"])
    assert marker not in str(refused.value)
    assert cli.main(["new", "fine_name", "--json"]) == 0
    assert "006_fine_name.up.sql" in capsys.readouterr().out
    assert (sql_dir / "006_fine_name.up.sql").exists() and not list(SQL_DIR.glob("006_*"))
