#!/usr/bin/env python3
"""Encrypt (stdin -> ciphertext), --decrypt, --store or --generate-secret an OpenRouter API key."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from x402db.cli.common import run  # noqa: E402
from x402db.cli.encrypt import main  # noqa: E402

if __name__ == "__main__":
    run(main)
