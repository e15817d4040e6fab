// Types for keyring.js (CommonJS) and keyring.mjs (ES module).

export type Format = "legacy" | "v2";
export type DecryptReason = "malformed" | "unknown-format" | "wrong-key" | "tampered" | "not-a-key" | "no-context";
/** What a decrypted value must look like: a RegExp (full match), a predicate, or null for any text. */
export type KeyShape = RegExp | ((value: string) => boolean) | null;

/** Every ciphertext that cannot be turned into a key. Never carries a secret or a plaintext. */
export declare class DecryptError extends Error {
  readonly name: "DecryptError";
  readonly reason: DecryptReason;
}

/** A configuration mistake: missing or empty secret, empty PREVIOUS entry, unknown format, v2 without user_id. */
export declare class KeyringConfigError extends Error {
  readonly name: "KeyringConfigError";
}

export interface KeyringOptions {
  /** The primary secret: encrypts and decrypts. */
  secret: string;
  /** Older secrets: decrypt only, tried after the primary. */
  previous?: readonly string[];
  /** What encrypt() writes; default "legacy". */
  format?: Format;
  /** Default: OpenRouter's key shape, sk-or-v1- and 64 lowercase hex digits. */
  keyShape?: KeyShape;
}

export declare class Keyring {
  constructor(options: KeyringOptions);
  readonly format: Format;
  readonly primaryFingerprint: string;
  readonly fingerprints: string[];
  /** v2 throws KeyringConfigError without userId; legacy ignores it. */
  encrypt(plaintext: string, userId?: string): string;
  /** Reads legacy and v2; v2 needs the row's userId. Throws DecryptError. */
  decrypt(stored: string, userId?: string): string;
  decryptWithKey(stored: string, userId?: string): { plaintext: string; keyFingerprint: string };
}

/** Drop-in for the backend's encryptSecret: configured by INTEGRATION_ENCRYPTION_SECRET(_PREVIOUS) and INTEGRATION_ENCRYPTION_FORMAT. */
export declare function encryptSecret(plaintext: string, userId?: string): string;
/** Drop-in for the backend's decryptSecret. Throws DecryptError for a bad value. */
export declare function decryptSecret(stored: string, userId?: string): string;
export declare function createKeyring(options: KeyringOptions): Keyring;
/** Throws KeyringConfigError on a missing or empty secret, a secret or PREVIOUS entry with
 *  whitespace at either end (a final newline included), or an unknown format. */
export declare function keyringFromEnv(env?: Record<string, string | undefined>, options?: Pick<KeyringOptions, "keyShape">): Keyring;
/** The 12-hex-digit public fingerprint of a secret, as printed by the bundle's scripts. */
export declare function fingerprint(secret: string): string;

export declare const OPENROUTER_KEY: RegExp;
export declare const FORMATS: readonly Format[];
export declare const REASONS: readonly DecryptReason[];
export declare const SECRET_ENV: "INTEGRATION_ENCRYPTION_SECRET";
export declare const PREVIOUS_ENV: "INTEGRATION_ENCRYPTION_SECRET_PREVIOUS";
export declare const FORMAT_ENV: "INTEGRATION_ENCRYPTION_FORMAT";
