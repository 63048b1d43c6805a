/**
 * Offline verification of a module license token: signature (EdDSA, kid in the given
 * keys), audience, claims, time, module and host major version, in the order and with the
 * codes aegis-server's /validate uses. Revocation is known offline only as far as the
 * caller tells it (`revoked`); the server's answer (validate_online.ts) is authoritative.
 */
import type { KeyObject } from 'node:crypto';
import { LicenseClientError } from './errors.js';
import { keysOf, verifyCompactJws, type Jwk, type JwksDocument } from './jws.js';
import { AUD_MODULE_LICENSE, hostMajorOf, type ResultCode } from './result_codes.js';

/** Claims of a module license token (see the server's docs/architecture.md, "Module licenses"). */
export interface ModuleLicenseClaims {
  iss: string;
  aud: typeof AUD_MODULE_LICENSE;
  sub: string;
  jti: string;
  iat: number;
  /** Absent for a perpetual license. */
  exp?: number;
  license_id: string;
  license_type: string;
  customer: { id: string; name: string };
  module: { technical_name: string; allowed_major_versions: string[] };
  tier: string;
  features: string[];
  /** Operator-defined entitlements of the license, sorted (absent in tokens issued before them). */
  entitlements?: string[];
  /** A hardware fingerprint, when a token is bound to one (module tokens today are not). */
  hwid?: string;
  /** Grace after exp: until exp + grace_seconds the token verifies VALID_IN_GRACE. */
  grace_seconds?: number;
}

export interface VerifyOptions {
  /** The server's public keys: Ed25519 JWKs (with kid), e.g. from loadJwks(). */
  publicKeys?: Jwk[];
  jwks?: JwksDocument;
  /** The module the caller is; a token for another module is MODULE_MISMATCH. */
  moduleName?: string;
  /** The host product's version ("17", "17.0", "17.0.3"); its major must be allowed, else VERSION_NOT_ALLOWED. */
  version?: string;
  /** This host's fingerprint; checked when the token carries one (hwid), and then required. */
  fingerprint?: string;
  /** Current time in ms since the epoch (default Date.now()). */
  now?: number;
  /** License ids (or token jti) the caller knows to be revoked: REVOKED. */
  revoked?: RevocationList;
  /** Clock difference tolerated on iat and exp, seconds (default 30, the server's). */
  clockSkewSeconds?: number;
}

/** License ids and token ids known revoked (e.g. from an online REVOKED answer). */
export type RevocationList = ReadonlySet<string> | readonly string[];

export interface VerifyResult {
  ok: boolean;
  code: ResultCode;
  message: string;
  /** The verified claims; present once the signature verified. */
  claims?: ModuleLicenseClaims;
  /** With VALID_IN_GRACE: when the grace ends (ISO 8601); after it the token is EXPIRED. */
  grace_ends_at?: string;
}

export const DEFAULT_CLOCK_SKEW_SECONDS = 30;

const keyCache = new WeakMap<object, Map<string, KeyObject>>();
function keysFor(o: VerifyOptions): Map<string, KeyObject> {
  const source: object | undefined = o.jwks ?? o.publicKeys;
  if (!source) throw new LicenseClientError('BAD_OPTION', 'verifyLicenseToken needs publicKeys or jwks');
  let keys = keyCache.get(source);
  if (!keys) {
    keys = keysOf(o.jwks ?? { keys: o.publicKeys! });
    keyCache.set(source, keys);
  }
  if (keys.size === 0) throw new LicenseClientError('JWKS_NO_ED25519_KEYS', 'the given keys hold no Ed25519 public key');
  return keys;
}

const strings = (v: unknown): string[] | null => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : null);

/** Verifies a module license token offline; never throws for a bad token (only for unusable options). */
export function verifyLicenseToken(token: string, options: VerifyOptions): VerifyResult {
  const v = verifyCompactJws(token, keysFor(options));
  if (!v.ok) return { ok: false, code: v.code, message: v.message };
  const c = v.payload;
  const fail = (code: ResultCode, message: string): VerifyResult => ({ ok: false, code, message, claims: c as unknown as ModuleLicenseClaims });
  if (c.aud !== AUD_MODULE_LICENSE) return fail('WRONG_AUDIENCE', `token audience is ${JSON.stringify(c.aud)}, not ${AUD_MODULE_LICENSE}`);
  const module = c.module as { technical_name?: unknown; allowed_major_versions?: unknown } | undefined;
  const allowed = strings(module?.allowed_major_versions);
  if (typeof c.license_id !== 'string' || typeof c.iat !== 'number' || typeof module?.technical_name !== 'string' || allowed === null) {
    return fail('MALFORMED', 'module license claims are incomplete (license_id, iat, module.technical_name and module.allowed_major_versions are required)');
  }
  const skew = options.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS;
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  if (c.iat > now + skew || (typeof c.nbf === 'number' && c.nbf > now + skew)) return fail('NOT_YET_VALID', 'token is not valid yet');
  // Past exp, a token with a grace claim is in grace until exp + grace_seconds (no skew on that end).
  let graceEnd: number | null = null;
  if (typeof c.exp === 'number' && c.exp + skew <= now && typeof c.grace_seconds === 'number' && c.grace_seconds > 0 && now < c.exp + c.grace_seconds) {
    graceEnd = c.exp + c.grace_seconds;
  } else if (c.exp !== undefined && (typeof c.exp !== 'number' || c.exp + skew <= now)) {
    return fail('EXPIRED', `license token expired${typeof c.exp === 'number' ? ` at ${new Date(c.exp * 1000).toISOString()}` : ''}`);
  }
  if (options.revoked) {
    const r = options.revoked instanceof Set ? (options.revoked as ReadonlySet<string>) : new Set(options.revoked as readonly string[]);
    if (r.has(c.license_id) || (typeof c.jti === 'string' && r.has(c.jti))) return fail('REVOKED', 'license revoked');
  }
  const name = module.technical_name;
  if (options.moduleName !== undefined && options.moduleName !== name) return fail('MODULE_MISMATCH', `license is for module ${name}, not ${options.moduleName}`);
  if (options.version !== undefined && allowed.length > 0) {
    const major = hostMajorOf(options.version);
    if (major === null || !allowed.includes(major)) return fail('VERSION_NOT_ALLOWED', `version ${options.version} is not allowed (allowed majors: ${allowed.join(', ')})`);
  }
  if (typeof c.hwid === 'string' && options.fingerprint !== c.hwid) {
    return fail('HWID_MISMATCH', options.fingerprint === undefined ? 'license is bound to a host fingerprint and none was given' : 'license is bound to another host');
  }
  if (graceEnd !== null) {
    const grace_ends_at = new Date(graceEnd * 1000).toISOString();
    return { ok: true, code: 'VALID_IN_GRACE', message: `license expired; in its grace period until ${grace_ends_at}`, claims: c as unknown as ModuleLicenseClaims, grace_ends_at };
  }
  return { ok: true, code: 'VALID', message: 'license is valid', claims: c as unknown as ModuleLicenseClaims };
}
