/**
 * Compact JWS (EdDSA) made with a keyring's `SigningKey`, whose `sign` may run inside a
 * PKCS#11 token: jose signs only with a KeyObject or CryptoKey, so the server assembles
 * the three segments itself. The bytes are what jose's CompactSign/SignJWT produce for the
 * same header and payload (base64url of the JSON, in insertion order): Ed25519 is
 * deterministic, so a token signed here equals one jose signs with the same key
 * (test/keys/jws_sign.test.ts). Verification stays with jose.
 */
import { TOKEN_ALG } from '../../../protocol/src/index.js';
import type { SigningKey } from './keystore.js';

export interface JwsHeader {
  typ: string;
  [name: string]: unknown;
}

/** `header.payload.signature` over raw payload bytes; `alg` and `kid` come from the key. */
export function signCompactJws(key: SigningKey, header: JwsHeader, payload: Uint8Array): string {
  const protectedHeader = Buffer.from(JSON.stringify({ alg: TOKEN_ALG, ...header, kid: key.kid })).toString('base64url');
  const input = `${protectedHeader}.${Buffer.from(payload).toString('base64url')}`;
  return `${input}.${key.sign(Buffer.from(input, 'ascii')).toString('base64url')}`;
}

/** A JWT: the claims as the JSON payload. */
export function signJwt(key: SigningKey, header: JwsHeader, claims: Record<string, unknown>): string {
  return signCompactJws(key, header, Buffer.from(JSON.stringify(claims)));
}
