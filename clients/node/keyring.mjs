// ES-module entry point: `import { encryptSecret, decryptSecret } from "./keyring.mjs"`.
// The implementation is the CommonJS keyring.js (package.json here pins "type": "commonjs"),
// so `require` and `import` share one module instance and one configuration cache.
import keyring from "./keyring.js";

export const {
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
} = keyring;
export default keyring;
