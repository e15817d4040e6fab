"""Re-export of iac/sql_migration.py. Pulumi state stores each dynamic provider serialized by
reference to its class's module, and state written before the move names this one: keep this
path importable for as long as such state may exist, that is forever."""

from .iac.sql_migration import MigrationProvider, SqlMigration

__all__ = ["MigrationProvider", "SqlMigration"]
