/**
 * The signed key set (`GET /.well-known/jwks.signed`): the server's JWKS with one compact
 * JWS per verifying key, each over the canonical JSON of `{ iat, jwks, seq }`. An agent
 * that pins its trust anchors adopts a new key only from a set signed by a key it already
 * trusts: this is how a key rotation reaches pinned agents without trusting whoever answers
 * the URL. `seq` is the keyring's generation (bumped by every generate, rotate and retire in
 * the key directory replicas share), so sets are ordered: an agent refuses a set older than
 * the newest it accepted, and a replayed one cannot bring back a retired key.
 */
import { X509Certificate, createHash } from 'node:crypto';
import type { JwksDocument } from './wire.js';

/** The protected header's typ: a signed key set is never mistaken for a token or a policy message. */
export const JWKS_SIGNATURE_TYP = 'aegis-jwks+jws';

/** What each signature covers. */
export interface SignedJwksPayload {
  jwks: JwksDocument;
  /** When the set was signed (seconds since the epoch). */
  iat: number;
  /** The keyring generation: higher is newer; never decreases for one key directory. */
  seq: number;
}

export interface SignedJwksDocument extends SignedJwksPayload {
  /** Compact JWS (EdDSA, typ JWKS_SIGNATURE_TYP, kid of the signing key) over signedJwksPayload(). */
  signatures: string[];
}

/** The bytes a signed key set's signatures cover: canonicalJson of `{ iat, jwks, seq }` only. */
export function signedJwksPayload(p: SignedJwksPayload): string {
  return canonicalJson({ iat: p.iat, jwks: p.jwks, seq: p.seq });
}

/** The verified payload of a signed key set, or why it is not one. */
export function parseSignedJwksPayload(text: string): SignedJwksPayload | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'payload is not JSON';
  }
  const o = v as Partial<SignedJwksPayload> | null;
  if (o === null || typeof o !== 'object') return 'payload is not an object';
  if (!o.jwks || !Array.isArray(o.jwks.keys)) return 'payload holds no jwks';
  if (typeof o.iat !== 'number' || !Number.isFinite(o.iat)) return 'payload holds no iat (a key set from before ordered sets)';
  if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 0) return 'payload holds no seq';
  return { jwks: o.jwks, iat: o.iat, seq: o.seq };
}

/** The protected header's typ of the server's signature over the CA it hands out. */
export const CA_SIGNATURE_TYP = 'aegis-ca+jws';
/** The audience of that signature: it passes as no other token. */
export const AUD_CA_CERTIFICATE = 'aegis-ca';

/** JSON with object members sorted by name and no whitespace: the same bytes on both sides. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** base64url SHA-256 of a PEM certificate's DER (the `x5t#S256` of RFC 8705); throws when it does not parse. */
export function certificateThumbprint(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('base64url');
}
