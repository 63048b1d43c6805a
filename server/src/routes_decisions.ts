/**
 * Decisions over HTTP: what alerts of rules with an action decided, and the operator's
 * approve/reject. `decisions:read` lists and reads, `decisions:write` approves and rejects.
 * Tenancy: a key limited to one customer sees and changes its customer's decisions only;
 * another customer's decision id is the unknown-id 404, another's machine in `machine=` too.
 */
import { isMachineId, ValidationError, type FieldProblem } from '../../protocol/src/index.js';
import type { ApiKeys } from './api_keys.js';
import { actorOf, authorize } from './http/auth.js';
import type { QueryParamDoc } from './http/route_doc.js';
import type { Router } from './http/router.js';
import { DECISION_STATES, Decisions, type DecisionQuery, type DecisionState } from './decisions/decisions.js';
import { ACTION_SCHEMA } from './routes_rules.js';
import { scopeOf, type Tenancy } from './tenancy.js';
import { validator } from './validation.js';

const REVISION_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['service_id', 'revision', 'prior_revision', 'restored_by'],
  properties: {
    service_id: { type: 'integer' },
    revision: { type: 'integer', description: 'The canary revision the decision submitted (promoted in place).' },
    prior_revision: { type: ['integer', 'null'], description: 'What the machine ran for the service before (null: nothing).' },
    restored_by: { type: ['integer', 'null'], description: 'The revision that put prior_revision back, once rolled back.' },
  },
} as const;

const DECISION_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'rule_id', 'alert_id', 'customer_id', 'machine_id', 'action', 'mode', 'state', 'evidence', 'revisions', 'reason', 'created_at', 'canary_started_at', 'decided_at', 'decided_by', 'updated_at'],
  properties: {
    id: { type: 'integer' },
    rule_id: { type: 'string' },
    alert_id: { type: 'string' },
    customer_id: { type: ['string', 'null'] },
    machine_id: { type: 'string' },
    action: ACTION_SCHEMA,
    mode: { enum: ['propose', 'auto'] },
    state: { enum: [...DECISION_STATES] },
    evidence: { type: 'object', description: 'The alert (id, title, level, group, first/last event) and its events: `refs` and per-selector `counts`.' },
    revisions: { type: 'array', items: REVISION_SCHEMA },
    reason: { type: ['string', 'null'], description: 'Why it is held, promoted, rolled back, failed or rejected.' },
    created_at: { type: 'string' },
    canary_started_at: { type: ['string', 'null'] },
    decided_at: { type: ['string', 'null'] },
    decided_by: { type: ['string', 'null'], description: 'The approving or rejecting key, or guard-rails (mode auto).' },
    updated_at: { type: 'string' },
  },
} as const;

const EXAMPLE = {
  id: 12,
  rule_id: 'exposed-critical-egress-burst',
  alert_id: '0b7e4f1e-9f6c-4d7a-8c0e-2f9d1d7b1a11',
  customer_id: 'c0ffee00-0000-4000-8000-000000000001',
  machine_id: '3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10',
  action: { type: 'quarantine', allow: [{ cidr: '10.0.0.5/32', proto: 'tcp', port: 22, direction: 'ingress' }] },
  mode: 'auto',
  state: 'promoted',
  evidence: { alert: { id: '0b7e4f1e-9f6c-4d7a-8c0e-2f9d1d7b1a11', level: 'critical' }, refs: ['finding:3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10/DEBIAN-CVE-2024-6387/openssh-server', 'f:812'], counts: [1, 21] },
  revisions: [{ service_id: 7, revision: 4, prior_revision: 3, restored_by: null }],
  reason: 'every target acked the canary without errors; no would-drop outside the quarantine intent in 300 s',
  created_at: '2026-01-01T00:05:10.000Z',
  canary_started_at: '2026-01-01T00:05:10.000Z',
  decided_at: '2026-01-01T00:05:10.000Z',
  decided_by: 'guard-rails',
  updated_at: '2026-01-01T00:10:12.000Z',
};

const QUERY_DOC: QueryParamDoc[] = [
  { name: 'state', description: `Only decisions in this state (${DECISION_STATES.join(', ')}).`, schema: { type: 'string', enum: [...DECISION_STATES] } },
  { name: 'machine', description: 'Only this machine\'s decisions.', schema: { type: 'string', format: 'uuid' } },
  { name: 'rule', description: 'Only this rule\'s decisions.', schema: { type: 'string', maxLength: 64 } },
  { name: 'limit', description: 'At most this many (1 to 500, default 50), newest first.', schema: { type: 'integer', minimum: 1, maximum: 500 } },
  { name: 'cursor', description: 'next_cursor of the previous page.', schema: { type: 'string', maxLength: 256 } },
];
const PARAMS = new Set(QUERY_DOC.map((q) => q.name));

function queryOf(query: URLSearchParams): Omit<DecisionQuery, 'customer'> {
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!PARAMS.has(name)) problems.push({ path: name, message: `is not a parameter of this route (${[...PARAMS].join(', ')})` });
    else if (seen.has(name)) problems.push({ path: name, message: 'is given more than once' });
    seen.add(name);
  }
  const q: Omit<DecisionQuery, 'customer'> = { limit: 50 };
  const state = query.get('state');
  if (state !== null) {
    if ((DECISION_STATES as readonly string[]).includes(state)) q.state = state as DecisionState;
    else problems.push({ path: 'state', message: `must be one of ${DECISION_STATES.join(', ')}` });
  }
  const machine = query.get('machine');
  if (machine !== null) {
    if (isMachineId(machine)) q.machine = machine;
    else problems.push({ path: 'machine', message: 'must be a machine id' });
  }
  const rule = query.get('rule');
  if (rule !== null) {
    if (/^[a-z0-9][a-z0-9_.-]{0,63}$/.test(rule)) q.rule = rule;
    else problems.push({ path: 'rule', message: 'must be a rule id' });
  }
  const limit = query.get('limit');
  if (limit !== null) {
    if (/^\d{1,3}$/.test(limit) && Number(limit) >= 1 && Number(limit) <= 500) q.limit = Number(limit);
    else problems.push({ path: 'limit', message: 'must be an integer from 1 to 500' });
  }
  const cursor = query.get('cursor');
  if (cursor !== null) {
    try {
      q.cursor = Decisions.decodeCursor(cursor);
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      problems.push(...e.problems);
    }
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return q;
}

function idParam(text: string): number {
  if (!/^[1-9]\d{0,14}$/.test(text)) throw new ValidationError([{ path: 'id', message: 'must be a decision id (a positive integer)' }]);
  return Number(text);
}

const approveBody = validator<Record<string, never>>({ type: 'object', additionalProperties: false, properties: {} });
const rejectBody = validator<{ reason?: string }>({ type: 'object', additionalProperties: false, properties: { reason: { type: 'string', minLength: 1, maxLength: 500 } } });

export interface DecisionRouteDeps {
  apiKeys: ApiKeys;
  tenancy: Tenancy;
  decisions: Decisions;
}

export function addDecisionRoutes(r: Router, d: DecisionRouteDeps): void {
  r.add('GET', '/api/v1/decisions', async (req) => {
    const p = await authorize(d.apiKeys, req, 'decisions:read');
    const q = queryOf(req.query);
    if (q.machine !== undefined) await d.tenancy.assertMachine(p, q.machine);
    return { status: 200, body: await d.decisions.list({ ...q, customer: scopeOf(p) }) };
  }, {
    doc: {
      summary: 'Decisions of rules with an action, newest first',
      description: 'A key limited to one customer sees its customer\'s decisions only (another\'s machine is NOT_FOUND). Paged by cursor; unknown or repeated parameters are refused.',
      tag: 'decisions',
      auth: { kind: 'api_key', scope: 'decisions:read' },
      query: QUERY_DOC,
      responses: { 200: { description: 'A page of decisions.', schema: { type: 'object', additionalProperties: false, required: ['items', 'next_cursor'], properties: { items: { type: 'array', items: DECISION_SCHEMA }, next_cursor: { type: ['string', 'null'] } } }, example: { items: [EXAMPLE], next_cursor: null } } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add('GET', '/api/v1/decisions/:id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'decisions:read');
    return { status: 200, body: await d.decisions.get(idParam(req.params.id!), scopeOf(p)) };
  }, {
    doc: {
      summary: 'One decision, with its evidence and the revisions it produced',
      tag: 'decisions',
      auth: { kind: 'api_key', scope: 'decisions:read' },
      responses: { 200: { description: 'The decision.', schema: DECISION_SCHEMA, example: EXAMPLE } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add('POST', '/api/v1/decisions/:id/approve', async (req) => {
    const p = await authorize(d.apiKeys, req, 'decisions:write');
    const id = idParam(req.params.id!);
    if (req.body !== null && req.body !== undefined) approveBody(req.body);
    return { status: 200, body: await d.decisions.approve(id, scopeOf(p), actorOf(p), req.clientIp) };
  }, {
    doc: {
      summary: 'Approve a decision',
      description: 'A proposed decision submits its snapshots as canaries (state canary); the guard rails promote them after AEGIS_DECISION_CANARY_SECONDS. Approving a canary promotes it now (refused when a target reported an error). Anything else is a CONFLICT.',
      tag: 'decisions',
      auth: { kind: 'api_key', scope: 'decisions:write' },
      request: { schema: approveBody.schema, example: {}, required: false },
      responses: { 200: { description: 'The decision after approval.', schema: DECISION_SCHEMA, example: { ...EXAMPLE, mode: 'propose', state: 'canary', reason: null, decided_by: 'api_key:ops' } } },
      errors: ['NOT_FOUND', 'CONFLICT'],
    },
  });
  r.add('POST', '/api/v1/decisions/:id/reject', async (req) => {
    const p = await authorize(d.apiKeys, req, 'decisions:write');
    const id = idParam(req.params.id!);
    const body = req.body === null || req.body === undefined ? {} : rejectBody(req.body);
    return { status: 200, body: await d.decisions.reject(id, scopeOf(p), actorOf(p), body.reason, req.clientIp) };
  }, {
    doc: {
      summary: 'Reject a decision',
      description: 'A proposed decision is closed (rejected); an approved, canary or promoted one is rolled back: what the machine ran before is restored through the orchestrator as a new, higher revision (rolled_back). Anything else is a CONFLICT.',
      tag: 'decisions',
      auth: { kind: 'api_key', scope: 'decisions:write' },
      request: { schema: rejectBody.schema, example: { reason: 'false positive: a backup job' }, required: false },
      responses: { 200: { description: 'The decision after rejection.', schema: DECISION_SCHEMA, example: { ...EXAMPLE, state: 'rolled_back', reason: 'false positive: a backup job', decided_by: 'api_key:ops', revisions: [{ service_id: 7, revision: 4, prior_revision: 3, restored_by: 5 }] } } },
      errors: ['NOT_FOUND', 'CONFLICT'],
    },
  });
}
