#!/usr/bin/env python3
"""Post-deploy verification: smoke.py [--dsn DSN] [--json] [--junit FILE] [--read-only]."""

from x402db.cli.smoke import cli

cli()
