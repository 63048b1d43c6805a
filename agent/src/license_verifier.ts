/**
 * Offline verification of the cached license token: signature against the cached JWKS
 * (EdDSA only), audience, expiry, hardware binding, host-key binding (cnf.jkt) and the
 * agent's major version. Needs no network; runs at every start. Every token the server
 * issues has an `exp` (perpetual licenses included, where it is the token's end, not
 * the license's); a token without one is still accepted from older servers.
 */
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet } from 'jose';
import { AUD_LICENSE, TOKEN_ALG, type LicenseClaims } from '../../protocol/src/index.js';

export type OfflineVerdict =
  /** `graceEndsAt`: past exp but within the token's grace claim (exp + grace_seconds). */
  | { ok: true; claims: LicenseClaims; graceEndsAt?: Date }
  | { ok: false; code: 'MALFORMED' | 'SIGNATURE_INVALID' | 'UNKNOWN_KEY' | 'EXPIRED' | 'HWID_MISMATCH' | 'HOST_KEY_MISMATCH' | 'VERSION_MISMATCH' | 'WRONG_AUDIENCE'; message: string };

export interface Expectations {
  hardwareId: string;
  hostKeyThumbprint: string;
  agentVersion: string;
  now?: Date;
}

export async function verifyLicenseOffline(token: string, jwks: JSONWebKeySet, want: Expectations): Promise<OfflineVerdict> {
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    return { ok: false, code: 'MALFORMED', message: 'license token is not a JWS' };
  }
  if (header.alg !== TOKEN_ALG) return { ok: false, code: 'SIGNATURE_INVALID', message: `algorithm ${String(header.alg)} not accepted` };
  if (typeof header.kid !== 'string' || !jwks.keys.some((k) => k.kid === header.kid)) {
    return { ok: false, code: 'UNKNOWN_KEY', message: `no cached public key for kid ${String(header.kid)}` };
  }
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(token, createLocalJWKSet(jwks), { algorithms: [TOKEN_ALG] }));
  } catch (e) {
    return { ok: false, code: 'SIGNATURE_INVALID', message: `license signature does not verify (${(e as Error).message})` };
  }
  let c: LicenseClaims;
  try {
    c = JSON.parse(Buffer.from(payload).toString('utf8')) as LicenseClaims;
  } catch {
    return { ok: false, code: 'MALFORMED', message: 'license claims are not JSON' };
  }
  if (c.aud !== AUD_LICENSE) return { ok: false, code: 'WRONG_AUDIENCE', message: 'not a license token' };
  const now = Math.floor((want.now ?? new Date()).getTime() / 1000);
  let graceEndsAt: Date | undefined;
  if (typeof c.exp === 'number' && c.exp <= now && typeof c.grace_seconds === 'number' && c.grace_seconds > 0 && now < c.exp + c.grace_seconds) {
    // Expired, within the license's grace period: still licensed until the grace ends.
    graceEndsAt = new Date((c.exp + c.grace_seconds) * 1000);
  } else if (c.exp !== undefined && (typeof c.exp !== 'number' || c.exp <= now)) {
    const at = typeof c.exp === 'number' ? new Date(c.exp * 1000).toISOString() : String(c.exp);
    // A perpetual license's token ends too (it bounds how long a host runs offline on
    // it): that token needs a refresh from the server, the license is not over.
    const message = c.license_type === 'perpetual' ? `license token expired at ${at}; the license is perpetual and needs a refresh from the server` : `license expired at ${at}`;
    return { ok: false, code: 'EXPIRED', message };
  }
  if (c.hwid !== want.hardwareId) return { ok: false, code: 'HWID_MISMATCH', message: 'license is bound to other hardware' };
  if (c.cnf?.jkt !== want.hostKeyThumbprint) return { ok: false, code: 'HOST_KEY_MISMATCH', message: 'license is bound to another host key' };
  const allowed = c.product?.allowed_major_versions ?? [];
  const major = /^(\d+)/.exec(want.agentVersion)?.[1];
  if (allowed.length > 0 && (major === undefined || !allowed.includes(String(Number(major))))) {
    return { ok: false, code: 'VERSION_MISMATCH', message: `agent ${want.agentVersion} not allowed (majors ${allowed.join(', ')})` };
  }
  return graceEndsAt ? { ok: true, claims: c, graceEndsAt } : { ok: true, claims: c };
}

/** Decodes a compact JWS without verifying (for display). */
export function decodeUnverified(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    return {
      header: JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>,
      claims: JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>,
    };
  } catch {
    return null;
  }
}
