/**
 * Host-key proofs, the client side: a compact JWS (EdDSA) signed by the host's own key,
 * payload `{aud, hwid, iat, jti}`. The server accepts each once, within a clock window.
 */
import { randomBytes, sign, type KeyObject } from 'node:crypto';
import { TOKEN_ALG } from './claims.js';

export function signHostProof(privateKey: KeyObject, claims: { aud: string; hwid: string; iat?: number; jti?: string; seq?: number }): string {
  const header = Buffer.from(JSON.stringify({ alg: TOKEN_ALG, typ: 'JWT' })).toString('base64url');
  const payload = Buffer.from(
    JSON.stringify({
      aud: claims.aud,
      hwid: claims.hwid,
      iat: claims.iat ?? Math.floor(Date.now() / 1000),
      jti: claims.jti ?? randomBytes(18).toString('base64url'),
      ...(claims.seq === undefined ? {} : { seq: claims.seq }),
    }),
  ).toString('base64url');
  const signature = sign(null, Buffer.from(`${header}.${payload}`), privateKey).toString('base64url');
  return `${header}.${payload}.${signature}`;
}
