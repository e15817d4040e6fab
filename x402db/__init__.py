"""x402-jobs OpenRouter database bundle: migrations, access model, crypto, rotation, smoke."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
