/**
 * Correlation rules and their alerts over HTTP. Rules are global (they run over every
 * customer's events): reading them needs `rules:read`, changing them `rules:write` and an
 * unrestricted key. Alerts (`alerts:read`) follow tenancy: a key limited to one customer
 * sees its machines' alerts only, and another customer's machine id is the unknown-id 404.
 */
import { ValidationError, isMachineId, type FieldProblem } from '../../protocol/src/index.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { actorOf, authorize } from './http/auth.js';
import type { QueryParamDoc } from './http/route_doc.js';
import type { Router } from './http/router.js';
import type { Correlator } from './correlation/correlator.js';
import { ACTION_TYPES, DECISION_MODES, EDGE_DIRECTIONS, EDGE_PROTOS, GROUP_BY_FIELDS, MAX_MANAGEMENT_EDGES, MAX_RULE_BYTES, MAX_SELECTORS, RULE_LEVELS, RULE_TYPES, SELECTOR_SOURCES } from './correlation/rules.js';
import { scopeOf, type Tenancy } from './tenancy.js';
import { validator } from './validation.js';

const CONDITION_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { gt: { type: 'integer' }, gte: { type: 'integer' }, lt: { type: 'integer' }, lte: { type: 'integer' }, eq: { type: 'integer' }, field: { type: 'string', maxLength: 80 } },
} as const;

/** What an alert of the rule decides (server/src/decisions); per type the fields are checked by parseRule. */
export const ACTION_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['type'],
  description: '`quarantine` {allow: management edges kept, everything else denied}; `tighten` {service_id: the segmenter\'s proposal from observed flows}; `notify` (webhook only).',
  properties: {
    type: { enum: [...ACTION_TYPES] },
    allow: {
      type: 'array',
      maxItems: MAX_MANAGEMENT_EDGES,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['cidr', 'proto', 'port'],
        properties: { cidr: { type: 'string', maxLength: 64 }, proto: { enum: [...EDGE_PROTOS] }, port: { type: 'integer', minimum: 0, maximum: 65535 }, direction: { enum: [...EDGE_DIRECTIONS] } },
      },
    },
    service_id: { type: 'integer', minimum: 0, maximum: 4294967295 },
  },
} as const;

const RULE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'title', 'type', 'rules', 'group-by', 'timespan', 'level'],
  properties: {
    id: { type: 'string', pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$' },
    title: { type: 'string', minLength: 1, maxLength: 200 },
    description: { type: 'string', maxLength: 2000 },
    type: { enum: [...RULE_TYPES] },
    rules: {
      type: 'array',
      minItems: 1,
      maxItems: MAX_SELECTORS,
      description: 'Selectors: `source` and fields that must equal the given values (checked per source); in temporal rules a selector may carry a `condition` (gt/gte, optionally a `field` for distinct values).',
      items: { type: 'object', required: ['source'], maxProperties: 18, properties: { source: { enum: [...SELECTOR_SOURCES] }, condition: CONDITION_SCHEMA }, additionalProperties: { type: ['string', 'number', 'boolean'] } },
    },
    'group-by': { type: 'array', items: { enum: [...GROUP_BY_FIELDS] }, minItems: 1, maxItems: GROUP_BY_FIELDS.length },
    timespan: { type: 'string', pattern: '^[1-9][0-9]{0,6}(s|m|h|d)$', description: 'Window: 1s to 7d.' },
    condition: CONDITION_SCHEMA,
    level: { enum: [...RULE_LEVELS] },
    action: ACTION_SCHEMA,
    mode: { enum: [...DECISION_MODES], description: 'With an action: propose (default, an operator approves) or auto (the guard rails promote or roll back).' },
  },
} as const;

const STORED_RULE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['rule', 'origin', 'created_by', 'created_at'],
  properties: { rule: RULE_SCHEMA, origin: { enum: ['file', 'api'] }, created_by: { type: ['string', 'null'] }, created_at: { type: ['string', 'null'] } },
} as const;

const ALERT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'rule_id', 'rule_title', 'level', 'group', 'machine_id', 'customer_id', 'first_event_at', 'last_event_at', 'evidence', 'created_at'],
  properties: {
    id: { type: 'string' },
    rule_id: { type: 'string' },
    rule_title: { type: 'string' },
    level: { enum: [...RULE_LEVELS] },
    group: { type: 'object', additionalProperties: { type: ['string', 'null'] } },
    machine_id: { type: 'string' },
    customer_id: { type: ['string', 'null'] },
    first_event_at: { type: 'string' },
    last_event_at: { type: 'string' },
    evidence: {
      type: 'object',
      additionalProperties: false,
      required: ['refs', 'counts'],
      description: '`refs`: e:<event id>, f:<flow log id>, finding:<machine>/<advisory>/<package> (at most 200); `counts`: per selector, the events (flow lines by their count) that made it fire.',
      properties: { refs: { type: 'array', items: { type: 'string' } }, counts: { type: 'array', items: { type: 'integer' } } },
    },
    created_at: { type: 'string' },
  },
} as const;

const EXAMPLE_RULE = {
  id: 'exposed-critical-then-egress-burst',
  title: 'Critical exposed finding and denied egress to many destinations',
  type: 'temporal',
  rules: [
    { source: 'finding', severity: 'critical', exposed: true },
    { source: 'flow', verdict: 'dropped', direction: 'egress', condition: { gt: 20, field: 'remote' } },
  ],
  'group-by': ['machine_id'],
  timespan: '10m',
  level: 'critical',
};
const STORED_EXAMPLE = { rule: EXAMPLE_RULE, origin: 'api', created_by: 'api_key:ops', created_at: '2026-01-01T00:00:00.000Z' };
const ALERT_EXAMPLE = {
  id: '0b7e4f1e-9f6c-4d7a-8c0e-2f9d1d7b1a11',
  rule_id: 'exposed-critical-then-egress-burst',
  rule_title: 'Critical exposed finding and denied egress to many destinations',
  level: 'critical',
  group: { machine_id: '3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10' },
  machine_id: '3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10',
  customer_id: 'c0ffee00-0000-4000-8000-000000000001',
  first_event_at: '2026-01-01T00:00:00.000Z',
  last_event_at: '2026-01-01T00:05:00.000Z',
  evidence: { refs: ['finding:3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10/DEBIAN-CVE-2024-6387/openssh-server', 'f:812'], counts: [1, 21] },
  created_at: '2026-01-01T00:05:10.000Z',
};

const ruleBody = validator<Record<string, unknown>>(RULE_SCHEMA as unknown as Record<string, unknown>);

const ALERT_QUERY_DOC: QueryParamDoc[] = [
  { name: 'rule', description: 'Only this rule\'s alerts.', schema: { type: 'string', maxLength: 64 } },
  { name: 'machine', description: 'Only this machine\'s alerts.', schema: { type: 'string' } },
  { name: 'since', description: 'Only alerts created at or after this time.', schema: { type: 'string', format: 'date-time' } },
  { name: 'limit', description: 'At most this many (1 to 1000, default 100), newest first.', schema: { type: 'integer', minimum: 1, maximum: 1000 } },
];
const ALERT_PARAMS = new Set(ALERT_QUERY_DOC.map((q) => q.name));

function alertQueryOf(query: URLSearchParams): { rule?: string; machine?: string; since?: string; limit: number } {
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!ALERT_PARAMS.has(name)) problems.push({ path: name, message: `is not a parameter of this route (${[...ALERT_PARAMS].join(', ')})` });
    else if (seen.has(name)) problems.push({ path: name, message: 'is given more than once' });
    seen.add(name);
  }
  const q: { rule?: string; machine?: string; since?: string; limit: number } = { limit: 100 };
  const rule = query.get('rule');
  if (rule !== null) {
    if (/^[a-z0-9][a-z0-9_.-]{0,63}$/.test(rule)) q.rule = rule;
    else problems.push({ path: 'rule', message: 'must be a rule id' });
  }
  const machine = query.get('machine');
  if (machine !== null) {
    if (isMachineId(machine)) q.machine = machine;
    else problems.push({ path: 'machine', message: 'must be a machine id' });
  }
  const since = query.get('since');
  if (since !== null) {
    const d = new Date(since);
    if (since.length <= 40 && /^\d{4}-\d\d-\d\dT/.test(since) && !Number.isNaN(d.getTime())) q.since = d.toISOString();
    else problems.push({ path: 'since', message: 'must be an RFC 3339 time' });
  }
  const limit = query.get('limit');
  if (limit !== null) {
    if (/^\d{1,4}$/.test(limit) && Number(limit) >= 1 && Number(limit) <= 1000) q.limit = Number(limit);
    else problems.push({ path: 'limit', message: 'must be an integer from 1 to 1000' });
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return q;
}

export interface RuleRouteDeps {
  apiKeys: ApiKeys;
  audit: AuditLog;
  tenancy: Tenancy;
  correlator: Correlator;
}

export function addRuleRoutes(r: Router, d: RuleRouteDeps): void {
  r.add('POST', '/api/v1/rules', async (req) => {
    const p = await authorize(d.apiKeys, req, 'rules:write');
    d.tenancy.assertUnrestricted(p, 'change the correlation rules every customer\'s events are judged by');
    const stored = await d.correlator.addRule(ruleBody(req.body), actorOf(p));
    await d.audit.record({ event_type: 'rules.rule_added', actor: actorOf(p), client_ip: req.clientIp, data: { rule_id: stored.rule.id, type: stored.rule.type } });
    return { status: 201, body: stored };
  }, {
    maxBody: MAX_RULE_BYTES,
    doc: {
      summary: 'Add a correlation rule',
      description: 'Sigma-correlation-shaped: `event_count` (events, flow lines by their count, matched by any selector), `value_count` (distinct values of `condition.field`), `temporal` (every selector within the timespan) and `temporal_ordered` (in the listed order). Findings match as standing events (open now, at their first_seen_at). `group-by` must include `machine_id`. Evaluated by a periodic pass over the window (AEGIS_RULES_INTERVAL_SECONDS). Rules are global: an unrestricted key only. JSON only here; rule files in AEGIS_RULES_DIR may be YAML.',
      tag: 'rules',
      auth: { kind: 'api_key', scope: 'rules:write' },
      request: { schema: RULE_SCHEMA, example: EXAMPLE_RULE },
      responses: { 201: { description: 'Kept.', schema: STORED_RULE_SCHEMA, example: STORED_EXAMPLE } },
      errors: ['CONFLICT', 'FORBIDDEN', 'PAYLOAD_TOO_LARGE'],
    },
  });
  r.add('GET', '/api/v1/rules', async (req) => {
    await authorize(d.apiKeys, req, 'rules:read');
    return { status: 200, body: { items: await d.correlator.listRules() } };
  }, {
    doc: {
      summary: 'List correlation rules',
      description: 'Rules from AEGIS_RULES_DIR (`origin: file`) and from the API (`origin: api`), by id.',
      tag: 'rules',
      auth: { kind: 'api_key', scope: 'rules:read' },
      responses: { 200: { description: 'The rules.', schema: { type: 'object', additionalProperties: false, required: ['items'], properties: { items: { type: 'array', items: STORED_RULE_SCHEMA } } }, example: { items: [STORED_EXAMPLE] } } },
    },
  });
  r.add('DELETE', '/api/v1/rules/:id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'rules:write');
    d.tenancy.assertUnrestricted(p, 'change the correlation rules');
    const stored = await d.correlator.deleteRule(req.params.id!);
    await d.audit.record({ event_type: 'rules.rule_deleted', actor: actorOf(p), client_ip: req.clientIp, data: { rule_id: stored.rule.id } });
    return { status: 200, body: stored };
  }, {
    doc: {
      summary: 'Delete a correlation rule',
      description: 'Its alerts stay. A rule from AEGIS_RULES_DIR is a CONFLICT (remove the file and restart).',
      tag: 'rules',
      auth: { kind: 'api_key', scope: 'rules:write' },
      responses: { 200: { description: 'The deleted rule.', schema: STORED_RULE_SCHEMA, example: STORED_EXAMPLE } },
      errors: ['NOT_FOUND', 'CONFLICT', 'FORBIDDEN'],
    },
  });
  r.add('GET', '/api/v1/alerts', async (req) => {
    const p = await authorize(d.apiKeys, req, 'alerts:read');
    const q = alertQueryOf(req.query);
    if (q.machine !== undefined) await d.tenancy.assertMachine(p, q.machine);
    return { status: 200, body: { items: await d.correlator.alerts({ ...q, customer: scopeOf(p) }) } };
  }, {
    doc: {
      summary: 'Alerts raised by correlation rules, newest first',
      description: 'One alert per rule, group and window. A key limited to one customer sees its machines\' alerts only; another customer\'s machine is NOT_FOUND. Unknown or repeated parameters are refused.',
      tag: 'rules',
      auth: { kind: 'api_key', scope: 'alerts:read' },
      query: ALERT_QUERY_DOC,
      responses: { 200: { description: 'The alerts.', schema: { type: 'object', additionalProperties: false, required: ['items'], properties: { items: { type: 'array', items: ALERT_SCHEMA } } }, example: { items: [ALERT_EXAMPLE] } } },
      errors: ['NOT_FOUND'],
    },
  });
}
