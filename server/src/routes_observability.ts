/**
 * Liveness, readiness and metrics. /healthz answers while the process serves; /readyz
 * answers 200 only when every readiness check passes, else 503 listing each check (fixed
 * words, never error text: both are unauthenticated). /metrics on the main listener needs
 * an API key with metrics:read that is not limited to one customer (the metrics count
 * over every customer); the separate metrics listener (AEGIS_METRICS_LISTEN) serves it
 * without a key and is meant for a loopback or private address only.
 */
import type { ApiKeys } from './api_keys.js';
import { authorize } from './http/auth.js';
import type { Reply, Router } from './http/router.js';
import type { RouteDoc } from './http/route_doc.js';
import type { Health } from './health.js';
import type { ServerMetrics } from './metrics.js';
import type { Tenancy } from './tenancy.js';

export interface ObservabilityDeps {
  health: Health;
  metrics: ServerMetrics;
}

const CHECK_SCHEMA = { type: 'object', additionalProperties: false, required: ['ok'], properties: { ok: { type: 'boolean' }, detail: { type: 'string' } } } as const;
const READINESS_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['status', 'failing', 'checks'],
  properties: {
    status: { type: 'string', enum: ['ready', 'not_ready'] },
    failing: { type: 'array', items: { type: 'string' } },
    checks: { type: 'object', additionalProperties: CHECK_SCHEMA },
  },
} as const;

const HEALTHZ_DOC: RouteDoc = {
  summary: 'Liveness: the process serves',
  tag: 'system',
  auth: { kind: 'public' },
  responses: { 200: { description: 'Serving.', schema: { type: 'object', additionalProperties: false, required: ['status'], properties: { status: { const: 'ok' } } } } },
};

const READYZ_DOC: RouteDoc = {
  summary: 'Readiness: database, migrations, signing key, NATS when configured',
  tag: 'system',
  auth: { kind: 'public' },
  responses: {
    200: { description: 'Every check passed.', schema: READINESS_SCHEMA },
    503: { description: 'A check failed; `failing` names it (fixed words, never error text).', schema: READINESS_SCHEMA },
  },
};

const METRICS_RESPONSES: RouteDoc['responses'] = {
  200: { description: 'Prometheus text exposition format.', contentType: 'text/plain; version=0.0.4; charset=utf-8', schema: { type: 'string' } },
};

async function metricsReply(metrics: ServerMetrics): Promise<Reply> {
  return { status: 200, body: null, raw: await metrics.scrape(), headers: { 'content-type': metrics.contentType } };
}

/** /healthz and /readyz: on the main listener and on the metrics listener. */
export function addHealthRoutes(router: Router, d: Pick<ObservabilityDeps, 'health'>): void {
  router.add('GET', '/healthz', async () => ({ status: 200, body: { status: 'ok' } }), { doc: HEALTHZ_DOC });
  router.add('GET', '/readyz', async () => {
    const r = await d.health.readiness();
    const failing = Object.entries(r.checks)
      .filter(([, c]) => !c.ok)
      .map(([name]) => name);
    return { status: r.ready ? 200 : 503, body: { status: r.ready ? 'ready' : 'not_ready', failing, checks: r.checks } };
  }, { doc: READYZ_DOC });
}

/** The main listener's /metrics: an unrestricted API key with metrics:read. */
export function addMetricsRoute(router: Router, d: ObservabilityDeps & { apiKeys: ApiKeys; tenancy: Tenancy }): void {
  router.add('GET', '/metrics', async (req) => {
    const p = await authorize(d.apiKeys, req, 'metrics:read');
    d.tenancy.assertUnrestricted(p, 'read metrics (they count over every customer)');
    return metricsReply(d.metrics);
  }, {
    doc: {
      summary: 'Prometheus metrics',
      description: 'Counts over every customer, so a key limited to one customer is refused.',
      tag: 'system',
      auth: { kind: 'api_key', scope: 'metrics:read' },
      responses: METRICS_RESPONSES,
      errors: ['FORBIDDEN'],
    },
  });
}

/** The metrics listener's router: /metrics without a key, /healthz, /readyz; nothing else. */
export function addOpenMetricsRoute(router: Router, d: ObservabilityDeps): void {
  router.add('GET', '/metrics', async () => metricsReply(d.metrics), {
    doc: { summary: 'Prometheus metrics (the metrics listener)', tag: 'system', auth: { kind: 'public' }, responses: METRICS_RESPONSES },
  });
}
