/**
 * JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses) of the answers declared in wire.ts.
 * aegis-server's OpenAPI document publishes them as its response schemas, and tests check
 * the server's real answers against them: a field the server adds, drops or retypes
 * without changing these fails there. Plain data, no I/O.
 */
import { FEATURES, TIERS } from './tiers.js';
import { HEARTBEAT_CULL_STRATEGIES, LICENSE_TYPES, VALIDATION_CODES } from './claims.js';
import { CLONE_POLICIES, FINGERPRINT_COMPONENT_NAMES, FINGERPRINT_MATCH_STRATEGIES, HOST_ENVIRONMENTS } from './fingerprint_components.js';
import { LICENSE_STATUSES } from './wire.js';

/** A JSON Schema as a plain object (ajv's SchemaObject without importing ajv here). */
export type JsonSchema = Record<string, unknown>;

const string = { type: 'string' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const dateTime = { type: 'string', format: 'date-time' } as const;
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;

/** An object schema whose every listed property is required unless named in `optional`. */
function record(properties: Record<string, unknown>, optional: readonly string[] = [], description?: string): JsonSchema {
  return {
    type: 'object',
    ...(description ? { description } : {}),
    additionalProperties: false,
    required: Object.keys(properties).filter((k) => !optional.includes(k)),
    properties,
  };
}

export const ERROR_ENVELOPE_SCHEMA: JsonSchema = {
  type: 'object',
  description: 'Every refusal, from every listener: a stable code, a human message, and details (field problems for VALIDATION_FAILED).',
  additionalProperties: false,
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      additionalProperties: false,
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]*$' },
        message: string,
        details: {
          description: 'For VALIDATION_FAILED: the failing fields as JSON Pointer paths; otherwise code-specific, or null.',
          anyOf: [
            { type: 'array', items: record({ path: string, message: string }) },
            { type: 'object' },
            { type: 'null' },
          ],
        },
      },
    },
  },
};

/** `Paged<T>` of a list endpoint (`?limit=&offset=`). */
export function pagedSchema(item: JsonSchema): JsonSchema {
  return record({ items: { type: 'array', items: item }, total: { type: 'integer', minimum: 0 }, limit: { type: 'integer', minimum: 0 }, offset: { type: 'integer', minimum: 0 } });
}

export const CUSTOMER_SCHEMA: JsonSchema = record({
  id: string,
  external_id: nullableString,
  name: string,
  email: nullableString,
  company: nullableString,
  is_active: { type: 'boolean' },
  created_at: dateTime,
  updated_at: dateTime,
});

const licenseProperties = {
  id: string,
  customer_id: string,
  tier: { type: 'string', enum: [...TIERS] },
  license_type: { type: 'string', enum: [...LICENSE_TYPES] },
  status: { type: 'string', enum: [...LICENSE_STATUSES] },
  module_name: nullableString,
  key_suffix: string,
  max_machines: { type: 'integer', minimum: 1 },
  allowed_major_versions: { type: 'array', items: string },
  features: { type: 'array', items: { type: 'string', enum: [...FEATURES] } },
  extra_features: { type: 'array', items: { type: 'string', enum: [...FEATURES] } },
  fleet: nullableString,
  entitlements: { type: 'array', items: string },
  fingerprint_match: { type: 'string', enum: [...FINGERPRINT_MATCH_STRATEGIES] },
  clone_policy: { type: 'string', enum: [...CLONE_POLICIES] },
  allow_containers: { type: 'boolean' },
  heartbeat_interval_seconds: { type: ['integer', 'null'], minimum: 1 },
  heartbeat_cull: { type: 'string', enum: [...HEARTBEAT_CULL_STRATEGIES] },
  floating: { type: 'boolean' },
  lease_ttl_seconds: { type: ['integer', 'null'], minimum: 1 },
  grace_period_seconds: { type: ['integer', 'null'], minimum: 0 },
  expires_at: nullableDateTime,
  revoked_at: nullableDateTime,
  revoke_reason: nullableString,
  created_at: dateTime,
  updated_at: dateTime,
  token: { ...nullableString, description: 'The signed license token of a module license (aud aegis-module-license); null for an aegis-agent license.' },
};

export const LICENSE_SCHEMA: JsonSchema = record(licenseProperties, ['token']);

export const ISSUED_LICENSE_SCHEMA: JsonSchema = record(
  { ...licenseProperties, license_key: { type: 'string', description: 'Shown only in this answer; the server keeps its hash.' } },
  ['token'],
);

export const MACHINE_SCHEMA: JsonSchema = record({
  id: string,
  license_id: string,
  hardware_id: string,
  host_key_thumbprint: string,
  hostname: string,
  agent_version: string,
  status: string,
  activated_at: dateTime,
  last_seen_at: dateTime,
  deactivated_at: nullableDateTime,
  fingerprint_components: { type: 'array', items: { type: 'string', enum: [...FINGERPRINT_COMPONENT_NAMES] } },
  environment: { type: ['string', 'null'], enum: [...HOST_ENVIRONMENTS, null] },
  clone_of: nullableString,
  heartbeat_status: { type: ['string', 'null'], enum: ['alive', 'dead', null] },
  last_heartbeat_at: nullableDateTime,
  lease_expires_at: nullableDateTime,
});

export const HEARTBEAT_RESPONSE_SCHEMA: JsonSchema = record({
  machine_id: string,
  heartbeat_status: { type: 'string', enum: ['alive'] },
  last_heartbeat_at: dateTime,
  next_heartbeat_due_at: nullableDateTime,
  lease_expires_at: nullableDateTime,
  seq: { type: 'integer', minimum: 1 },
});

export const JWK_SCHEMA: JsonSchema = record({ kid: string, alg: string, kty: string, crv: string, use: string, x: string }, ['alg', 'kty', 'crv', 'use', 'x']);

export const JWKS_SCHEMA: JsonSchema = record({ keys: { type: 'array', items: JWK_SCHEMA } });

export const SIGNED_JWKS_SCHEMA: JsonSchema = record({
  jwks: JWKS_SCHEMA,
  iat: { type: 'integer' },
  seq: { type: 'integer', minimum: 0 },
  signatures: { type: 'array', items: string, description: 'One compact JWS per verifying key over canonical JSON of { iat, jwks, seq }.' },
});

export const VALIDATE_RESULT_SCHEMA: JsonSchema = record(
  { valid: { type: 'boolean' }, code: { type: 'string', enum: [...VALIDATION_CODES] }, message: string, claims: { type: 'object' }, entitlements: { type: 'array', items: string }, grace_ends_at: dateTime },
  ['claims', 'entitlements', 'grace_ends_at'],
);

const natsCredentials = record({ creds: string, user_public_key: string, expires_at: nullableDateTime });

export const TOKEN_BUNDLE_SCHEMA: JsonSchema = record(
  {
    machine_id: string,
    license_token: string,
    kernel_token: string,
    kernel_token_expires_at: dateTime,
    license_expires_at: nullableDateTime,
    jwks: JWKS_SCHEMA,
    ca_certificate: string,
    ca_certificate_signature: string,
    trust_domain: string,
    client_certificate: string,
    client_certificate_serial: string,
    client_certificate_expires_at: dateTime,
    spiffe_id: string,
    nats: natsCredentials,
  },
  ['ca_certificate', 'ca_certificate_signature', 'trust_domain', 'client_certificate', 'client_certificate_serial', 'client_certificate_expires_at', 'spiffe_id', 'nats'],
);

export const ISSUED_AGENT_TOKEN_SCHEMA: JsonSchema = record({
  access_token: string,
  token_type: { const: 'Bearer' },
  expires_in: { type: 'integer', minimum: 1 },
  scope: string,
  jti: string,
});

export const AGENT_SNAPSHOTS_SCHEMA: JsonSchema = record({ machine_id: string, messages: { type: 'array', items: string } });

export const ACCEPTED_SCHEMA: JsonSchema = record({ accepted: { const: true } });
