#!/usr/bin/env python3
"""Post-deploy verification: smoke.py [--dsn DSN] [--json] [--junit FILE] [--read-only]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from x402db.cli.common import run  # noqa: E402
from x402db.cli.smoke import main  # noqa: E402

if __name__ == "__main__":
    run(main)
