#!/usr/bin/env python3
"""Start, stop or revert the embedded PostgreSQL under .local/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from x402db.cli.common import run  # noqa: E402
from x402db.cli.deploy import local_main  # noqa: E402

if __name__ == "__main__":
    run(local_main)
