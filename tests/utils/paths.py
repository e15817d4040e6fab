"""Where the tests' data and drivers live, whatever folder a test module is in."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"  # SQL the tests load: Supabase's platform, the application's tables, old texts
NODE_DIR = TESTS / "node"  # the JavaScript drivers the Node tests run
