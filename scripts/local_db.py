#!/usr/bin/env python3
"""Start, stop or revert the embedded PostgreSQL under .local/."""

from x402db.cli.deploy import local_cli

local_cli()
