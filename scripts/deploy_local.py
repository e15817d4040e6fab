#!/usr/bin/env python3
"""Deploy the bundle: make deploy runs this."""

from x402db.cli.deploy import deploy_cli

deploy_cli()
