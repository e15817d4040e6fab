// x402 keyring for the Node backend: a drop-in replacement for encryptSecret/decryptSecret.
//
// The node mirror of the bundle's x402db/keys/crypto.py (Keyring). Only Node's built-in `crypto`.
//
//   legacy  "iv_hex:ciphertext_hex", AES-256-CBC + PKCS7, key = SHA-256(secret): byte for byte
//           what today's backend writes and reads. No integrity, so when several keys pass the
//           padding check the decrypted value must also have the API-key shape.
//   v2      "v2:<key id>:<nonce_hex>:<ciphertext+tag hex>", AES-256-GCM, 96-bit random nonce,
//           associated data = table, column and the row's user_id: a value moved to another row
//           fails to decrypt.
//
// Configuration (environment, read on every call like the backend's own key(), parsed once):
//   INTEGRATION_ENCRYPTION_SECRET            the primary secret: encrypts, and decrypts
//   INTEGRATION_ENCRYPTION_SECRET_PREVIOUS   optional, comma-separated: decrypt only
//   INTEGRATION_ENCRYPTION_FORMAT            optional, "legacy" (default) or "v2": what encryptSecret writes
//
// Every bad ciphertext raises DecryptError with a `reason` (malformed, unknown-format, wrong-key,
// tampered, not-a-key, no-context). Errors never carry a secret, a key or a plaintext.
"use strict";

const crypto = require("crypto");

const SECRET_ENV = "INTEGRATION_ENCRYPTION_SECRET";
const PREVIOUS_ENV = "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS";
const FORMAT_ENV = "INTEGRATION_ENCRYPTION_FORMAT";
const FORMATS = Object.freeze(["legacy", "v2"]);
const REASONS = Object.freeze(["malformed", "unknown-format", "wrong-key", "tampered", "not-a-key", "no-context"]);
const TABLE = "user_openrouter_integrations";
const COLUMN = "encrypted_api_key";

// The shape a decrypted OpenRouter key must have (Python: crypto.OPENROUTER_KEY, full match).
const OPENROUTER_KEY = /^sk-or-v1-[0-9a-f]{64}$/;
// Canonical tokens only: lowercase hex, no whitespace anywhere (what every writer produces).
const LEGACY = /^([0-9a-f]{32}):((?:[0-9a-f]{32})+)$/;
const V2 = /^v2:([0-9a-f]{8}):([0-9a-f]{24}):((?:[0-9a-f]{2}){16,})$/;
// Python's `v\d+:` on str: \d is any Unicode decimal digit.
const VERSIONED = /^v\p{Nd}+:/u;

// fatal: invalid UTF-8 is an error, never U+FFFD. ignoreBOM: a leading U+FEFF is kept, as
// Python's bytes.decode("utf-8") keeps it.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class DecryptError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "DecryptError";
    this.reason = reason;
  }
}

/** A configuration mistake (missing or empty secret, unknown format); never a bad ciphertext. */
class KeyringConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "KeyringConfigError";
  }
}

const wellFormed = typeof String.prototype.isWellFormed === "function"
  ? (s) => s.isWellFormed()
  : (s) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/.test(s);

function text(value, what) {
  if (typeof value !== "string") throw new TypeError(`${what} must be a string`);
  // A lone surrogate has no UTF-8 encoding: Buffer.from would store U+FFFD instead, and the
  // value would not decrypt back to itself. Python refuses such text too.
  if (!wellFormed(value)) throw new TypeError(`${what} is not well-formed Unicode (lone surrogate)`);
  return value;
}

function deriveKey(secret) {
  return crypto.createHash("sha256").update(secret, "utf8").digest();
}

/** A short public name for a key (logs, the rotation audit); not reversible. Same as Python. */
function fingerprintKey(key) {
  return crypto.createHash("sha256").update(Buffer.from("x402 key fingerprint\0")).update(key).digest("hex").slice(0, 12);
}

function fingerprint(secret) {
  return fingerprintKey(deriveKey(text(secret, "secret")));
}

function keyId(key) {
  return crypto.createHmac("sha256", key).update("x402 v2 key id").digest("hex").slice(0, 8);
}

/** Python's Context.aad(): b"x402/v2\0" + "\0".join((table, column, str(user_id).lower())). */
function aad(userId) {
  return Buffer.concat([Buffer.from("x402/v2\0"), Buffer.from([TABLE, COLUMN, userId.toLowerCase()].join("\0"), "utf8")]);
}

function fullMatcher(shape) {
  if (shape === null) return () => true;
  if (typeof shape === "function") return (s) => Boolean(shape(s));
  if (shape instanceof RegExp) {
    // Python's re.fullmatch: the whole value, with backtracking into the pattern.
    const anchored = new RegExp(`^(?:${shape.source})$`, shape.flags.replace(/[gym]/g, ""));
    return (s) => anchored.test(s);
  }
  throw new TypeError("keyShape must be a RegExp, a function or null");
}

function pkcs7Unpad(data) {
  const n = data.length ? data[data.length - 1] : 0;
  if (n < 1 || n > 16) return null;
  for (let i = data.length - n; i < data.length; i++) if (data[i] !== n) return null;
  return data.subarray(0, data.length - n);
}

function cbcDecrypt(key, iv, ct) {
  const d = crypto.createDecipheriv("aes-256-cbc", key, iv);
  d.setAutoPadding(false); // padding checked below, as Python does, without exceptions
  return pkcs7Unpad(Buffer.concat([d.update(ct), d.final()]));
}

function parseFormat(value, what) {
  if (value === undefined || value === null || value === "") return "legacy";
  if (!FORMATS.includes(value)) throw new KeyringConfigError(`${what} must be "legacy" or "v2"`);
  return value;
}

// Whitespace at either end of a secret from the environment; the same class and the same
// wording as Python's (x402db/keys/source.py).
const EDGE_SPACE_FIX = "starts or ends with whitespace (a space or a newline), which would become part of the key; "
  + "set it to the secret alone, without a final newline";
const SPACE = "\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff";
const EDGE_SPACE = new RegExp(`^[${SPACE}]|[${SPACE}]$`);

class Keyring {
  // Private fields: util.inspect, console.log and JSON.stringify of a keyring (or of an object
  // holding one) must not show the derived keys, which decrypt as well as the secrets do.
  #shapeOk;
  #keys;
  #byId;
  #legacyOrder;

  /**
   * @param {object} options
   * @param {string} options.secret      primary secret: encrypts and decrypts
   * @param {string[]} [options.previous] older secrets: decrypt only, tried after the primary
   * @param {"legacy"|"v2"} [options.format] what encrypt() writes (default legacy)
   * @param {RegExp|Function|null} [options.keyShape] what a decrypted value must look like
   *        (full match; default OpenRouter's sk-or-v1- and 64 hex digits; null accepts any text)
   */
  constructor({ secret, previous = [], format = "legacy", keyShape = OPENROUTER_KEY } = {}) {
    if (!Array.isArray(previous)) throw new KeyringConfigError("previous must be an array of secrets");
    const secrets = [secret, ...previous];
    for (const s of secrets) {
      if (typeof s !== "string") throw new KeyringConfigError("an encryption secret is not a string");
      if (!s) throw new KeyringConfigError("an encryption secret is empty");
    }
    this.format = parseFormat(format, "format");
    this.#shapeOk = fullMatcher(keyShape);
    // Primary first, deduplicated by derived key (as Python's dict.fromkeys).
    const seen = new Set();
    this.#keys = [];
    for (const s of secrets) {
      const key = deriveKey(s);
      const hex = key.toString("hex");
      if (!seen.has(hex)) {
        seen.add(hex);
        this.#keys.push({ key, kid: keyId(key), fingerprint: fingerprintKey(key) });
      }
    }
    this.#byId = new Map(this.#keys.map((k) => [k.kid, k])); // a later key wins a collision, as in Python
    // Legacy ciphertexts do not name their key: the key that worked last is tried first, which
    // during a rotation is nearly always the right one. Same order as Python's keyring.
    this.#legacyOrder = [...this.#keys];
  }

  get primaryFingerprint() {
    return this.#keys[0].fingerprint;
  }

  get fingerprints() {
    return this.#keys.map((k) => k.fingerprint);
  }

  /** Encrypt under the primary secret, in this keyring's format. v2 needs the row's user_id. */
  encrypt(plaintext, userId) {
    text(plaintext, "plaintext");
    const { key, kid } = this.#keys[0];
    if (this.format === "legacy") {
      const iv = crypto.randomBytes(16);
      const c = crypto.createCipheriv("aes-256-cbc", key, iv);
      return `${iv.toString("hex")}:${Buffer.concat([c.update(plaintext, "utf8"), c.final()]).toString("hex")}`;
    }
    if (userId === undefined || userId === null) {
      throw new KeyringConfigError(`${FORMAT_ENV}=v2 binds each ciphertext to its row: pass the row's user_id, encryptSecret(apiKey, userId)`);
    }
    const nonce = crypto.randomBytes(12);
    const c = crypto.createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
    c.setAAD(aad(text(userId, "userId")));
    const ct = Buffer.concat([c.update(plaintext, "utf8"), c.final(), c.getAuthTag()]);
    return `v2:${kid}:${nonce.toString("hex")}:${ct.toString("hex")}`;
  }

  decrypt(stored, userId) {
    return this.decryptWithKey(stored, userId).plaintext;
  }

  /** {plaintext, keyFingerprint}: which secret decrypted the value, e.g. for rotation metrics. */
  decryptWithKey(stored, userId) {
    if (userId !== undefined && userId !== null) text(userId, "userId");
    if (typeof stored !== "string") throw new DecryptError("malformed", "ciphertext must be text");
    if (!stored) throw new DecryptError("malformed", "ciphertext is empty");
    if (stored.startsWith("v2:")) return this.#decryptV2(stored, userId);
    const versioned = VERSIONED.exec(stored);
    if (versioned) {
      throw new DecryptError("unknown-format", `unknown ciphertext format '${versioned[0].slice(0, -1)}'; this tool reads legacy and v2`);
    }
    return this.#decryptLegacy(stored);
  }

  #decryptLegacy(stored) {
    const m = LEGACY.exec(stored);
    if (!m) {
      throw new DecryptError("malformed", "not a legacy ciphertext: expected iv_hex:ciphertext_hex (32 hex digits, a colon, a multiple of 32 hex digits)");
    }
    const iv = Buffer.from(m[1], "hex");
    const ct = Buffer.from(m[2], "hex");
    let shapedWrong = false; // some key passed the padding check but gave no acceptable key
    for (const k of [...this.#legacyOrder]) {
      const raw = cbcDecrypt(k.key, iv, ct);
      if (raw === null) continue;
      let plaintext;
      try {
        plaintext = UTF8.decode(raw);
      } catch {
        // A wrong key passes the padding check for 1 message in 256 and yields random
        // bytes, which are not UTF-8: still a wrong key, not "not-a-key" (as in Python).
        continue;
      }
      if (this.#shapeOk(plaintext)) {
        if (k !== this.#legacyOrder[0]) this.#legacyOrder = [k, ...this.#legacyOrder.filter((o) => o !== k)];
        return { plaintext, keyFingerprint: k.fingerprint };
      }
      shapedWrong = true;
    }
    if (shapedWrong) {
      throw new DecryptError("not-a-key", "decrypted to text, but the text is not an API key of the expected shape");
    }
    throw new DecryptError("wrong-key", `no secret in the keyring (${this.#keys.length}) decrypts this ciphertext`);
  }

  #decryptV2(stored, userId) {
    const m = V2.exec(stored);
    if (!m) {
      throw new DecryptError("malformed", "not a v2 ciphertext: expected v2:<8 hex key id>:<24 hex nonce>:<hex ciphertext and tag>");
    }
    if (userId === undefined || userId === null) {
      throw new DecryptError("no-context", "a v2 ciphertext can only be decrypted with its row's user_id");
    }
    const k = this.#byId.get(m[1]);
    if (!k) throw new DecryptError("wrong-key", `no secret in the keyring has key id ${m[1]}`);
    const sealed = Buffer.from(m[3], "hex");
    let plaintext;
    try {
      const d = crypto.createDecipheriv("aes-256-gcm", k.key, Buffer.from(m[2], "hex"), { authTagLength: 16 });
      d.setAAD(aad(userId));
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      plaintext = UTF8.decode(Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]));
    } catch {
      // A bad tag, or bytes that are not UTF-8: both mean the value was altered.
      throw new DecryptError("tampered", "v2 ciphertext failed authentication: altered, or stored under another user_id");
    }
    if (!this.#shapeOk(plaintext)) {
      throw new DecryptError("not-a-key", "decrypted, but the result is not an API key of the expected shape");
    }
    return { plaintext, keyFingerprint: k.fingerprint };
  }
}

function createKeyring(options) {
  return new Keyring(options);
}

/** The keyring the environment describes; throws KeyringConfigError on a bad configuration. */
function keyringFromEnv(env = process.env, options = {}) {
  const secret = env[SECRET_ENV];
  if (secret === undefined) throw new KeyringConfigError(`${SECRET_ENV} is not set`);
  if (!secret) throw new KeyringConfigError(`${SECRET_ENV} is set but empty`);
  if (EDGE_SPACE.test(secret)) {
    // Read verbatim, a secret manager's copy of a file with its final newline would be another
    // key than the scripts' (they read the file without it): refused here as in Python.
    throw new KeyringConfigError(`${SECRET_ENV} ${EDGE_SPACE_FIX}`);
  }
  const raw = env[PREVIOUS_ENV];
  const previous = raw ? raw.split(",") : []; // unset or empty: no previous secret
  if (previous.some((p) => !p)) {
    throw new KeyringConfigError(`${PREVIOUS_ENV} has an empty entry; separate secrets with single commas`);
  }
  if (previous.some((p) => EDGE_SPACE.test(p))) {
    throw new KeyringConfigError(
      `${PREVIOUS_ENV} has an entry with leading or trailing whitespace; separate secrets with single commas and no spaces`);
  }
  return new Keyring({ ...options, secret, previous, format: parseFormat(env[FORMAT_ENV], FORMAT_ENV) });
}

// The drop-in functions read the environment on every call, like the backend's key(); the
// keyring is rebuilt only when the three variables change, so the legacy try-order persists.
let cached = null;

function defaultKeyring() {
  const env = process.env;
  const config = [env[SECRET_ENV], env[PREVIOUS_ENV], env[FORMAT_ENV]];
  if (!cached || cached.config.some((v, i) => v !== config[i])) {
    cached = { config, keyring: keyringFromEnv(env) };
  }
  return cached.keyring;
}

/** Drop-in for the backend's encryptSecret(text). Pass userId too once v2 may be written. */
function encryptSecret(plaintext, userId) {
  return defaultKeyring().encrypt(plaintext, userId);
}

/** Drop-in for the backend's decryptSecret(stored). Pass userId to read v2 values. */
function decryptSecret(stored, userId) {
  return defaultKeyring().decrypt(stored, userId);
}

module.exports = {
  encryptSecret,
  decryptSecret,
  createKeyring,
  keyringFromEnv,
  fingerprint,
  Keyring,
  DecryptError,
  KeyringConfigError,
  OPENROUTER_KEY,
  FORMATS,
  REASONS,
  SECRET_ENV,
  PREVIOUS_ENV,
  FORMAT_ENV,
};
