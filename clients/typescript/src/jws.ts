/**
 * Compact JWS verification with node:crypto, EdDSA (Ed25519) only. The header decides
 * nothing but which key: `alg` must be EdDSA (so `none`, HS256 with the public key as
 * the secret, RS/ES algorithms are refused before any key is touched), `kid` must name a
 * key of the given set, and jku/jwk/x5u/crit are refused so a token cannot bring its own key.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { TOKEN_ALG, type ResultCode } from './result_codes.js';

/** A JWK as a JWKS carries it (public members only are read). */
export interface Jwk {
  kty?: string;
  crv?: string;
  x?: string;
  kid?: string;
  alg?: string;
  use?: string;
  [member: string]: unknown;
}

export interface JwksDocument {
  keys: Jwk[];
}

/** A token longer than this is refused unread (the server's bound too). */
export const MAX_TOKEN_LENGTH = 16 * 1024;
const KID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
const B64URL = /^[A-Za-z0-9_-]*$/;

/** True for an Ed25519 public JWK usable for signatures (no private member `d`). */
export function isEd25519Jwk(k: unknown): k is Jwk & { kid: string; x: string } {
  if (k === null || typeof k !== 'object') return false;
  const j = k as Jwk;
  return (
    j.kty === 'OKP' &&
    j.crv === 'Ed25519' &&
    typeof j.x === 'string' &&
    B64URL.test(j.x) &&
    Buffer.from(j.x, 'base64url').length === 32 &&
    typeof j.kid === 'string' &&
    KID_PATTERN.test(j.kid) &&
    j.d === undefined &&
    (j.alg === undefined || j.alg === TOKEN_ALG) &&
    (j.use === undefined || j.use === 'sig')
  );
}

/** Verification keys by kid: only the Ed25519 public keys of `jwks` (others are ignored). */
export function keysOf(jwks: JwksDocument): Map<string, KeyObject> {
  const out = new Map<string, KeyObject>();
  for (const k of Array.isArray(jwks?.keys) ? jwks.keys : []) {
    if (!isEd25519Jwk(k) || out.has(k.kid)) continue;
    out.set(k.kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: k.x }, format: 'jwk' }));
  }
  return out;
}

function decodeJson(segment: string): Record<string, unknown> | null {
  if (!B64URL.test(segment) || segment.length === 0) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export type JwsResult =
  | { ok: true; kid: string; header: Record<string, unknown>; payload: Record<string, unknown> }
  | { ok: false; code: ResultCode; message: string };

/** Verifies a compact JWS against `keys`; on success answers its JSON payload. */
export function verifyCompactJws(token: unknown, keys: ReadonlyMap<string, KeyObject>): JwsResult {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return { ok: false, code: 'MALFORMED', message: 'not a compact JWS' };
  const parts = token.split('.');
  if (parts.length !== 3 || parts[2]!.length === 0 || !B64URL.test(parts[2]!)) return { ok: false, code: 'MALFORMED', message: 'not a compact JWS' };
  const header = decodeJson(parts[0]!);
  const payload = decodeJson(parts[1]!);
  if (!header || !payload) return { ok: false, code: 'MALFORMED', message: 'header or payload is not a JSON object' };
  if (header.alg !== TOKEN_ALG) return { ok: false, code: 'SIGNATURE_INVALID', message: `algorithm ${JSON.stringify(header.alg)} is not accepted` };
  if (header.crit !== undefined || header.jku !== undefined || header.jwk !== undefined || header.x5u !== undefined || header.x5c !== undefined) {
    return { ok: false, code: 'SIGNATURE_INVALID', message: 'header parameters jku/jwk/x5u/x5c/crit are not accepted' };
  }
  const kid = header.kid;
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) return { ok: false, code: 'UNKNOWN_KEY', message: 'missing or invalid kid' };
  const key = keys.get(kid);
  if (!key) return { ok: false, code: 'UNKNOWN_KEY', message: `unknown or retired key ${kid}` };
  const signature = Buffer.from(parts[2]!, 'base64url');
  let good = false;
  try {
    good = signature.length === 64 && cryptoVerify(null, Buffer.from(`${parts[0]}.${parts[1]}`, 'ascii'), key, signature);
  } catch {
    good = false;
  }
  if (!good) return { ok: false, code: 'SIGNATURE_INVALID', message: 'signature does not verify' };
  return { ok: true, kid, header, payload };
}
