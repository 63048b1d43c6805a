/**
 * JSON Schemas of the answers only aegis-server defines (health, info, statistics, the
 * audit log, segmentation views): published in the OpenAPI document next to the wire
 * schemas of protocol/, and checked against real answers by the API document test.
 * Segmentation views are described by their stable members; the rest stays open.
 */
import { pagedSchema, type JsonSchema } from '../../protocol/src/index.js';

const string = { type: 'string' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const count = { type: 'integer', minimum: 0 } as const;
const counts = { type: 'object', additionalProperties: count } as const;

export const HEALTH_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['status', 'checks'],
  properties: { status: { enum: ['ok', 'unhealthy'] }, checks: { type: 'object', additionalProperties: string } },
};

export const INFO_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'database', 'signing_kid', 'jwks_uri', 'started_at'],
  properties: {
    name: { const: 'aegis-server' },
    version: string,
    database: { enum: ['sqlite', 'postgres'] },
    signing_kid: nullableString,
    jwks_uri: string,
    started_at: { type: 'string', format: 'date-time' },
  },
};

export const STATS_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['customers', 'licenses', 'machines', 'activations_last_24h', 'refused_last_24h', 'signing_keys'],
  properties: {
    customers: { type: 'object', required: ['total', 'active'], properties: { total: count, active: count } },
    licenses: { type: 'object', required: ['total', 'by_status', 'by_tier'], properties: { total: count, by_status: counts, by_tier: counts } },
    machines: { type: 'object', required: ['active', 'deactivated'], properties: { active: count, deactivated: count } },
    activations_last_24h: count,
    refused_last_24h: count,
    signing_keys: { type: 'object', required: ['active', 'published'], properties: { active: nullableString, published: count } },
  },
};

export const AUDIT_RECORD_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'event_type', 'outcome', 'actor', 'license_id', 'customer_id', 'machine_id', 'client_ip', 'reason', 'event_data', 'created_at'],
  properties: {
    id: { type: 'integer' },
    event_type: string,
    outcome: { enum: ['ok', 'refused'] },
    actor: string,
    license_id: nullableString,
    customer_id: nullableString,
    machine_id: nullableString,
    client_ip: nullableString,
    reason: nullableString,
    event_data: { type: 'object' },
    created_at: { type: 'string', format: 'date-time' },
  },
};

export const AUDIT_PAGE_SCHEMA: JsonSchema = pagedSchema(AUDIT_RECORD_SCHEMA);

export const FINGERPRINT_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['hardware_id', 'version', 'components'],
  properties: { hardware_id: string, version: string, components: { type: 'object' } },
};

/** A segmentation answer: the members every such answer has, others left open. */
export function segView(required: Record<string, JsonSchema>, description: string): JsonSchema {
  return { type: 'object', description, required: Object.keys(required), properties: required };
}

export const AGENT_VIEW_SCHEMA: JsonSchema = segView({ machine_id: string }, 'What an agent last reported: applied revisions, status and counters.');

export const WEBHOOK_ENDPOINT_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'url', 'events', 'description', 'customer_id', 'created_at'],
  properties: {
    id: string,
    url: string,
    events: { type: 'array', items: string },
    description: nullableString,
    customer_id: nullableString,
    created_at: { type: 'string', format: 'date-time' },
  },
};

const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;

export const WEBHOOK_DELIVERY_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'endpoint_id', 'event_id', 'event_type', 'status', 'attempts', 'attempt_log', 'last_status_code', 'last_error', 'next_attempt_at', 'last_attempt_at', 'created_at', 'delivered_at'],
  properties: {
    id: string,
    endpoint_id: string,
    event_id: string,
    event_type: string,
    status: { enum: ['pending', 'delivered', 'failed'] },
    attempts: count,
    attempt_log: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['at', 'status_code', 'error', 'duration_ms'],
        properties: { at: { type: 'string', format: 'date-time' }, status_code: { type: ['integer', 'null'] }, error: nullableString, duration_ms: count },
      },
    },
    last_status_code: { type: ['integer', 'null'] },
    last_error: nullableString,
    next_attempt_at: nullableDateTime,
    last_attempt_at: nullableDateTime,
    created_at: { type: 'string', format: 'date-time' },
    delivered_at: nullableDateTime,
  },
};

export const WEBHOOK_DELIVERY_PAGE_SCHEMA: JsonSchema = pagedSchema(WEBHOOK_DELIVERY_SCHEMA);
