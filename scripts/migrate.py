#!/usr/bin/env python3
"""Apply, revert or inspect migrations: migrate.py up|down|status [--dsn DSN] [--json] ..."""

from x402db.cli.migrate import cli

cli()
