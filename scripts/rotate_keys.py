#!/usr/bin/env python3
"""Rotate every stored OpenRouter key to the new secret: dry run by default, --apply to write."""

from x402db.cli.rotate import cli

cli()
