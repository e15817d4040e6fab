#!/usr/bin/env python3
"""Rotate every stored OpenRouter key to the new secret: dry run by default, --apply to write."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from x402db.cli.common import run  # noqa: E402
from x402db.cli.rotate import main  # noqa: E402

if __name__ == "__main__":
    run(main)
