"""The migration engine as the tests drive it, on a database or on an edited copy of sql/, and
the texts earlier releases left behind."""

from __future__ import annotations

import shutil

from x402db import ROOT, db
from x402db.migrate import files as migrations
from x402db.migrate.engine import Engine
from x402db.migrate.settings import Settings
from x402db.migrate.target import detect

from .paths import FIXTURES

# The last release whose compat layer did not record the default privileges it grants.
PREVIOUS_RELEASE = "97bdaba"
# The ledger as the previous bundle created it: no state, no down checksum.
OLD_LEDGER = """
CREATE SCHEMA x402_private;
CREATE TABLE x402_private.schema_migrations (
  version text PRIMARY KEY, name text NOT NULL,
  checksum text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
  kind text NOT NULL DEFAULT 'applied' CHECK (kind IN ('applied', 'adopted')),
  target text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
  applied_by text NOT NULL, execution_ms integer NOT NULL);
"""


PREVIOUS_COMPAT = FIXTURES / "previous_bundle" / "000_platform_compat.up.sql"


def engine(dsn, sql_dir=None, target=None, settings=None, **kw):
    conn = db.connect(dsn)
    ms = migrations.load(sql_dir) if sql_dir else migrations.load()
    return Engine(conn, ms, detect(conn, target), settings or Settings(**kw))


def states(dsn, sql_dir=None):
    e = engine(dsn, sql_dir)
    with e.conn:
        return {s.version: s.state for s in e.status()}


def copy_sql(tmp_path, edit=None):
    d = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", d)
    if edit:
        p = d / "005_add_openrouter_integration.up.sql"
        p.write_text(edit(p.read_text()))
    return d


def copy_sql_down(tmp_path, edit):
    d = copy_sql(tmp_path)
    p = d / "005_add_openrouter_integration.down.sql"
    p.write_text(edit(p.read_text()))
    return d
