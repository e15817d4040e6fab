"""A database for the engine tests to deploy to: a fresh one on a test server, as plain postgres
(connecting as the cluster's superuser) or as a Supabase-built database (connecting as the
non-superuser `postgres`), and the stack config that reaches it."""

from __future__ import annotations

import psycopg

from tests.utils.db import admin_dsn, drop_database, new_database, new_supabase_database, pg_dump_schema
from tests.utils.real_pulumi import Project


class Target:
    """One database to deploy to, and the stack config that reaches it."""

    def __init__(self, server, kind: str):
        self.server, self.kind = server, kind
        if kind == "postgres":
            self.dsn = new_database(server)
            self.user = server.superuser
        else:
            self.dsn = new_supabase_database(server, "shape_a")
            self.user = "postgres"
        self.database = psycopg.conninfo.conninfo_to_dict(self.dsn)["dbname"]

    @property
    def admin(self) -> str:
        return admin_dsn(self.server, self.dsn)

    def config(self, **extra: str) -> dict[str, str]:
        base = {
            "target": self.kind,
            "host": "127.0.0.1",
            "port": str(self.server.port()),
            "database": self.database,
            "username": self.user,
            "sslmode": "disable",
            "protect": "false",
        }
        if self.kind == "postgres":
            base["superuser"] = "true"
        return base | extra

    def query(self, sql: str, params=None):
        with psycopg.connect(self.admin, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def snapshot(self) -> str:
        ledger = self.query("SELECT to_regclass('x402_private.schema_migrations') IS NOT NULL")[0][0]
        rows = (
            self.query("SELECT version, checksum, state FROM x402_private.schema_migrations ORDER BY 1")
            if ledger
            else []
        )
        return pg_dump_schema(self.server, self.admin) + repr(rows)

    @property
    def server_version(self) -> int:
        return int(self.query("SHOW server_version_num")[0][0])

    def drop(self) -> None:
        drop_database(self.server, self.dsn)


def refused_unchanged(target: Target, before: str, result, *says: str) -> None:
    """The command failed, said each of `says`, and the database is as it was."""
    assert result.returncode != 0, result.output
    for words in says:
        assert words in result.output, result.output
    assert target.snapshot() == before


def deployed(project: Project, target: Target, stack: str = "test", **config: str) -> None:
    project.init(stack, target.config(**config), target.server.password)
    project.run("up", "--yes", "--skip-preview").ok()
