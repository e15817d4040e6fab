"""Statement splitting with PostgreSQL's parser: the engine runs what `split` returns, the
plan describes the same list."""

from __future__ import annotations

from pathlib import Path

import pytest

from x402db.errors import UsageError
from x402db.migrate import files as migrations
from x402db.migrate import sqlparse


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
    assert sqlparse.split("COMMENT ON TABLE t IS 'clé — ü';\nSELECT 2;") == (
        "COMMENT ON TABLE t IS 'clé — ü'",
        "SELECT 2",
    )


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
    (tmp_path / "007_x.up.sql").write_text(
        "SELECT 1;\n-- x402:no-transaction\nCOMMENT ON TABLE t IS 'a;\nb';\nSELECT 2;\n"
    )
    (tmp_path / "007_x.down.sql").write_text("SELECT 3;\n")
    [m] = migrations.load(tmp_path)
    assert m.up.statements == ("SELECT 1",)
    assert m.up.steps == ("COMMENT ON TABLE t IS 'a;\nb'", "SELECT 2")


@pytest.mark.parametrize("statement", ["COMMIT", "BEGIN", "ROLLBACK", "SAVEPOINT s", "END"])
def test_transaction_control_in_a_migration_is_refused_at_load(tmp_path: Path, statement):
    # A COMMIT would commit the first half of the engine's transaction and leave the rest to run
    # outside any: a failure after it left tables behind while the engine said "nothing changed".
    (tmp_path / "900_x.up.sql").write_text(
        f"CREATE TABLE public.a (id int);\n{statement};\nCREATE TABLE public.b (id int);\n"
    )
    (tmp_path / "900_x.down.sql").write_text("DROP TABLE public.a;\n")
    with pytest.raises(UsageError, match=r"900_x.up.sql: \w+ controls the transaction"):
        migrations.load(tmp_path)
    (tmp_path / "900_x.up.sql").write_text(f"SELECT 1;\n-- x402:no-transaction\n{statement};\n")
    with pytest.raises(UsageError, match="controls the transaction"):
        migrations.load(tmp_path)


@pytest.mark.parametrize(
    "statement",
    [
        "VACUUM public.a",
        "CREATE INDEX CONCURRENTLY a_i ON public.a (id)",
        "DROP INDEX CONCURRENTLY public.a_i",
        "REINDEX TABLE CONCURRENTLY public.a",
        "ALTER TABLE public.a DETACH PARTITION public.a1 CONCURRENTLY",
    ],
)
def test_a_statement_that_cannot_run_in_a_transaction_must_be_a_step(tmp_path: Path, statement):
    (tmp_path / "900_x.down.sql").write_text("SELECT 1;\n")
    (tmp_path / "900_x.up.sql").write_text(f"SELECT 1;\n{statement};\n")
    with pytest.raises(UsageError, match="cannot run inside a transaction block; move it after -- x402:no-transaction"):
        migrations.load(tmp_path)
    (tmp_path / "900_x.up.sql").write_text(f"SELECT 1;\n-- x402:no-transaction\n{statement};\n")
    assert migrations.load(tmp_path)[0].up.steps == (statement,)


def test_foreign_key_uses_name_what_a_statement_adds_or_may_drop():
    text = """
    CREATE TABLE "Shop".lines (order_id int REFERENCES "Shop"."Orders" (id), note text);
    ALTER TABLE shop.items ADD COLUMN cat int REFERENCES cats, DROP COLUMN old_cat, DROP CONSTRAINT items_fk;
    DROP TABLE shop.a, b;
    DO $$ BEGIN ALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (x) REFERENCES public.u (id) NOT VALID; END $$;
    DROP INDEX shop.i;
    """
    uses = [u for s in sqlparse.statements(text) for u in sqlparse.foreign_key_uses(s)]
    U = sqlparse.ForeignKeyUse
    assert uses == [
        U('"Shop"."Orders"', added=True),
        U('"cats"', added=True),
        U('"shop"."items"', column="old_cat"),
        U('"shop"."items"', constraint="items_fk"),
        U('"shop"."a"'),
        U('"b"'),
        U('"public"."u"', added=True),  # from inside the DO block; DROP INDEX drops no key
    ]
