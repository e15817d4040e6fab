#!/usr/bin/env python3
"""Encrypt/decrypt operations per second for both formats, beside the raw `cryptography`
primitive doing the same work (same key, same plaintext, no parsing, no checks), in one run.
Target: our overhead at most 2x the raw primitive."""

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The benches run as scripts from bench/: the repository root goes on the path before anything of
# ours is imported, hence the imports below the statement (noqa: E402).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import padding  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from x402db.keys.crypto import Context, Keyring, derive_key  # noqa: E402

KEY_TEXT = "sk-or-v1-" + "3c" * 32
N = 50_000


def rate(fn: Callable[[], object]) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(N):
        fn()
    return N / (time.perf_counter() - t0)


def main() -> None:
    secret = "bench-secret"
    key = derive_key(secret)
    ring = Keyring(secret)
    ctx = Context("6c0d6f4e-3a0e-4b7e-9f4b-5b0a7d2f1c11")
    data = KEY_TEXT.encode()
    legacy, v2 = ring.encrypt(KEY_TEXT), ring.encrypt(KEY_TEXT, "v2", ctx)
    iv, ct = (bytes.fromhex(p) for p in legacy.split(":"))
    nonce, gct = bytes.fromhex(v2.split(":")[2]), bytes.fromhex(v2.split(":")[3])
    aad = ctx.aad()

    def raw_cbc_encrypt():
        p = padding.PKCS7(128).padder()
        e = Cipher(algorithms.AES(key), modes.CBC(os.urandom(16))).encryptor()
        return e.update(p.update(data) + p.finalize()) + e.finalize()

    def raw_cbc_decrypt():
        d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        u = padding.PKCS7(128).unpadder()
        return u.update(d.update(ct) + d.finalize()) + u.finalize()

    def raw_gcm_encrypt():
        return AESGCM(key).encrypt(os.urandom(12), data, aad)

    def raw_gcm_decrypt():
        return AESGCM(key).decrypt(nonce, gct, aad)

    rows = [
        ("legacy encrypt", lambda: ring.encrypt(KEY_TEXT), raw_cbc_encrypt),
        ("legacy decrypt", lambda: ring.decrypt(legacy), raw_cbc_decrypt),
        ("v2 encrypt", lambda: ring.encrypt(KEY_TEXT, "v2", ctx), raw_gcm_encrypt),
        ("v2 decrypt", lambda: ring.decrypt(v2, ctx), raw_gcm_decrypt),
    ]
    print(f"{'operation':<16}{'ours ops/s':>12}{'raw ops/s':>12}{'overhead':>10}  (target <= 2.00x)")
    for name, ours, raw in rows:
        o, r = rate(ours), rate(raw)
        print(f"{name:<16}{o:>12,.0f}{r:>12,.0f}{r / o:>9.2f}x")


if __name__ == "__main__":
    main()
