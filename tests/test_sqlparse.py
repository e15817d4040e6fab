"""Statement splitting with PostgreSQL's parser: the engine runs what `split` returns, the
plan describes the same list."""
from __future__ import annotations

from pathlib import Path

import pytest

from x402db import migrations, sqlparse
from x402db.errors import UsageError


def test_split_respects_dollar_quotes_strings_and_comments():
    text = """
    -- a comment; with a semicolon
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
    COMMENT ON TABLE t IS 'ends here;
    not here';  /* block; comment */ SELECT 'a;b'
    """
    assert sqlparse.split(text) == (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
        "COMMENT ON TABLE t IS 'ends here;\n    not here'",
        "SELECT 'a;b'",
    )


def test_non_ascii_text_keeps_statement_boundaries():
    # libpg_query reports byte offsets; a multi-byte character before a statement must not shift it.
    assert sqlparse.split("COMMENT ON TABLE t IS 'clé — ü';\nSELECT 2;") == ("COMMENT ON TABLE t IS 'clé — ü'", "SELECT 2")


def test_do_block_statements_are_opened_with_plpgsql_parser():
    [do] = sqlparse.statements("""DO $$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_class) THEN
        ALTER TABLE public.t ADD COLUMN c int;
      END IF;
      EXECUTE format('DROP TABLE %I', 'x');
    END $$;""")
    assert [s.kind for s in do.inner] == ["SelectStmt", "AlterTableStmt"]
    assert do.inner[1].sql == "ALTER TABLE public.t ADD COLUMN c int"
    assert do.dynamic == ("format('DROP TABLE %I', 'x')",)


def test_parse_error_names_the_file(tmp_path: Path):
    (tmp_path / "007_bad.up.sql").write_text("CREATE TABLE t (a int;\n")
    (tmp_path / "007_bad.down.sql").write_text("DROP TABLE t;\n")
    with pytest.raises(UsageError, match="007_bad.up.sql: PostgreSQL cannot parse it"):
        migrations.load(tmp_path)


def test_no_transaction_steps_may_hold_semicolons_in_strings(tmp_path: Path):
    (tmp_path / "007_x.up.sql").write_text("SELECT 1;\n-- x402:no-transaction\nCOMMENT ON TABLE t IS 'a;\nb';\nSELECT 2;\n")
    (tmp_path / "007_x.down.sql").write_text("SELECT 3;\n")
    [m] = migrations.load(tmp_path)
    assert m.up.statements == ("SELECT 1",)
    assert m.up.steps == ("COMMENT ON TABLE t IS 'a;\nb'", "SELECT 2")
