"""The migration resource's dynamic provider, called directly: check bounds the lock timeout, and diff
takes a superseding text into state without touching the database."""

from __future__ import annotations

import pytest

from tests.utils.migrations import PREVIOUS_COMPAT
from x402db.migrate import files as migrations


def test_pulumi_provider_check_bounds_lock_timeout():
    from x402db.iac.sql_migration import MigrationProvider

    up, down = "SELECT 1;\n", "SELECT 1;\n"
    props = {
        "dsn": "x",
        "version": "005",
        "name": "n",
        "checksum": migrations.checksum(up),
        "up_sql": up,
        "down_sql": down,
        "target": "postgres",
    }
    assert MigrationProvider().check({}, {**props, "lock_timeout": "1s"}).failures == []
    assert [f.property for f in MigrationProvider().check({}, {**props, "lock_timeout": "0"}).failures] == [
        "lock_timeout"
    ]


def test_pulumi_takes_a_superseding_text_into_state_without_touching_the_database():
    from x402db.errors import DriftError
    from x402db.iac.sql_migration import MigrationProvider

    compat = migrations.find(migrations.load(), "000")
    news = {
        "version": "000",
        "name": "platform_compat",
        "checksum": compat.checksum,
        "up_sql": compat.up_text,
        "down_sql": compat.down_text,
        "target": "postgres",
        "dsn": "x",
    }
    olds = {**news, "checksum": compat.up.supersedes[0], "up_sql": PREVIOUS_COMPAT.read_text()}
    d = MigrationProvider().diff("000", olds, news)
    assert d.changes and not d.replaces
    with pytest.raises(DriftError) as refused:
        MigrationProvider().diff("000", {**olds, "checksum": "d" * 64}, news)
    # The provider host prints the sentence as the type's name (iac/oneline.py): read it from args.
    assert "immutable" in refused.value.args[0]
