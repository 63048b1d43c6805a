/**
 * Ed25519 key helpers that agent and server share: JWK thumbprints (RFC 7638) and the
 * raw public key form the kernel module takes as a parameter.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';

export interface Ed25519PublicJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid?: string;
  alg?: string;
  use?: string;
}

export function isEd25519PublicJwk(v: unknown): v is Ed25519PublicJwk {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  return (
    o.kty === 'OKP' &&
    o.crv === 'Ed25519' &&
    typeof o.x === 'string' &&
    /^[A-Za-z0-9_-]{43}$/.test(o.x) &&
    o.d === undefined // a private key is never accepted where a public one is expected
  );
}

/** RFC 7638 thumbprint of an Ed25519 public JWK (base64url SHA-256 of the canonical members). */
export function jwkThumbprint(jwk: Ed25519PublicJwk): string {
  const canonical = `{"crv":"Ed25519","kty":"OKP","x":"${jwk.x}"}`;
  return createHash('sha256').update(canonical).digest('base64url');
}

export function publicJwkOf(key: KeyObject): Ed25519PublicJwk {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' }) as { kty?: string; crv?: string; x?: string };
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
    throw new Error('not an Ed25519 key');
  }
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x };
}
