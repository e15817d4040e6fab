#!/usr/bin/env python3
"""Roll the bundle out to many databases in waves: fleet.py validate|plan|up|resume|status [--fleet FILE] [--json]."""

from x402db.cli.fleet import cli

cli()
