"""API-key encryption: the live backend's format (legacy) and an authenticated v2 format.

legacy   `iv_hex:ciphertext_hex`, AES-256-CBC + PKCS7, key = SHA-256(secret); byte-compatible
         with the backend's encryptSecret/decryptSecret. No integrity, so a decrypted value is
         accepted only if it has the expected key shape (a wrong key passes padding 1 in 256).
v2       `v2:<key id>:<nonce_hex>:<ciphertext+tag hex>`, AES-256-GCM, 96-bit random nonce,
         associated data = table, column and user_id, so a ciphertext moved to another row fails.

Like Fernet: a small surface and one exception type, DecryptError, for every bad input.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from re import Pattern
from typing import NamedTuple, TypeAlias

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..access import INTEGRATIONS, unqualified

FORMATS = ("legacy", "v2")
OPENROUTER_KEY = re.compile(r"sk-or-v1-[0-9a-f]{64}")
_LEGACY = re.compile(r"([0-9a-fA-F]{32}):((?:[0-9a-fA-F]{32})+)")
_V2 = re.compile(r"v2:([0-9a-f]{8}):([0-9a-f]{24}):([0-9a-f]{32,})")
_VERSIONED = re.compile(r"v\d+:")

# What a decrypted value must look like: a regex (full match), a predicate, or None for any UTF-8.
Shape: TypeAlias = Pattern[str] | Callable[[str], bool] | None


class _Sealed(NamedTuple):
    """A legacy ciphertext, parsed, waiting for the batch's CBC decryption."""

    iv: bytes
    ct: bytes


class DecryptError(Exception):
    """Every ciphertext that cannot be turned into a key. `reason` is one of: malformed,
    unknown-format, wrong-key, tampered, not-a-key, no-context. Never carries a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Context:
    """Where a v2 ciphertext lives; it is authenticated as associated data."""

    user_id: str
    table: str = unqualified(INTEGRATIONS)
    column: str = "encrypted_api_key"

    def aad(self) -> bytes:
        return b"x402/v2\x00" + "\x00".join((self.table, self.column, str(self.user_id).lower())).encode()


def derive_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def fingerprint_key(key: bytes) -> str:
    """A short public name for a key, e.g. in logs and the rotation audit; not reversible."""
    return hashlib.sha256(b"x402 key fingerprint\x00" + key).hexdigest()[:12]


def fingerprint(secret: str) -> str:
    return fingerprint_key(derive_key(secret))


def _key_id(key: bytes) -> str:
    return hmac.new(key, b"x402 v2 key id", hashlib.sha256).hexdigest()[:8]


def shape_ok(text: str, shape: Shape) -> bool:
    if shape is None:
        return True
    if isinstance(shape, Pattern):
        return shape.fullmatch(text) is not None
    return bool(shape(text))


def _acceptor(shape: Shape) -> Callable[[str], object]:
    """shape_ok() for one shape, resolved once for a whole batch."""
    if shape is None:
        return lambda text: True
    if isinstance(shape, Pattern):
        return shape.fullmatch
    return shape


_PADS = [bytes((n,)) * n for n in range(17)]  # PKCS7's padding of n bytes, by n


def _pkcs7_pad(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes((n,)) * n


def _pkcs7_unpad(data: bytes) -> bytes | None:
    # Offline tool, no oracle to protect: a plain check is fine, and much cheaper than
    # cryptography's padder objects on this hot path.
    n = data[-1] if data else 0
    if not 1 <= n <= 16 or data[-n:] != bytes((n,)) * n:
        return None
    return data[:-n]


def encrypt_legacy(key: bytes | algorithms.AES, plaintext: str) -> str:
    iv = os.urandom(16)
    alg = key if isinstance(key, algorithms.AES) else algorithms.AES(key)
    enc = Cipher(alg, modes.CBC(iv)).encryptor()
    return f"{iv.hex()}:{(enc.update(_pkcs7_pad(plaintext.encode('utf-8'))) + enc.finalize()).hex()}"


def _cbc_decrypt_stream(alg: algorithms.AES, stream: bytes, sizes: Sequence[int]) -> list[bytes | None]:
    """AES-256-CBC decryption of the messages laid out in `stream` as iv1 ‖ ct1 ‖ iv2 ‖ ct2 ‖ ...
    (sizes[i] = len(iv_i ‖ ct_i)) by one call of cryptography's own CBC mode; each result is
    None when its padding is wrong.

    CBC defines a message's IV as the ciphertext block before its first block. So the stream,
    decrypted as one CBC message, yields every plaintext exactly, each preceded by one block (the
    decryption of its IV) that is dropped. No cipher mode is written here: the library does all
    of CBC. It saves building a cipher context per message, which costs more than the AES work
    for a 5-block API key (rotation decrypts every row twice).
    """
    dec = Cipher(alg, modes.CBC(bytes(16))).decryptor()
    raw = dec.update(stream) + dec.finalize()
    out, pos = [], 0
    for size in sizes:
        out.append(_pkcs7_unpad(raw[pos + 16 : pos + size]))
        pos += size
    return out


def _decrypt_legacy_many(key: bytes | algorithms.AES, messages: Sequence[tuple[bytes, bytes]]) -> list[bytes | None]:
    """AES-256-CBC decryption of many (iv, ciphertext) messages by one library call."""
    alg = key if isinstance(key, algorithms.AES) else algorithms.AES(key)
    if not messages:
        return []
    return _cbc_decrypt_stream(alg, b"".join(iv + ct for iv, ct in messages), [16 + len(ct) for _, ct in messages])


def _uniform_legacy_stream(tokens: Sequence[object]) -> tuple[bytes, int] | None:
    """iv1 ‖ ct1 ‖ iv2 ‖ ct2 ‖ ... of a batch of legacy tokens that are all canonical and of one
    length, and the size in bytes of each message; None when the batch is not uniform (another
    length, another format, whitespace, anything else), which then takes the per-token parse.
    Whatever passes here passes the per-token parse with the same IV and ciphertext."""
    if not tokens:
        return None
    try:
        lengths = set(map(len, tokens))  # type: ignore[arg-type]  # a non-text token raises TypeError
        joined = "".join(tokens)  # type: ignore[arg-type]
    except TypeError:
        return None
    if len(lengths) != 1:
        return None
    (n,) = lengths
    count = len(tokens)
    # 32 hex digits, a colon, a whole number of 16-byte blocks (at least one) in hex.
    if n < 65 or (n - 33) % 32 or joined.count(":") != count or joined[32::n] != ":" * count:
        return None
    digits = joined.replace(":", "")
    try:
        stream = bytes.fromhex(digits)
    except ValueError:
        return None
    if 2 * len(stream) != len(digits):  # fromhex skips whitespace; a canonical token has none
        return None
    return stream, (n - 1) // 2


def encrypt_legacy_many(key: bytes | algorithms.AES, plaintexts: Sequence[str]) -> list[str]:
    """encrypt_legacy() of every plaintext, each under its own random IV, by one library call.

    The stream R1 ‖ P1 ‖ R2 ‖ P2 ‖ ... (Ri a fresh random block, Pi a padded plaintext) is
    encrypted as one CBC message. The ciphertext block of Ri is the block before Pi's first
    ciphertext block, which is what CBC calls Pi's IV: it becomes row i's IV, and the blocks
    after it are exactly the CBC encryption of Pi under that IV, so any CBC reader decrypts the
    row alone. That IV is AES(Ri XOR the block before), with Ri uniformly random and never
    written anywhere: as unpredictable as os.urandom(16) per row, which is what CBC requires.
    """
    alg = key if isinstance(key, algorithms.AES) else algorithms.AES(key)
    if not plaintexts:
        return []
    padded = [_pkcs7_pad(p.encode("utf-8")) for p in plaintexts]
    count = len(padded)
    randoms = os.urandom(16 * count)
    parts = [b""] * (2 * count)
    parts[0::2] = [randoms[j : j + 16] for j in range(0, 16 * count, 16)]
    parts[1::2] = padded
    enc = Cipher(alg, modes.CBC(os.urandom(16))).encryptor()
    out = (enc.update(b"".join(parts)) + enc.finalize()).hex()
    tokens, pos = [], 0
    for block in padded:
        end = pos + 32 + 2 * len(block)
        tokens.append(f"{out[pos : pos + 32]}:{out[pos + 32 : end]}")
        pos = end
    return tokens


def _decrypt_legacy(key: bytes | algorithms.AES, iv: bytes, ct: bytes) -> bytes | None:
    """AES-256-CBC of one message through cryptography's CBC mode; None when the padding is wrong."""
    alg = key if isinstance(key, algorithms.AES) else algorithms.AES(key)
    dec = Cipher(alg, modes.CBC(iv)).decryptor()
    return _pkcs7_unpad(dec.update(ct) + dec.finalize())


def encrypt_v2(
    key: bytes, plaintext: str, context: Context, _aead: AESGCM | None = None, _kid: str | None = None
) -> str:
    nonce = os.urandom(12)
    ct = (_aead or AESGCM(key)).encrypt(nonce, plaintext.encode("utf-8"), context.aad())
    return f"v2:{_kid or _key_id(key)}:{nonce.hex()}:{ct.hex()}"


class Keyring:
    """One primary secret that encrypts, and previous secrets that only decrypt."""

    def __init__(self, primary: str, previous: Sequence[str] = ()) -> None:
        secrets = [primary, *previous]
        if any(not s for s in secrets):
            raise ValueError("an encryption secret is empty")
        self._keys = list(dict.fromkeys(derive_key(s) for s in secrets))  # primary first, deduplicated
        self._by_id = {_key_id(k): k for k in self._keys}
        # Built once: per-call HMAC and AESGCM construction cost more than the cipher itself.
        self._aead = {k: AESGCM(k) for k in self._keys}
        self._primary_kid = _key_id(self._keys[0])
        self._aes = {k: algorithms.AES(k) for k in self._keys}
        self._fingerprints = {k: fingerprint_key(k) for k in self._keys}
        # Legacy ciphertexts do not name their key: try the key that worked last time first,
        # which during a rotation is nearly always the right one.
        self._legacy_order = list(self._keys)

    @property
    def primary_fingerprint(self) -> str:
        return fingerprint_key(self._keys[0])

    @property
    def fingerprints(self) -> list[str]:
        return [fingerprint_key(k) for k in self._keys]

    def encrypt(self, plaintext: str, fmt: str = "legacy", context: Context | None = None) -> str:
        if fmt == "legacy":
            return encrypt_legacy(self._aes[self._keys[0]], plaintext)
        if fmt == "v2":
            if context is None:
                raise ValueError("the v2 format needs the row's user_id as associated data")
            return encrypt_v2(self._keys[0], plaintext, context, self._aead[self._keys[0]], self._primary_kid)
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")

    def encrypt_many(
        self, plaintexts: Sequence[str], fmt: str = "legacy", contexts: Sequence[Context | None] | None = None
    ) -> list[str]:
        """encrypt() of many plaintexts; legacy in one library call, each row under its own IV.
        v2 (AES-GCM, one nonce and one tag per row) has no such stream: it goes row by row."""
        if fmt == "legacy":
            return encrypt_legacy_many(self._aes[self._keys[0]], plaintexts)
        if fmt != "v2":
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        if contexts is None or len(contexts) != len(plaintexts):
            raise ValueError("the v2 format needs each row's user_id as associated data")
        return [self.encrypt(p, fmt, c) for p, c in zip(plaintexts, contexts or (), strict=True)]

    def decrypt(self, token: str, context: Context | None = None, shape: Shape = OPENROUTER_KEY) -> str:
        return self.decrypt_with_key(token, context, shape)[0]

    def decrypt_with_key(
        self, token: str, context: Context | None = None, shape: Shape = OPENROUTER_KEY
    ) -> tuple[str, str]:
        """(plaintext, fingerprint of the key that decrypted it)."""
        result = self.decrypt_many([(token, context)], shape)[0]
        if isinstance(result, DecryptError):
            raise result
        return result

    def decrypt_many(
        self, items: Sequence[tuple[str, Context | None]], shape: Shape = OPENROUTER_KEY
    ) -> list[tuple[str, str] | DecryptError]:
        """For each (token, context): (plaintext, key fingerprint), or the DecryptError saying why
        not. Legacy tokens are decrypted key by key, all of them in one library call per key; a
        batch of uniform legacy tokens is even parsed in one go."""
        results: list[tuple[str, str] | DecryptError | None] = [None] * len(items)
        uniform = _uniform_legacy_stream([token for token, _ in items])
        if uniform is not None:
            stream, size = uniform
            pending, sizes = list(range(len(items))), [size] * len(items)
        else:
            pending, chunks = [], []
            for i, (token, context) in enumerate(items):
                try:
                    parsed = self._parse(token, context, shape)
                except DecryptError as exc:
                    results[i] = exc
                    continue
                if isinstance(parsed, _Sealed):
                    pending.append(i)
                    chunks.append(parsed.iv + parsed.ct)
                else:
                    results[i] = parsed
            stream, sizes = b"".join(chunks), [len(c) for c in chunks]
        accept = _acceptor(shape)
        shaped_wrong: set[int] = set()  # some key passed the padding check but gave no acceptable key
        for key in tuple(self._legacy_order):
            if not pending:
                break
            fp = self._fingerprints[key]
            missed: list[int] = []
            missed_sizes: list[int] = []
            missed_chunks: list[bytes] = []
            # _cbc_decrypt_stream, with the unpadding inline: this loop is rotation's hot path.
            dec = Cipher(self._aes[key], modes.CBC(bytes(16))).decryptor()
            raw = dec.update(stream) + dec.finalize()
            pos = 0
            for i, size in zip(pending, sizes, strict=True):
                end = pos + size
                pad = raw[end - 1]
                text = None
                if 1 <= pad <= 16 and raw[end - pad : end] == _PADS[pad]:
                    try:
                        text = raw[pos + 16 : end - pad].decode("utf-8")
                    except UnicodeDecodeError:
                        # A wrong key passes the padding check for 1 message in 256 and yields
                        # random bytes, which are not UTF-8: still a wrong key, not "not-a-key".
                        pass
                if text is not None and accept(text):
                    results[i] = (text, fp)
                else:
                    if text is not None:
                        shaped_wrong.add(i)
                    missed.append(i)
                    missed_sizes.append(size)
                    missed_chunks.append(stream[pos:end])
                pos = end
            hits = len(pending) - len(missed)
            # Legacy ciphertexts do not name their key: the one that decrypted most goes first
            # next time, which during a rotation is nearly always right.
            if hits and key is not self._legacy_order[0] and hits * 2 >= len(pending):
                self._legacy_order = [key] + [k for k in self._legacy_order if k is not key]
            pending, sizes, stream = missed, missed_sizes, b"".join(missed_chunks)
        for i in pending:
            results[i] = (
                DecryptError("not-a-key", "decrypted to text, but the text is not an API key of the expected shape")
                if i in shaped_wrong
                else DecryptError("wrong-key", f"no secret in the keyring ({len(self._keys)}) decrypts this ciphertext")
            )
        return results  # type: ignore[return-value]  # every slot was filled above (parse, legacy hit or miss)

    def _parse(self, token: str, context: Context | None, shape: Shape) -> tuple[str, str] | _Sealed:
        """A v2 token's result, or a legacy token's (iv, ciphertext) to decrypt in the batch."""
        if not isinstance(token, str):
            raise DecryptError("malformed", "ciphertext must be text")
        stripped = token.strip()
        if not stripped:
            raise DecryptError("malformed", "ciphertext is empty")
        if stripped.startswith("v2:"):
            return self._decrypt_v2(token, context, shape)  # as given: v2 must be canonical
        if _VERSIONED.match(stripped):
            raise DecryptError(
                "unknown-format",
                f"unknown ciphertext format {stripped.split(':', 1)[0]!r}; this tool reads legacy and v2",
            )
        # Legacy: the backend's hex decoding ignores surrounding whitespace too.
        m = _LEGACY.fullmatch(stripped)
        if not m:
            raise DecryptError(
                "malformed",
                "not a legacy ciphertext: expected iv_hex:ciphertext_hex (32 hex digits, a colon, a multiple of 32 hex digits)",
            )
        return _Sealed(bytes.fromhex(m[1]), bytes.fromhex(m[2]))

    def _decrypt_v2(self, token: str, context: Context | None, shape: Shape) -> tuple[str, str]:
        # Only the canonical form we write: lowercase hex, whole bytes, nothing else. bytes.fromhex
        # alone would also take spaces, tabs and newlines inside the hex.
        m = _V2.fullmatch(token)
        if m is None or len(m[3]) % 2:
            raise DecryptError(
                "malformed",
                "not a canonical v2 ciphertext: expected v2:<8 hex key id>:<24 hex nonce>:<hex ciphertext and tag>, lowercase, nothing else",
            )
        nonce, sealed = bytes.fromhex(m[2]), bytes.fromhex(m[3])
        if context is None:
            raise DecryptError("no-context", "a v2 ciphertext can only be decrypted with its row's user_id")
        kid = m[1]
        key = self._by_id.get(kid)
        if key is None:
            raise DecryptError("wrong-key", f"no secret in the keyring has key id {kid}")
        try:
            raw = self._aead[key].decrypt(nonce, sealed, context.aad())
            text = raw.decode("utf-8")
        except Exception:  # InvalidTag, or bytes that are not UTF-8: both mean it was altered
            raise DecryptError(
                "tampered", "v2 ciphertext failed authentication: altered, or stored under another user_id"
            ) from None
        if not shape_ok(text, shape):
            raise DecryptError("not-a-key", "decrypted, but the result is not an API key of the expected shape")
        return text, self._fingerprints[key]

    def verify(self, token: str, plaintext: str, context: Context | None = None) -> bool:
        """Whether `token`, just made by encrypt(), decrypts under the primary key to `plaintext`."""
        return self.verify_many([(token, plaintext, context)])[0]

    def verify_many(self, items: Sequence[tuple[str, str, Context | None]]) -> list[bool]:
        """verify() for many fresh tokens; the legacy ones in one library CBC call."""
        key = self._keys[0]
        uniform = _uniform_legacy_stream([token for token, _, _ in items])
        if uniform is not None:
            # The very strings that will be written, parsed back and decrypted in one call.
            stream, size = uniform
            dec = Cipher(self._aes[key], modes.CBC(bytes(16))).decryptor()
            out = dec.update(stream) + dec.finalize()
            # Each message's plaintext after its IV block, padding and all, against the padded
            # text: equal padded texts are equal texts, without unpadding row by row.
            got = [out[pos + 16 : pos + size] for pos in range(0, len(out), size)]
            want = [_pkcs7_pad(p.encode("utf-8")) for _, p, _ in items]
            return [True] * len(items) if got == want else [g == w for g, w in zip(got, want, strict=True)]
        ok: list[bool] = [False] * len(items)
        legacy: list[tuple[int, tuple[bytes, bytes], bytes]] = []  # (index, (iv, ct), expected)
        for i, (token, plaintext, context) in enumerate(items):
            expected = plaintext.encode("utf-8")
            if token.startswith("v2:"):
                _, _, nonce, sealed = token.split(":")
                try:
                    ok[i] = (
                        context is not None
                        and self._aead[key].decrypt(bytes.fromhex(nonce), bytes.fromhex(sealed), context.aad())
                        == expected
                    )
                except Exception:
                    ok[i] = False
            else:
                iv, ct = token.split(":")
                legacy.append((i, (bytes.fromhex(iv), bytes.fromhex(ct)), expected))
        raws = _decrypt_legacy_many(self._aes[key], [message for _, message, _ in legacy])
        for (i, _, expected), raw in zip(legacy, raws, strict=True):
            ok[i] = raw == expected
        return ok

    def key_fingerprint_of(self, token: str) -> str | None:
        """Which keyring key a v2 token names, without decrypting (None for legacy/unknown)."""
        m = _V2.fullmatch(token.strip()) if isinstance(token, str) else None
        key = self._by_id.get(m[1]) if m else None
        return fingerprint_key(key) if key else None


def generate_secret() -> str:
    return os.urandom(32).hex()
