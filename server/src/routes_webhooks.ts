/**
 * Webhook endpoints and their delivery log: register, list, delete, read deliveries,
 * send one again. A key limited to one customer registers endpoints that receive only
 * that customer's events, and sees only its own endpoints (another's is the unknown-id 404).
 */
import { WEBHOOK_EVENT_TYPES, type WebhookEventType } from '../../protocol/src/index.js';
import { WEBHOOK_DELIVERY_PAGE_SCHEMA, WEBHOOK_DELIVERY_SCHEMA, WEBHOOK_ENDPOINT_SCHEMA } from './api_schemas.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { actorOf, authorize } from './http/auth.js';
import type { QueryParamDoc } from './http/route_doc.js';
import type { Router } from './http/router.js';
import { MAX_LIMIT, parsePage } from './pagination.js';
import { scopeOf } from './tenancy.js';
import { validator } from './validation.js';
import type { Webhooks } from './webhooks/webhooks.js';

export interface WebhookRouteDeps {
  apiKeys: ApiKeys;
  audit: AuditLog;
  webhooks: Webhooks;
}

const endpointCreate = validator<{ url: string; events: WebhookEventType[]; description?: string | null }>({
  type: 'object',
  additionalProperties: false,
  required: ['url', 'events'],
  properties: {
    url: { type: 'string', minLength: 1, maxLength: 2048 },
    events: { type: 'array', minItems: 1, maxItems: WEBHOOK_EVENT_TYPES.length, uniqueItems: true, items: { type: 'string', enum: [...WEBHOOK_EVENT_TYPES] } },
    description: { type: ['string', 'null'], maxLength: 500 },
  },
});

const PAGE_QUERY: QueryParamDoc[] = [
  { name: 'limit', description: `Page size, 1 to ${MAX_LIMIT} (default 50).`, schema: { type: 'integer', minimum: 1, maximum: MAX_LIMIT } },
  { name: 'offset', description: 'Items to skip.', schema: { type: 'integer', minimum: 0 } },
];

const ENDPOINT_EXAMPLE = {
  id: '7d0c4c1e-2f7b-4f0e-9a51-3f1f6c1b2a10',
  url: 'https://hooks.example.com/aegis',
  events: ['license.created', 'machine.activated'],
  description: 'billing sync',
  customer_id: null,
  created_at: '2025-01-01T00:00:00.000Z',
};

export function addWebhookRoutes(r: Router, d: WebhookRouteDeps): void {
  const { webhooks } = d;
  r.add('POST', '/api/v1/webhook-endpoints', async (req) => {
    const p = await authorize(d.apiKeys, req, 'webhooks:write');
    const input = endpointCreate(req.body);
    const e = await webhooks.createEndpoint({ ...input, customer_id: scopeOf(p), created_by: actorOf(p) });
    await d.audit.record({ event_type: 'webhook.endpoint_created', actor: actorOf(p), customer_id: e.customer_id, client_ip: req.clientIp, data: { endpoint_id: e.id, url: e.url, events: e.events } });
    return { status: 201, body: e };
  }, {
    doc: {
      summary: 'Register a webhook endpoint',
      description: 'Events are POSTed as `{id, type, created_at, data}`, signed with the server\'s signing key (a key of `/.well-known/jwks.json`): `Aegis-Signature: t=<unix>,v1=<base64url Ed25519 over "<t>.<body>">`, `Aegis-Key-Id`, `Aegis-Event-Id`, `Aegis-Event-Type`. `https://` only (see AEGIS_WEBHOOK_ALLOW_HTTP); addresses that are link-local (the metadata service) or loopback are refused. A key limited to one customer registers an endpoint that receives only that customer\'s events.',
      tag: 'webhooks',
      auth: { kind: 'api_key', scope: 'webhooks:write' },
      request: { schema: endpointCreate.schema, example: { url: 'https://hooks.example.com/aegis', events: ['license.created', 'machine.activated'], description: 'billing sync' } },
      responses: { 201: { description: 'Registered.', schema: WEBHOOK_ENDPOINT_SCHEMA, example: ENDPOINT_EXAMPLE } },
      errors: ['WEBHOOK_URL_REFUSED', 'CONFLICT'],
    },
  });
  r.add('GET', '/api/v1/webhook-endpoints', async (req) => {
    const p = await authorize(d.apiKeys, req, 'webhooks:read');
    return { status: 200, body: { items: await webhooks.listEndpoints(scopeOf(p)) } };
  }, {
    doc: {
      summary: 'List webhook endpoints',
      tag: 'webhooks',
      auth: { kind: 'api_key', scope: 'webhooks:read' },
      responses: { 200: { description: 'The endpoints (a key limited to one customer sees its own only).', schema: { type: 'object', additionalProperties: false, required: ['items'], properties: { items: { type: 'array', items: WEBHOOK_ENDPOINT_SCHEMA } } } } },
    },
  });
  r.add('DELETE', '/api/v1/webhook-endpoints/:id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'webhooks:write');
    const e = await webhooks.deleteEndpoint(req.params.id!, scopeOf(p));
    await d.audit.record({ event_type: 'webhook.endpoint_deleted', actor: actorOf(p), customer_id: e.customer_id, client_ip: req.clientIp, data: { endpoint_id: e.id, url: e.url } });
    return { status: 200, body: e };
  }, {
    doc: {
      summary: 'Delete a webhook endpoint',
      description: 'Its pending deliveries are dropped with it: nothing more is sent there.',
      tag: 'webhooks',
      auth: { kind: 'api_key', scope: 'webhooks:write' },
      responses: { 200: { description: 'The deleted endpoint.', schema: WEBHOOK_ENDPOINT_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add('GET', '/api/v1/webhook-endpoints/:id/deliveries', async (req) => {
    const p = await authorize(d.apiKeys, req, 'webhooks:read');
    return { status: 200, body: await webhooks.deliveries(req.params.id!, scopeOf(p), parsePage(req.query)) };
  }, {
    doc: {
      summary: 'An endpoint\'s delivery log, newest first',
      description: 'Each delivery with its status (`pending`, `delivered`, `failed` after the last attempt), attempts and their log, the last response code and error, and the next attempt.',
      tag: 'webhooks',
      auth: { kind: 'api_key', scope: 'webhooks:read' },
      query: PAGE_QUERY,
      responses: { 200: { description: 'A page of deliveries.', schema: WEBHOOK_DELIVERY_PAGE_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add('POST', '/api/v1/webhook-endpoints/:id/deliveries/:delivery_id/retry', async (req) => {
    const p = await authorize(d.apiKeys, req, 'webhooks:write');
    const delivery = await webhooks.retry(req.params.id!, req.params.delivery_id!, scopeOf(p));
    await d.audit.record({ event_type: 'webhook.delivery_retried', actor: actorOf(p), customer_id: scopeOf(p), client_ip: req.clientIp, data: { endpoint_id: req.params.id, delivery_id: delivery.id } });
    return { status: 202, body: delivery };
  }, {
    body: false,
    doc: {
      summary: 'Send a delivery again now',
      description: 'One more attempt, signed afresh, whatever the delivery went through before (a failed one included).',
      tag: 'webhooks',
      auth: { kind: 'api_key', scope: 'webhooks:write' },
      responses: { 202: { description: 'Queued; the delivery as it stands.', schema: WEBHOOK_DELIVERY_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });
}
