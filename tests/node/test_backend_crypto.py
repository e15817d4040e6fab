"""Byte compatibility with the backend: its own algorithm (tests/node/backend_crypto.js, run with Node)
decrypts what the Python keyring and the CLI encrypt, and the Python keyring decrypts what the backend encrypts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.utils.paths import NODE_DIR
from x402db.keys.crypto import Keyring

NODE = shutil.which("node")
BACKEND_JS = NODE_DIR / "backend_crypto.js"
SECRET = "backend-secret-\u00e9-42"
KEY = "sk-or-v1-" + "5f" * 32
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed, so the backend's algorithm cannot be run")


def node(mode: str, values: list[str], secret: str = SECRET) -> list[str]:
    out = subprocess.run(
        [NODE, str(BACKEND_JS), mode],
        input="\n".join(json.dumps(v) for v in values) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "INTEGRATION_ENCRYPTION_SECRET": secret},
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


TEXTS = [
    KEY,
    "",
    "a",
    "x" * 15,
    "y" * 16,
    "z" * 17,
    "\u00fcnic\u00f8de \U0001f511",
    "line\nbreak",
    "sk-or-v1-" + "0" * 64,
]


@needs_node
def test_backend_decrypts_our_ciphertext():
    ring = Keyring(SECRET)
    tokens = [ring.encrypt(t) for t in TEXTS]
    assert all(re.fullmatch(r"[0-9a-f]{32}:[0-9a-f]+", t) for t in tokens)
    assert node("decrypt", tokens) == TEXTS


@needs_node
def test_we_decrypt_backend_ciphertext():
    tokens = node("encrypt", TEXTS)
    ring = Keyring("another", previous=[SECRET])
    assert [ring.decrypt(t, shape=None) for t in tokens] == TEXTS


@needs_node
def test_backend_decrypts_cli_output(tmp_path):
    from tests.utils.scripts import run_script

    r = run_script("encrypt_key.py", input=KEY + "\n", env={"INTEGRATION_ENCRYPTION_SECRET": SECRET})
    assert r.returncode == 0, r.stderr
    assert node("decrypt", [r.stdout.strip()]) == [KEY]


@needs_node
def test_backend_decrypts_a_batch_encrypted_as_one_stream():
    # Rotation writes a whole batch from one CBC call; the live backend reads each row alone.
    tokens = Keyring(SECRET).encrypt_many(TEXTS)
    assert len({t.split(":")[0] for t in tokens}) == len(TEXTS)
    assert node("decrypt", tokens) == TEXTS
