"""The suite's fixtures live in plugins (tests/fix_*.py) and its helpers in tests/utils/."""

pytest_plugins = ["tests.fix_db", "tests.fix_pulumi"]
