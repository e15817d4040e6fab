"""scripts/encrypt_key.py as the tests run it, with the secret that must never leak."""

from __future__ import annotations

from .scripts import run_script

SECRET = "cli-test-secret-0123"
KEY = "sk-or-v1-" + "ab" * 32
ENV = {"INTEGRATION_ENCRYPTION_SECRET": SECRET}


def enc(*args, input=KEY + "\n", env=ENV):
    return run_script("encrypt_key.py", *args, input=input, env=env)


def assert_no_leak(r, *also):
    for s in (SECRET, *also):
        assert s not in r.stderr
    assert SECRET not in r.stdout
