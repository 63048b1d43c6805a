/**
 * Minting and checking Aegis tokens. Signing always uses the keystore's active key;
 * verification accepts any non-retired key and nothing but EdDSA, decided from our own
 * allow-list (no `alg: none`, no HS256 made with a public key, no key picked by an
 * attacker-supplied `jku`/`jwk`, no `crit` or `b64`, `typ` JWT), then checks the
 * Ed25519 signature over the JWS signing input with node:crypto directly: one one-shot
 * verify against the kid's cached KeyObject (jose's WebCrypto path cost about twice that).
 */
import { randomUUID, verify as verifySignature } from 'node:crypto';
import {
  AUD_CA_CERTIFICATE,
  AUD_KERNEL,
  CA_SIGNATURE_TYP,
  certificateThumbprint,
  type CaCertificateClaims,
  AUD_LICENSE,
  TOKEN_ALG,
  TOKEN_ISSUER,
  featureMask,
  type Feature,
  type KernelClaims,
  type LicenseClaims,
  type ModuleLicenseClaims,
  type Tier,
  type ValidationCode,
} from '../../protocol/src/index.js';
import { KID_PATTERN } from './keys/keystore.js';
import { signJwt } from './keys/jws_sign.js';
import type { Keyring } from './keys/keyring.js';

const MAX_TOKEN_LENGTH = 16 * 1024;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** An Ed25519 signature: 64 bytes, 86 base64url characters unpadded. */
const ED25519_SIGNATURE_CHARS = 86;

export interface KernelTokenInput {
  sub: string;
  hwid: string;
  tier: Tier;
  features: Feature[];
  /** `fmask` bits beyond the features' own: entitlements mapped to kernel bits. */
  extraMask?: number;
  /** Seconds since the epoch. */
  iat: number;
  nbf?: number;
  exp: number;
  /** Overrides for tests that need a token of the wrong audience. */
  aud?: string;
}

export type DecodedToken = {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
};

export type VerifyResult =
  | { ok: true; kid: string; header: Record<string, unknown>; payload: Record<string, unknown> }
  | { ok: false; code: ValidationCode; message: string };

function decodeSegment(seg: string): Record<string, unknown> | null {
  if (!BASE64URL.test(seg)) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Splits a compact JWS and decodes header and payload without verifying anything. */
export function decodeCompact(token: unknown): DecodedToken | null {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return null;
  const parts = token.split('.');
  if (parts.length !== 3 || parts[2]!.length === 0) return null;
  const header = decodeSegment(parts[0]!);
  const payload = decodeSegment(parts[1]!);
  if (!header || !payload) return null;
  return { header, payload };
}

export class TokenService {
  constructor(private readonly keys: Keyring) {}

  private async sign(payload: Record<string, unknown>): Promise<string> {
    return signJwt(this.keys.signingKey(), { typ: 'JWT' }, payload);
  }

  /**
   * Signs the CA certificate handed out with client certificates: its SHA-256 thumbprint
   * under audience `aegis-ca`, so an agent that pins the server's keys can tell the
   * server's CA from one a middlebox put in the answer.
   */
  async signCaCertificate(caPem: string, trustDomain: string): Promise<string> {
    const key = this.keys.signingKey();
    const claims: CaCertificateClaims = {
      aud: AUD_CA_CERTIFICATE,
      iss: TOKEN_ISSUER,
      iat: Math.floor(Date.now() / 1000),
      'x5t#S256': certificateThumbprint(caPem),
      trust_domain: trustDomain,
    };
    return signJwt(key, { typ: CA_SIGNATURE_TYP }, { ...claims });
  }

  /** Signs a message for hosts (snapshot messages, fleet licenses) with the active key. */
  signMessage(payload: Record<string, unknown>): Promise<string> {
    return this.sign(payload);
  }

  async signLicense(claims: Omit<LicenseClaims, 'iss' | 'aud' | 'jti'> & { jti?: string }): Promise<string> {
    const payload: Record<string, unknown> = { iss: TOKEN_ISSUER, aud: AUD_LICENSE, jti: claims.jti ?? randomUUID(), ...claims };
    if (payload.exp === undefined || payload.exp === null) delete payload.exp;
    return this.sign(payload);
  }

  /**
   * Signs a module license's token with key `kid` when that key may still sign (not
   * retired), else with the active key; answers the token and the kid that signed it.
   * Ed25519 signatures are deterministic, so the same claims and key give the same token.
   */
  async signModuleLicense(claims: ModuleLicenseClaims, kid: string | null): Promise<{ token: string; kid: string }> {
    const key = (kid !== null ? this.keys.verifyingSigningKeys().find((k) => k.kid === kid) : undefined) ?? this.keys.signingKey();
    const token = signJwt(key, { typ: 'JWT' }, { ...claims });
    return { token, kid: key.kid };
  }

  /** The kernel entitlement token: flat claims, read by kmod/'s bounded parser. */
  async signKernel(input: KernelTokenInput): Promise<string> {
    const claims: KernelClaims = {
      iss: TOKEN_ISSUER,
      aud: (input.aud ?? AUD_KERNEL) as typeof AUD_KERNEL,
      sub: input.sub,
      hwid: input.hwid,
      tier: input.tier,
      features: input.features,
      fmask: (featureMask(input.features) | (input.extraMask ?? 0)) >>> 0,
      iat: input.iat,
      nbf: input.nbf ?? input.iat,
      exp: input.exp,
    };
    return this.sign({ ...claims });
  }

  /**
   * Checks structure, algorithm, kid and signature. Claim checks (exp, aud, hwid...)
   * are the caller's, since each token kind has its own.
   */
  async verify(token: unknown): Promise<VerifyResult> {
    const decoded = decodeCompact(token);
    if (!decoded) return { ok: false, code: 'MALFORMED', message: 'not a compact JWS' };
    const { header } = decoded;
    if (header.alg !== TOKEN_ALG) {
      return { ok: false, code: 'SIGNATURE_INVALID', message: `algorithm ${JSON.stringify(header.alg)} is not accepted` };
    }
    if (header.crit !== undefined || header.jku !== undefined || header.jwk !== undefined || header.x5u !== undefined || header.b64 !== undefined) {
      return { ok: false, code: 'SIGNATURE_INVALID', message: 'header parameters jku/jwk/x5u/crit/b64 are not accepted' };
    }
    if (header.typ !== undefined && header.typ !== 'JWT') {
      return { ok: false, code: 'SIGNATURE_INVALID', message: `token type ${JSON.stringify(header.typ)} is not accepted` };
    }
    const kid = header.kid;
    if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) return { ok: false, code: 'UNKNOWN_KEY', message: 'missing or invalid kid' };
    let key = this.keys.verificationKey(kid);
    if (!key && this.keys.refreshForUnknownKid) {
      await this.keys.refreshForUnknownKid(kid); // another replica may have rotated since the last poll
      key = this.keys.verificationKey(kid);
    }
    if (!key) return { ok: false, code: 'UNKNOWN_KEY', message: `unknown or retired key ${kid}` };
    const t = token as string;
    const dot = t.lastIndexOf('.');
    const sig = t.slice(dot + 1);
    // The signing input is the first two segments as sent (ASCII): nothing re-encoded.
    if (sig.length !== ED25519_SIGNATURE_CHARS || !BASE64URL.test(sig) || !verifySignature(null, Buffer.from(t.slice(0, dot), 'latin1'), key, Buffer.from(sig, 'base64url'))) {
      return { ok: false, code: 'SIGNATURE_INVALID', message: 'signature does not verify' };
    }
    return { ok: true, kid, header, payload: decoded.payload };
  }
}
