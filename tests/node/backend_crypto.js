// The live backend's encryptSecret/decryptSecret, with Node's built-in crypto only:
// AES-256-CBC, PKCS7, random 16-byte IV, "iv_hex:ciphertext_hex", key = SHA-256(secret).
// Usage: INTEGRATION_ENCRYPTION_SECRET=... node backend_crypto.js encrypt|decrypt < lines
// (or require() it: clients/node's tests compare the keyring with it)
"use strict";
const crypto = require("crypto");

function key() {
  const secret = process.env.INTEGRATION_ENCRYPTION_SECRET;
  if (!secret) throw new Error("INTEGRATION_ENCRYPTION_SECRET is not set");
  return crypto.createHash("sha256").update(secret).digest();
}

function encryptSecret(text) {
  const iv = crypto.randomBytes(16);
  const cipher = crypto.createCipheriv("aes-256-cbc", key(), iv);
  const encrypted = Buffer.concat([cipher.update(text, "utf8"), cipher.final()]);
  return iv.toString("hex") + ":" + encrypted.toString("hex");
}

function decryptSecret(stored) {
  const [ivHex, dataHex] = stored.split(":");
  const decipher = crypto.createDecipheriv("aes-256-cbc", key(), Buffer.from(ivHex, "hex"));
  return Buffer.concat([decipher.update(Buffer.from(dataHex, "hex")), decipher.final()]).toString("utf8");
}

module.exports = { encryptSecret, decryptSecret };

if (require.main === module) {
  const mode = process.argv[2];
  const input = require("fs").readFileSync(0, "utf8");
  // One JSON string per line, so any unicode text (newlines included) survives the trip.
  const out = input.split("\n").filter((l) => l.length).map((line) => {
    const value = JSON.parse(line);
    return JSON.stringify(mode === "encrypt" ? encryptSecret(value) : decryptSecret(value));
  });
  process.stdout.write(out.join("\n") + "\n");
}
