#!/usr/bin/env python3
"""Encrypt (stdin -> ciphertext), --decrypt, --store or --generate-secret an OpenRouter API key."""

from x402db.cli.encrypt import cli

cli()
