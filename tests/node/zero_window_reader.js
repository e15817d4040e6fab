// The backend's point of view during a key rotation: read every row, again and again, and
// decrypt each one with the drop-in decryptSecret configured only by the environment
// (INTEGRATION_ENCRYPTION_SECRET, INTEGRATION_ENCRYPTION_SECRET_PREVIOUS), as the backend would.
// Each pass reads all rows in one statement (one MVCC snapshot) through psql, so no Node
// PostgreSQL driver is needed. One JSON line per pass on stdout:
//   {started, rows, changed, unreadable, wrong, problems: [{userId, reason}] (first few)}
// `started` is the pass's start time (ms since the epoch), so the test can wait for a pass that
// began while it held the rotation paused.
// `changed` counts rows whose ciphertext differs from the first pass: rotation progress.
// Stops after the first complete pass that begins once the stop file exists.
// Usage: node zero_window_reader.js <psql> <dsn> <expected.json> <stop file>
"use strict";

const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");
const { decryptSecret, DecryptError } = require(path.join(__dirname, "..", "..", "clients", "node", "keyring.js"));

const [psql, dsn, expectedFile, stopFile] = process.argv.slice(2);
const expected = JSON.parse(fs.readFileSync(expectedFile, "utf8")); // user_id -> plaintext key
const SQL = "SELECT user_id, encrypted_api_key FROM public.user_openrouter_integrations";
let first = null;

function pass() {
  const started = Date.now();
  const r = spawnSync(psql, ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", SQL], { encoding: "utf8", maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
  const rows = r.stdout.split("\n").filter(Boolean).map((line) => line.split("\t"));
  const out = { started, rows: rows.length, changed: 0, unreadable: 0, wrong: 0, problems: [] };
  const tokens = new Map();
  for (const [userId, token] of rows) {
    tokens.set(userId, token);
    if (first && first.get(userId) !== token) out.changed++;
    try {
      if (decryptSecret(token, userId) !== expected[userId]) {
        out.wrong++;
        if (out.problems.length < 5) out.problems.push({ userId, reason: "wrong plaintext" });
      }
    } catch (e) {
      if (!(e instanceof DecryptError)) throw e;
      out.unreadable++;
      if (out.problems.length < 5) out.problems.push({ userId, reason: e.reason });
    }
  }
  if (!first) first = tokens;
  process.stdout.write(JSON.stringify(out) + "\n");
}

for (;;) {
  const stopping = fs.existsSync(stopFile);
  pass();
  if (stopping) break;
}
