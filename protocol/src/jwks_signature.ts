/**
 * The signed key set (`GET /.well-known/jwks.signed`): the server's JWKS with one compact
 * JWS per verifying key, each over the canonical JSON of that JWKS. An agent that pins its
 * trust anchors adopts a new key only from a set signed by a key it already trusts: this
 * is how a key rotation reaches pinned agents without trusting whoever answers the URL.
 */
import type { JwksDocument } from './wire.js';

/** The protected header's typ: a signed key set is never mistaken for a token or a policy message. */
export const JWKS_SIGNATURE_TYP = 'aegis-jwks+jws';

export interface SignedJwksDocument {
  jwks: JwksDocument;
  /** Compact JWS (EdDSA, typ JWKS_SIGNATURE_TYP, kid of the signing key) over canonicalJson(jwks). */
  signatures: string[];
}

/** JSON with object members sorted by name and no whitespace: the same bytes on both sides. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}
