// Drives clients/node/keyring.js for the Python tests: one JSON request per stdin line, one
// JSON answer per stdout line, so hypothesis can run thousands of examples through one process.
//   {op: "encrypt", secret, previous, format, userId, value}            -> {ok: token}
//   {op: "decrypt", secret, previous, userId, value, shape}            -> {ok: plaintext, fp} | {reason}
//   {op: "sequence", secret, previous, shape, items: [{value, userId}]} -> {results: [...]}  (one keyring)
//   {op: "env", env}                                                  -> {fingerprints, format} | {config: true}
// shape: "openrouter" (default), "any", or {pattern: "<regex source>"}.
"use strict";

const path = require("path");
const readline = require("readline");
const K = require(path.join(__dirname, "..", "..", "clients", "node", "keyring.js"));

function shapeOf(shape) {
  if (shape === "any") return null;
  if (shape && shape.pattern !== undefined) return new RegExp(shape.pattern, "u");
  return K.OPENROUTER_KEY;
}

function ring(req) {
  return K.createKeyring({ secret: req.secret, previous: req.previous || [], format: req.format || "legacy", keyShape: shapeOf(req.shape) });
}

function decrypt(keyring, value, userId) {
  try {
    const { plaintext, keyFingerprint } = keyring.decryptWithKey(value, userId === null ? undefined : userId);
    return { ok: plaintext, fp: keyFingerprint };
  } catch (e) {
    if (e instanceof K.DecryptError) return { reason: e.reason };
    throw e;
  }
}

function handle(req) {
  switch (req.op) {
    case "encrypt":
      return { ok: ring(req).encrypt(req.value, req.userId === null ? undefined : req.userId) };
    case "decrypt":
      return decrypt(ring(req), req.value, req.userId);
    case "sequence": {
      const keyring = ring(req);
      return { results: req.items.map((it) => decrypt(keyring, it.value, it.userId)) };
    }
    case "env":
      try {
        const keyring = K.keyringFromEnv(req.env);
        return { fingerprints: keyring.fingerprints, format: keyring.format };
      } catch (e) {
        if (e instanceof K.KeyringConfigError) return { config: true };
        throw e;
      }
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on("line", (line) => {
  let answer;
  try {
    answer = handle(JSON.parse(line));
  } catch (e) {
    answer = { crash: `${e.name}: ${e.message}` };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
