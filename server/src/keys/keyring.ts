/**
 * The one keyring interface the server uses. Two implementations:
 * - `KeyStore` (keystore.ts): PEM files in a key directory (the default, with SQLite);
 * - `DbKeyring` (db_keyring.ts): rows in the database, each private key sealed with
 *   AES-256-GCM under the key-encryption key of AEGIS_KEK_FILE, shared by every replica;
 * - the same `DbKeyring` over a PKCS#11 token (pkcs11_keyring.ts, AEGIS_PKCS11_*): the
 *   private keys stay in the token and sign there; the rows hold the metadata.
 * Reads (signing, verification, JWKS) are synchronous and served from memory; the
 * changes (generate, rotate, retire) may be asynchronous.
 */
import type { KeyObject } from 'node:crypto';
import type { Ed25519PublicJwk } from '../../../protocol/src/index.js';
import type { KeyInfo, SigningKey } from './keystore.js';

export interface Jwks {
  keys: Array<Ed25519PublicJwk & { kid: string; alg: 'EdDSA'; use: 'sig' }>;
}

/**
 * Secrets besides the signing keys (the NATS operator/account seeds, the PKI's CA key),
 * sealed like them (under the KEK, or by the token's AES key). Only the database keyring has one; the key directory keeps those in
 * files next to the keys, as before.
 */
export interface SecretStore {
  /** The secret and its public companion (e.g. the CA certificate), or null when absent. */
  get(kind: string, name: string): Promise<{ secret: Buffer; public: string | null } | null>;
  /** Stores the secret unless one exists; returns the stored one (the first writer wins). */
  putIfAbsent(kind: string, name: string, secret: Buffer, pub: string | null): Promise<{ secret: Buffer; public: string | null }>;
  /** Replaces (or stores) the secret. */
  put(kind: string, name: string, secret: Buffer, pub: string | null): Promise<void>;
}

export interface Keyring {
  /** Where the keys are, safe to log. */
  readonly description: string;
  /** Sealed secrets in the same store, or null (key directory: files). */
  readonly secrets: SecretStore | null;
  generation(): number;
  kids(): string[];
  activeKid(): string | null;
  isRetired(kid: string): boolean;
  info(kid: string): KeyInfo;
  list(): KeyInfo[];
  verificationKey(kid: string): KeyObject | null;
  /** Asked before refusing a kid not known here (a shared keyring re-reads; cheap, rate-limited). */
  refreshForUnknownKid?(kid: string): Promise<void>;
  signingKey(): SigningKey;
  verifyingSigningKeys(): SigningKey[];
  jwks(): Jwks;
  generate(kid?: string): KeyInfo | Promise<KeyInfo>;
  rotate(kid?: string): KeyInfo | Promise<KeyInfo>;
  retire(kid: string): KeyInfo | Promise<KeyInfo>;
  /** Stops background refresh, if any. */
  close(): void;
}
