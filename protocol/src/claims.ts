/**
 * Token contracts. All tokens are compact JWS,
 * `alg: EdDSA` (Ed25519) with a `kid` that names a key in the server's JWKS.
 */
import type { Feature, Tier } from './tiers.js';

export const TOKEN_ALG = 'EdDSA';
export const TOKEN_ISSUER = 'aegis-server';

/** Audiences: one per token kind, so a token minted for one purpose never passes as another. */
export const AUD_LICENSE = 'aegis-license';
export const AUD_KERNEL = 'aegis-kmod';
export const AUD_ACTIVATION_PROOF = 'aegis-activation';
export const AUD_REFRESH_PROOF = 'aegis-refresh';
export const AUD_DEACTIVATION_PROOF = 'aegis-deactivation';
export const AUD_SNAPSHOTS_PROOF = 'aegis-snapshots';
/** A machine's heartbeat: a host proof that also carries a strictly increasing `seq`. */
export const AUD_HEARTBEAT_PROOF = 'aegis-heartbeat';

/** Proof iat must be within this many seconds of the server's clock. */
export const PROOF_MAX_SKEW_SECONDS = 300;

export const LICENSE_TYPES = ['perpetual', 'subscription', 'demo'] as const;
export type LicenseType = (typeof LICENSE_TYPES)[number];

export const DEFAULT_KERNEL_TOKEN_TTL_SECONDS = 60 * 60;
/**
 * Default lifetime of a machine-bound license token, perpetual licenses included: how
 * long a host may run offline on one token (agents refresh it far sooner, with the kernel
 * token).
 */
export const DEFAULT_LICENSE_TOKEN_TTL_SECONDS = 30 * 86_400;

/** Claims of the license token the agent caches and verifies offline. */
export interface LicenseClaims {
  iss: string;
  aud: typeof AUD_LICENSE;
  sub: string; // machine id
  jti: string;
  iat: number;
  exp?: number; // the token's end: at most the license's expiry, bounded for perpetual licenses too
  license_id: string;
  license_type: LicenseType;
  customer: { id: string; name: string };
  product: { name: string; allowed_major_versions: string[] };
  tier: Tier;
  features: Feature[];
  /** Operator-defined entitlements of the license (entitlements.ts), sorted. */
  entitlements: string[];
  hwid: string;
  cnf: { jkt: string };
  /**
   * Grace after `exp` (the license's expiry, or the token's end when the host lost
   * contact): until `exp + grace_seconds` a verifier answers VALID_IN_GRACE. Absent: none.
   */
  grace_seconds?: number;
  /** Seconds between the heartbeats the license requires of this machine; absent: none required. */
  heartbeat_interval_seconds?: number;
  /** A floating license's lease: the seat lapses unless renewed within this many seconds. */
  lease_ttl_seconds?: number;
}

/**
 * Claims of the kernel entitlement token. Deliberately flat (strings, integers and one
 * array of strings) so the kernel module's bounded reader never has to recurse.
 */
export interface KernelClaims {
  iss: string;
  aud: typeof AUD_KERNEL;
  sub: string;
  hwid: string;
  tier: Tier;
  features: Feature[];
  fmask: number;
  iat: number;
  nbf: number;
  exp: number;
}

/** Payload of the proofs a host signs with its own key (activation, refresh, deactivation). */
export interface HostProofClaims {
  aud: string;
  hwid: string;
  iat: number;
  jti: string;
  /** Heartbeats only: strictly greater than the machine's last accepted heartbeat's. */
  seq?: number;
}

/** What a license's heartbeat culler does to a machine that missed its window (and grace). */
export const HEARTBEAT_CULL_STRATEGIES = ['deactivate', 'keep'] as const;
export type HeartbeatCull = (typeof HEARTBEAT_CULL_STRATEGIES)[number];

/** Validation verdicts of POST /api/v1/licenses/validate. */
export const VALIDATION_CODES = [
  'VALID',
  'EXPIRED',
  'REVOKED',
  'SIGNATURE_INVALID',
  'MALFORMED',
  'UNKNOWN_KEY',
  'VERSION_MISMATCH',
  'HWID_MISMATCH',
  'NOT_YET_VALID',
  'PRODUCT_MISMATCH',
  'WRONG_AUDIENCE',
  /** The machine the token names (`sub`) was deactivated: its seat, and the token, are over. */
  'MACHINE_DEACTIVATED',
  /** The machine the token names is not registered under the token's license (deleted, or never issued). */
  'MACHINE_UNKNOWN',
  /** A module license token presented with another `module_name` than the one it licenses. */
  'MODULE_MISMATCH',
  /** `odoo_version`'s major version is not among the module license's allowed major versions. */
  'VERSION_NOT_ALLOWED',
  /** The caller required `entitlements` that the license does not grant (now, per the server). */
  'ENTITLEMENT_MISSING',
  /** Expired (the license, or the token of a host that lost contact) but within the license's grace period: still valid until `grace_ends_at`. */
  'VALID_IN_GRACE',
  /** The machine missed its heartbeat window under `heartbeat_cull: keep`: its seat is kept, its token does not validate until it heartbeats again. */
  'HEARTBEAT_DEAD',
] as const;
export type ValidationCode = (typeof VALIDATION_CODES)[number];

export const PRODUCT_NAME = 'aegis-agent';
