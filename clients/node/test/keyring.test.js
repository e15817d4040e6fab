// node --test clients/node/ : the keyring on its own, and against the backend's current algorithm.
// Cross-language checks (Python <-> Node) live in tests/node/test_node_keyring.py.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const path = require("node:path");

const K = require("../keyring.js");
const backend = require(path.join(__dirname, "..", "..", "..", "tests", "node", "backend_crypto.js"));

const OLD = "old-secret-\u00e9-0001";
const NEW = "new-secret-0002";
const KEY = "sk-or-v1-" + "5f".repeat(32);
const USER = "6f1c1f4e-2a49-4c7e-9b8e-3f0b1f2a9c01";
const ENV_NAMES = [K.SECRET_ENV, K.PREVIOUS_ENV, K.FORMAT_ENV];

function withEnv(values, fn) {
  const saved = Object.fromEntries(ENV_NAMES.map((n) => [n, process.env[n]]));
  for (const n of ENV_NAMES) delete process.env[n];
  Object.assign(process.env, values);
  try {
    return fn();
  } finally {
    for (const n of ENV_NAMES) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  }
}

function reasonOf(fn) {
  try {
    fn();
  } catch (e) {
    if (e instanceof K.DecryptError) return e.reason;
    throw e;
  }
  return "ok";
}

function randomKey() {
  return "sk-or-v1-" + crypto.randomBytes(32).toString("hex");
}

test("single-secret configuration: the backend and the module read each other, byte-compatible format", () => {
  withEnv({ [K.SECRET_ENV]: OLD }, () => {
    const texts = [KEY, "", "a", "x".repeat(16), "\u00fcnic\u00f8de \u{1F511}", "line\nbreak", "\ufeffbom"];
    for (const t of texts) {
      const ours = K.encryptSecret(t);
      assert.match(ours, /^[0-9a-f]{32}:(?:[0-9a-f]{32})+$/);
      assert.equal(backend.decryptSecret(ours), t);
      if (t === KEY) assert.equal(K.decryptSecret(backend.encryptSecret(t)), t);
      assert.equal(K.createKeyring({ secret: OLD, keyShape: null }).decrypt(backend.encryptSecret(t)), t);
    }
    // Byte for byte: same IV, same key, same bytes.
    const iv = crypto.randomBytes(16);
    const c = crypto.createCipheriv("aes-256-cbc", crypto.createHash("sha256").update(OLD).digest(), iv);
    const expected = iv.toString("hex") + ":" + Buffer.concat([c.update(KEY, "utf8"), c.final()]).toString("hex");
    assert.equal(K.decryptSecret(expected), KEY);
  });
});

test("previous secrets decrypt, only the primary encrypts", () => {
  const oldToken = withEnv({ [K.SECRET_ENV]: OLD }, () => K.encryptSecret(KEY));
  withEnv({ [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: `unrelated,${OLD}` }, () => {
    assert.equal(K.decryptSecret(oldToken), KEY);
    const fresh = K.encryptSecret(KEY);
    assert.equal(K.createKeyring({ secret: NEW }).decrypt(fresh), KEY);
    assert.equal(reasonOf(() => K.createKeyring({ secret: OLD }).decrypt(fresh)) !== "ok", true);
    assert.equal(K.keyringFromEnv().decryptWithKey(oldToken).keyFingerprint, K.fingerprint(OLD));
  });
  withEnv({ [K.SECRET_ENV]: NEW }, () => assert.equal(reasonOf(() => K.decryptSecret(oldToken)), "wrong-key"));
});

test("configuration errors: missing or empty secret, empty PREVIOUS entries, unknown format", () => {
  const bad = [
    {},
    { [K.SECRET_ENV]: "" },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: "a,,b" },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: ",a" },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: "a," },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: "," },
    { [K.SECRET_ENV]: NEW, [K.FORMAT_ENV]: "V2" },
    // a space after the comma once became part of the next secret: "old1, old2" gave " old2"
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: `${OLD}, ${NEW}` },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: ` ${OLD}` },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: `${OLD}\n` },
    { [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: `${OLD}\ufeff` },
    // a file stored verbatim in a secret manager keeps its final newline: another key than the scripts'
    { [K.SECRET_ENV]: `${NEW}\n` },
    { [K.SECRET_ENV]: ` ${NEW}` },
    { [K.SECRET_ENV]: `${NEW}\r\n` },
    { [K.SECRET_ENV]: `\ufeff${NEW}` },
  ];
  for (const env of bad) {
    withEnv(env, () => assert.throws(() => K.decryptSecret("00"), K.KeyringConfigError, JSON.stringify(env)));
  }
  // Refused when the keyring is built from the environment, and the message holds no secret.
  withEnv({ [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: `${OLD}, ${NEW}` }, () => assert.throws(() => K.keyringFromEnv(),
    (e) => e instanceof K.KeyringConfigError && /whitespace/.test(e.message) && !e.message.includes(OLD)));
  withEnv({ [K.SECRET_ENV]: `${NEW}\n` }, () => assert.throws(() => K.keyringFromEnv(),
    (e) => e instanceof K.KeyringConfigError && /without a final newline/.test(e.message) && !e.message.includes(NEW)));
  // Set but empty PREVIOUS means none, as in Python; duplicates collapse to one key.
  withEnv({ [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: "" }, () => assert.deepEqual(K.keyringFromEnv().fingerprints, [K.fingerprint(NEW)]));
  withEnv({ [K.SECRET_ENV]: NEW, [K.PREVIOUS_ENV]: `${OLD},${NEW},${OLD}` }, () =>
    assert.deepEqual(K.keyringFromEnv().fingerprints, [K.fingerprint(NEW), K.fingerprint(OLD)]));
});

test("a wrong key whose padding happens to be valid never yields garbage", () => {
  const right = K.createKeyring({ secret: OLD });
  const wrongOnly = K.createKeyring({ secret: NEW });
  const both = K.createKeyring({ secret: NEW, previous: [OLD] });
  const wrongCbc = crypto.createHash("sha256").update(NEW).digest();
  let paddedWrong = 0;
  for (let i = 0; i < 6000 && paddedWrong < 10; i++) {
    const token = right.encrypt(KEY);
    const [iv, ct] = token.split(":").map((h) => Buffer.from(h, "hex"));
    const d = crypto.createDecipheriv("aes-256-cbc", wrongCbc, iv);
    d.setAutoPadding(false);
    const raw = Buffer.concat([d.update(ct), d.final()]);
    const n = raw[raw.length - 1];
    if (n < 1 || n > 16 || !raw.subarray(raw.length - n).every((b) => b === n)) continue;
    paddedWrong++; // the wrong key passes the padding check; its random bytes are not UTF-8
    assert.equal(reasonOf(() => wrongOnly.decrypt(token)), "wrong-key");
    assert.equal(both.decrypt(token), KEY); // NEW is tried first, passes padding, is rejected; OLD wins
  }
  assert.ok(paddedWrong >= 5, `only ${paddedWrong} tokens with valid padding under the wrong key`);
});

test("v2: the opt-in toggle, user_id binding, tampering, no context, unknown key", () => {
  withEnv({ [K.SECRET_ENV]: NEW, [K.FORMAT_ENV]: "v2" }, () => {
    assert.throws(() => K.encryptSecret(KEY), K.KeyringConfigError); // the 1-arg call cannot write v2
    const token = K.encryptSecret(KEY, USER);
    assert.match(token, /^v2:[0-9a-f]{8}:[0-9a-f]{24}:[0-9a-f]{32,}$/);
    assert.equal(K.decryptSecret(token, USER), KEY);
    assert.equal(K.decryptSecret(token, USER.toUpperCase()), KEY); // user_id is compared lowercased, as in Python
    assert.equal(reasonOf(() => K.decryptSecret(token)), "no-context");
    assert.equal(reasonOf(() => K.decryptSecret(token, "00000000-0000-0000-0000-000000000000")), "tampered");
    const [head, body] = [token.slice(0, token.lastIndexOf(":") + 1), token.slice(token.lastIndexOf(":") + 1)];
    for (let i = 0; i < body.length; i++) {
      const flipped = head + body.slice(0, i) + (body[i] === "0" ? "1" : "0") + body.slice(i + 1);
      assert.equal(reasonOf(() => K.decryptSecret(flipped, USER)), "tampered", `hex digit ${i}`);
    }
    const nonceFlipped = token.replace(/^(v2:[0-9a-f]{8}:)(.)/, (_, p, c) => p + (c === "0" ? "1" : "0"));
    assert.equal(reasonOf(() => K.decryptSecret(nonceFlipped, USER)), "tampered");
    assert.equal(reasonOf(() => K.createKeyring({ secret: OLD }).decrypt(token, USER)), "wrong-key");
    assert.equal(K.createKeyring({ secret: OLD, previous: [NEW] }).decrypt(token, USER), KEY);
    // Legacy is still read while v2 is written.
    assert.equal(K.decryptSecret(K.createKeyring({ secret: NEW }).encrypt(KEY)), KEY);
  });
  withEnv({ [K.SECRET_ENV]: NEW }, () => assert.match(K.encryptSecret(KEY, USER), /^[0-9a-f]{32}:/)); // legacy ignores user_id
});

test("only canonical tokens: uppercase hex and whitespace are malformed; other versions are unknown-format", () => {
  const ring = K.createKeyring({ secret: NEW });
  const legacy = ring.encrypt(KEY);
  const v2 = K.createKeyring({ secret: NEW, format: "v2" }).encrypt(KEY, USER);
  const cases = [
    [legacy.toUpperCase(), "malformed"],
    [` ${legacy}`, "malformed"],
    [`${legacy}\n`, "malformed"],
    [legacy.replace(":", ": "), "malformed"],
    [v2.replace(/:([0-9a-f]+)$/, (_, h) => ":" + h.toUpperCase()), "malformed"],
    [v2.slice(0, 20) + "\t" + v2.slice(20), "malformed"],
    [`${v2}\n`, "malformed"],
    [v2 + "0", "malformed"], // odd number of hex digits
    ["", "malformed"],
    ["zz:yy", "malformed"],
    ["v9:abc", "unknown-format"],
    ["v\u0663:abc", "unknown-format"], // any Unicode digit, like Python's \d
    ["v2:abc", "malformed"],
  ];
  for (const [token, reason] of cases) assert.equal(reasonOf(() => ring.decrypt(token, USER)), reason, JSON.stringify(token));
  for (const notText of [null, undefined, 42, Buffer.from(legacy)]) assert.equal(reasonOf(() => ring.decrypt(notText)), "malformed");
});

test("errors never carry a secret, a key or a plaintext", () => {
  const secret = "TOP-SECRET-" + crypto.randomBytes(8).toString("hex");
  const ring = K.createKeyring({ secret, format: "v2" });
  const token = ring.encrypt(KEY, USER);
  const other = K.createKeyring({ secret: "x", keyShape: /nothing/ });
  const attempts = [
    () => ring.decrypt(token),
    () => ring.decrypt(token, "someone-else"),
    () => other.decrypt(token, USER),
    () => K.createKeyring({ secret, keyShape: /nothing/ }).decrypt(token, USER),
    () => K.createKeyring({ secret, keyShape: /nothing/ }).decrypt(K.createKeyring({ secret }).encrypt(KEY)),
    () => other.decrypt(K.createKeyring({ secret }).encrypt(KEY)),
    () => K.keyringFromEnv({ [K.SECRET_ENV]: secret, [K.PREVIOUS_ENV]: `${secret},` }),
    () => K.keyringFromEnv({ [K.SECRET_ENV]: secret, [K.FORMAT_ENV]: secret }),
  ];
  const keyHex = crypto.createHash("sha256").update(secret).digest("hex");
  for (const attempt of attempts) {
    let err = null;
    try {
      attempt();
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof Error, String(attempt));
    const shown = `${err.message} ${err.stack} ${JSON.stringify(err)}`;
    for (const hidden of [secret, KEY, keyHex]) assert.ok(!shown.includes(hidden), shown);
  }
});

test("a keyring logged or serialized shows no secret and no key", () => {
  // A backend may log a keyring (console.log, a structured logger's serializer) or keep one on an
  // object that is logged: the derived AES keys are as good as the secrets.
  const util = require("node:util");
  const secrets = ["TOP-SECRET-" + crypto.randomBytes(8).toString("hex"), "OLD-SECRET-" + crypto.randomBytes(8).toString("hex")];
  const ring = K.createKeyring({ secret: secrets[0], previous: [secrets[1]] });
  ring.decrypt(K.createKeyring({ secret: secrets[1] }).encrypt(KEY)); // the try order has changed too
  const keys = secrets.map((s) => crypto.createHash("sha256").update(s).digest());
  const shown = [
    util.inspect(ring, { depth: Infinity, showHidden: true }),
    util.inspect({ holder: { ring } }, { depth: Infinity }),
    JSON.stringify(ring),
    JSON.stringify({ ring }),
    String(ring),
    Object.keys(ring).join(" "),
    Object.getOwnPropertyNames(ring).map((n) => util.inspect(ring[n], { depth: Infinity, showHidden: true })).join(" "),
  ].join("\n");
  for (const key of keys) {
    assert.ok(!shown.includes(key.toString("hex")), shown);
    assert.ok(!shown.includes(util.inspect(key)), shown);
    assert.ok(!shown.includes(JSON.stringify(key)) && !shown.includes(key.join(",")), shown);
  }
  for (const s of secrets) assert.ok(!shown.includes(s), shown);
  assert.ok(shown.includes(ring.primaryFingerprint) || shown.includes("Keyring"), shown); // still says what it is
});

test("plaintext that has no UTF-8 encoding is refused instead of silently altered", () => {
  const ring = K.createKeyring({ secret: NEW, keyShape: null });
  assert.throws(() => ring.encrypt("sk-\ud800"), TypeError);
  assert.throws(() => ring.encrypt(42), TypeError);
  assert.equal(ring.decrypt(ring.encrypt("\u{1F511}")), "\u{1F511}");
});

test("key shape: RegExp is a full match, a predicate or null are accepted", () => {
  const token = K.createKeyring({ secret: NEW }).encrypt("anthropic-key-123");
  assert.equal(reasonOf(() => K.createKeyring({ secret: NEW }).decrypt(token)), "not-a-key");
  assert.equal(reasonOf(() => K.createKeyring({ secret: NEW, keyShape: /anthropic/ }).decrypt(token)), "not-a-key");
  assert.equal(K.createKeyring({ secret: NEW, keyShape: /anthropic-key-\d+/ }).decrypt(token), "anthropic-key-123");
  assert.equal(K.createKeyring({ secret: NEW, keyShape: /a|anthropic-key-123/g }).decrypt(token), "anthropic-key-123");
  assert.equal(K.createKeyring({ secret: NEW, keyShape: (s) => s.startsWith("anthropic") }).decrypt(token), "anthropic-key-123");
  assert.equal(K.createKeyring({ secret: NEW, keyShape: null }).decrypt(token), "anthropic-key-123");
});

test("the ES-module entry point is the same module", async () => {
  const esm = await import("../keyring.mjs");
  assert.equal(esm.encryptSecret, K.encryptSecret);
  assert.equal(esm.DecryptError, K.DecryptError);
  assert.equal(esm.default, K);
});
