/**
 * The JSON that aegis-server's HTTP API answers with, as every client reads it. The server
 * builds these shapes, and the agent and aegisctl parse them, from these declarations
 * only: a field added or renamed here is added or renamed for all three at once.
 */
import type { Feature, LicensedTier, Tier } from './tiers.js';
import type { HeartbeatCull, LicenseType, ValidationCode } from './claims.js';
import type { Ed25519PublicJwk } from './jose_keys.js';
import type { ClonePolicy, FingerprintComponentName, FingerprintComponents, FingerprintMatch, HostEnvironment } from './fingerprint_components.js';

/** `{"error":{"code","message","details"}}`: every refusal, from every listener. */
export interface ErrorEnvelope {
  error: { code: string; message: string; details?: unknown };
}

/** A page of a list endpoint (`?limit=&offset=`). */
export interface Paged<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export interface Customer {
  id: string;
  /** The customer's own reference (such as `CUST-001`), unique; accepted wherever a customer id is. */
  external_id: string | null;
  name: string;
  email: string | null;
  company: string | null;
  is_active: boolean;
  created_at: string;
  updated_at: string;
}

/** `POST /api/v1/customers` (name required) and `PATCH` (any subset; `external_id` only at creation). */
export interface CustomerInput {
  name: string;
  external_id?: string;
  email?: string | null;
  company?: string | null;
  is_active?: boolean;
}

export type LicenseStatus = 'active' | 'expired' | 'revoked';
export const LICENSE_STATUSES: readonly LicenseStatus[] = ['active', 'expired', 'revoked'];

export interface License {
  id: string;
  customer_id: string;
  tier: Tier;
  license_type: LicenseType;
  status: LicenseStatus;
  /** The product module this license is for (its technical name); null for an aegis-agent license. */
  module_name: string | null;
  key_suffix: string;
  max_machines: number;
  allowed_major_versions: string[];
  features: Feature[];
  extra_features: Feature[];
  fleet: string | null;
  /** Operator-defined entitlements (entitlements.ts), sorted. */
  entitlements: string[];
  /** How many recorded fingerprint components a host must still present to stay the same machine. */
  fingerprint_match: FingerprintMatch;
  /** What activating a VM clone of an active machine does. */
  clone_policy: ClonePolicy;
  /** Whether hosts that report running in a container may activate. */
  allow_containers: boolean;
  /** Seconds between the heartbeats each machine must send; null: none required. */
  heartbeat_interval_seconds: number | null;
  /** What a machine that misses its heartbeat window (and grace) becomes. */
  heartbeat_cull: HeartbeatCull;
  /** Seats are leased for `lease_ttl_seconds` and lapse unless renewed (heartbeat). */
  floating: boolean;
  lease_ttl_seconds: number | null;
  /** Grace after expiry and after lost contact (missed heartbeats); null: none. */
  grace_period_seconds: number | null;
  expires_at: string | null;
  revoked_at: string | null;
  revoke_reason: string | null;
  created_at: string;
  updated_at: string;
  /**
   * The signed license token of a module license (EdDSA JWS, `aud: aegis-module-license`),
   * in the answer to issuing and to `GET /api/v1/licenses/{id}`; null for an aegis-agent
   * license, whose tokens are machine-bound and come with activation.
   */
  token?: string | null;
}

/** `POST /api/v1/licenses`. */
export interface IssueLicenseRequest {
  /** The customer's id or its external reference. */
  customer_id: string;
  /** Required without `module_name`; a module license defaults to DEFAULT_MODULE_LICENSE_TIER. */
  tier?: LicensedTier;
  module_name?: string;
  license_type: LicenseType;
  expires_at?: string;
  duration_days?: number;
  max_machines?: number;
  allowed_major_versions?: string[];
  features?: Feature[];
  fleet?: string;
  entitlements?: string[];
  fingerprint_match?: FingerprintMatch;
  clone_policy?: ClonePolicy;
  allow_containers?: boolean;
  heartbeat_interval_seconds?: number | null;
  heartbeat_cull?: HeartbeatCull;
  floating?: boolean;
  lease_ttl_seconds?: number | null;
  grace_period_seconds?: number | null;
}

/** `POST` and `DELETE /api/v1/licenses/{id}/entitlements`. */
export interface EntitlementsRequest {
  entitlements: string[];
}

/** The answer to issuing: the only time the license key is ever shown. */
export interface IssuedLicense extends License {
  license_key: string;
}

export interface Machine {
  id: string;
  license_id: string;
  hardware_id: string;
  host_key_thumbprint: string;
  hostname: string;
  agent_version: string;
  status: string;
  activated_at: string;
  last_seen_at: string;
  deactivated_at: string | null;
  /** The fingerprint components recorded for it (names only; the salted digests stay on the server). */
  fingerprint_components: FingerprintComponentName[];
  /** Where its agent said it runs; null when it did not say. */
  environment: HostEnvironment | null;
  /** The machine this one was activated as a clone of (clone_policy new_machine), else null. */
  clone_of: string | null;
  /** alive, or dead (missed its heartbeat window under heartbeat_cull keep); null when its license wants no heartbeats. */
  heartbeat_status: 'alive' | 'dead' | null;
  last_heartbeat_at: string | null;
  /** A floating license's lease on this seat; null otherwise. */
  lease_expires_at: string | null;
}

/** `POST /api/v1/machines/{id}/heartbeat`: a host proof (aud aegis-heartbeat) with a strictly increasing `seq`. */
export interface HeartbeatRequest {
  proof: string;
}

/** The answer to a heartbeat. */
export interface HeartbeatResponse {
  machine_id: string;
  heartbeat_status: 'alive';
  last_heartbeat_at: string;
  /** The next heartbeat is due before this (null when the license wants none). */
  next_heartbeat_due_at: string | null;
  lease_expires_at: string | null;
  seq: number;
}

/** One key of `/.well-known/jwks.json`. */
export interface Jwk {
  kid: string;
  alg?: string;
  kty?: string;
  crv?: string;
  use?: string;
  x?: string;
}

export interface JwksDocument {
  keys: Jwk[];
}

/** `POST /api/v1/licenses/validate`. */
export interface ValidateRequest {
  token: string;
  product?: string;
  version?: string;
  hardware_id?: string;
  /** The module the caller runs; refused with MODULE_MISMATCH when the token licenses another. */
  module_name?: string;
  /** The host product's version (HOST_VERSION_PATTERN); its major must be allowed, else VERSION_NOT_ALLOWED. */
  odoo_version?: string;
  /** Entitlements the caller needs: ENTITLEMENT_MISSING unless the license grants every one now. */
  entitlements?: string[];
}

export interface ValidateResult {
  valid: boolean;
  code: ValidationCode;
  message: string;
  claims?: Record<string, unknown>;
  /** The license's entitlements as the server holds them now (once the token verified and the license is usable). */
  entitlements?: string[];
  /** With VALID_IN_GRACE: when the grace ends (then EXPIRED, or the machine is culled). */
  grace_ends_at?: string;
}

/** `POST /api/v1/activations`. */
export interface ActivationRequest {
  license_key: string;
  hardware_id: string;
  host_public_key: Ed25519PublicJwk;
  hostname: string;
  agent_version: string;
  /** Host-key proof, `aud: "aegis-activation"`. */
  proof: string;
  /** PKCS#10 request for the host key: the server answers with a client certificate. */
  csr?: string;
  /** Salted digests of the named fingerprint components (fingerprint_components.ts). */
  components?: FingerprintComponents;
  environment?: HostEnvironment;
}

/** `POST /api/v1/machines/{id}/refresh` (host proof) and `POST /api/v1/agent/refresh` (mTLS). */
export interface RefreshRequest {
  /** Host-key proof, `aud: "aegis-refresh"`; absent on the agent listener. Its hwid is `hardware_id` when given. */
  proof?: string;
  csr?: string;
  /** The host's hardware id now, when it differs from the machine's (hardware changed): `components` then decide. */
  hardware_id?: string;
  components?: FingerprintComponents;
  environment?: HostEnvironment;
}

/** Added to activation and refresh answers when the server runs a CA. */
export interface CertificateFields {
  ca_certificate: string;
  /**
   * Compact JWS (EdDSA, typ `aegis-ca+jws`, kid of the server signing key) over
   * CaCertificateClaims for ca_certificate: an agent with pinned keys adopts the CA only
   * when this verifies against a key it trusts.
   */
  ca_certificate_signature?: string;
  trust_domain: string;
  client_certificate?: string;
  client_certificate_serial?: string;
  client_certificate_expires_at?: string;
  spiffe_id?: string;
}

/** The payload of ca_certificate_signature. */
export interface CaCertificateClaims {
  aud: 'aegis-ca';
  iss: string;
  iat: number;
  /** base64url SHA-256 of the CA certificate's DER. */
  'x5t#S256': string;
  trust_domain: string;
}

/** Per-host NATS credentials, when the server runs NATS in operator mode. */
export interface NatsCredentialsField {
  creds: string;
  user_public_key: string;
  expires_at: string | null;
}

/** The tokens a machine holds, fresh after every activation and refresh. */
export interface IssuedTokens {
  machine_id: string;
  license_token: string;
  kernel_token: string;
  kernel_token_expires_at: string;
  license_expires_at: string | null;
  jwks: JwksDocument;
}

/** Answer to activation (201 new seat, 200 same machine again) and to both refresh routes. */
export type TokenBundle = IssuedTokens & Partial<CertificateFields> & { nats?: NatsCredentialsField };

/** `POST /api/v1/agent/token`. */
export interface AgentTokenRequest {
  scope?: string | string[];
  /** Without mTLS: the machine and a host-key proof of `aud: "aegis-agent-token"`. */
  machine_id?: string;
  proof?: string;
}

export interface IssuedAgentToken {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
  jti: string;
}

/** `GET /api/v1/agent/snapshots` and the host-proof fallback: the signed messages aimed at a host. */
export interface AgentSnapshotsResponse {
  /** The machine the messages are for (the one whose proof or credentials asked). */
  machine_id: string;
  /** Compact JWS strings, each a signed SegMapClaims. */
  messages: string[];
}

/** `POST /api/v1/agent/status` and `/telemetry`. */
export interface AcceptedResponse {
  accepted: true;
}
