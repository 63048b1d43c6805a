/**
 * Segmentation routes: the orchestrator (/seg/maps, also under /api/v1), agent
 * visibility, and the HTTP fallback that serves a host the same signed snapshot messages
 * NATS carries.
 */
import { AGENT_SNAPSHOTS_SCHEMA, AUD_SNAPSHOTS_PROOF, AegisError, FLOW_LOG_VERDICTS, FLOW_REASONS, isMachineId, MAP_SNAPSHOT_SCHEMA, ValidationError, type AgentSnapshotsResponse, type FieldProblem, type FlowLogVerdict, type Stage } from '../../protocol/src/index.js';
import { AGENT_VIEW_SCHEMA, segView } from './api_schemas.js';
import type { QueryParamDoc } from './http/route_doc.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { actorOf, authorize } from './http/auth.js';
import type { Request, Router } from './http/router.js';
import type { MachineLifecycle } from './machine_lifecycle.js';
import type { AgentRegistry } from './rollout/agents.js';
import { decodeFlowCursor, DEFAULT_FLOW_QUERY_LIMIT, MAX_FLOW_QUERY_LIMIT, type FlowLog, type FlowQuery } from './rollout/flow_log.js';
import { parseDateTime } from './rollout/flow_report.js';
import type { Orchestrator } from './rollout/orchestrator.js';
import { parseTargetQuery, type TargetResolver } from './rollout/targets.js';
import { scopeOf } from './tenancy.js';
import { validator } from './validation.js';
import { Tenancy } from './tenancy.js';
import { plan, propose } from './proposer/index.js';

export interface SegRouteDeps {
  apiKeys: ApiKeys;
  audit: AuditLog;
  orchestrator: Orchestrator;
  agents: AgentRegistry;
  flowLog: FlowLog;
  /** Authenticates the snapshot fallback's host proof against the host's machine. */
  lifecycle: MachineLifecycle;
  /** What an API key limited to one customer may see and target. */
  tenancy: Tenancy;
  /** Hostnames and machine ids in a snapshot's query → the machines it is for. */
  targets: TargetResolver;
}

const promoteBody = validator<{ service_id: number; revision?: number }>({
  type: 'object',
  additionalProperties: false,
  required: ['service_id'],
  properties: { service_id: { type: 'integer', minimum: 0 }, revision: { type: 'integer', minimum: 1 } },
});
const rollbackBody = validator<{ service_id: number }>({
  type: 'object',
  additionalProperties: false,
  required: ['service_id'],
  properties: { service_id: { type: 'integer', minimum: 0 } },
});

const TARGET_QUERY: QueryParamDoc[] = [
  { name: 'stage', description: 'canary (default) or enforce.', schema: { type: 'string', enum: ['canary', 'enforce'] } },
  { name: 'target_host', description: 'Comma-separated hostnames of activated machines.', schema: { type: 'string', maxLength: 1024 } },
  { name: 'target_machine', description: 'Comma-separated machine ids.', schema: { type: 'string', maxLength: 1024 } },
];
const revisionSchema = segView({ service_id: { type: 'integer' }, revision: { type: 'integer' }, stage: { type: 'string' }, target_machines: { type: 'array', items: { type: 'string' } } }, 'A revision of a service map and the machines it targets.');
const mapBody = { ...MAP_SNAPSHOT_SCHEMA, description: 'A MapSnapshot; `stage` may ride in the body too.' };

/** A full service (131,072 rules) is about 6 MiB of JSON; the default 1 MiB is too small. */
export const MAX_SNAPSHOT_BODY_BYTES = 16 * 1024 * 1024;

function serviceIdParam(text: string): number {
  if (!/^\d{1,9}$/.test(text)) throw new ValidationError([{ path: 'service_id', message: 'must be a non-negative integer' }]);
  return Number(text);
}

const FLOW_QUERY_PARAMS = new Set(['machine', 'service_id', 'verdict', 'direction', 'since', 'until', 'limit', 'cursor']);

/** A date-time query parameter or body field, normalised to the stored ISO form; else a problem at `path`. */
function dateTimeParam(text: unknown, path: string, problems: FieldProblem[]): string | undefined {
  const ms = parseDateTime(text);
  if (ms === null) {
    problems.push({ path, message: 'must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z' });
    return undefined;
  }
  return new Date(ms).toISOString();
}

/** GET /api/v1/flows parameters (everything but tenancy). Unknown or repeated parameters are refused, not ignored. */
function flowQueryOf(query: URLSearchParams): Omit<FlowQuery, 'machines'> {
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!FLOW_QUERY_PARAMS.has(name)) problems.push({ path: name, message: `is not a parameter of this route (${[...FLOW_QUERY_PARAMS].join(', ')})` });
    else if (seen.has(name)) problems.push({ path: name, message: 'is given more than once' });
    seen.add(name);
  }
  const q: Omit<FlowQuery, 'machines'> = { limit: DEFAULT_FLOW_QUERY_LIMIT };
  const get = (name: string) => (FLOW_QUERY_PARAMS.has(name) ? query.get(name) : null);
  const machine = get('machine');
  if (machine !== null) {
    if (isMachineId(machine)) q.machine = machine;
    else problems.push({ path: 'machine', message: 'must be a machine id' });
  }
  const service = get('service_id');
  if (service !== null) {
    if (/^\d{1,10}$/.test(service) && Number(service) <= 2_147_483_647) q.service_id = Number(service);
    else problems.push({ path: 'service_id', message: 'must be an integer from 0 to 2147483647' });
  }
  const verdict = get('verdict');
  if (verdict !== null) {
    const list = verdict.split(',');
    if (list.every((v) => (FLOW_LOG_VERDICTS as readonly string[]).includes(v))) q.verdicts = list as FlowLogVerdict[];
    else problems.push({ path: 'verdict', message: `must be one or more (comma-separated) of ${FLOW_LOG_VERDICTS.join(', ')}` });
  }
  const direction = get('direction');
  if (direction !== null) {
    if (direction === 'egress' || direction === 'ingress') q.direction = direction;
    else problems.push({ path: 'direction', message: 'must be egress or ingress' });
  }
  const since = get('since');
  if (since !== null) q.since = dateTimeParam(since, 'since', problems);
  const until = get('until');
  if (until !== null) q.until = dateTimeParam(until, 'until', problems);
  if (q.since !== undefined && q.until !== undefined && q.since > q.until) problems.push({ path: 'until', message: 'must not be before since' });
  const limit = get('limit');
  if (limit !== null) {
    if (/^\d{1,4}$/.test(limit) && Number(limit) >= 1 && Number(limit) <= MAX_FLOW_QUERY_LIMIT) q.limit = Number(limit);
    else problems.push({ path: 'limit', message: `must be an integer from 1 to ${MAX_FLOW_QUERY_LIMIT}` });
  }
  const cursor = get('cursor');
  if (cursor !== null) {
    try {
      q.cursor = decodeFlowCursor(cursor);
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      problems.push(...e.problems);
    }
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return q;
}

/** The query of GET /api/v1/flows, as flowQueryOf reads it. */
const FLOW_QUERY_DOC: QueryParamDoc[] = [
  { name: 'machine', description: 'Only this machine\'s reports (a machine id).', schema: { type: 'string', format: 'uuid' } },
  { name: 'service_id', description: 'Only this service.', schema: { type: 'integer', minimum: 0, maximum: 2147483647 } },
  { name: 'verdict', description: `One or more (comma-separated) of ${FLOW_LOG_VERDICTS.join(', ')}.`, schema: { type: 'string', maxLength: 64 } },
  { name: 'direction', description: 'egress or ingress.', schema: { type: 'string', enum: ['egress', 'ingress'] } },
  { name: 'since', description: 'Received at or after (ISO 8601).', schema: { type: 'string', format: 'date-time' } },
  { name: 'until', description: 'Received at or before (ISO 8601).', schema: { type: 'string', format: 'date-time' } },
  { name: 'limit', description: `At most this many rows (default ${DEFAULT_FLOW_QUERY_LIMIT}).`, schema: { type: 'integer', minimum: 1, maximum: MAX_FLOW_QUERY_LIMIT } },
  { name: 'cursor', description: 'next_cursor of the previous page.', schema: { type: 'string', maxLength: 256 } },
];

const FLOW_ENTRY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'machine_id', 'service_id', 'revision', 'direction', 'verdict', 'proto', 'remote', 'port', 'rule', 'reason', 'count', 'interval', 'received_at'],
  properties: {
    id: { type: 'integer' },
    machine_id: { type: 'string' },
    service_id: { type: 'integer' },
    revision: { type: ['integer', 'null'] },
    direction: { type: 'string', enum: ['egress', 'ingress'] },
    verdict: { type: 'string', enum: [...FLOW_LOG_VERDICTS] },
    proto: { oneOf: [{ type: 'string', enum: ['tcp', 'udp', 'icmp'] }, { type: 'integer', minimum: 0, maximum: 255 }] },
    remote: { type: 'string' },
    port: { type: 'integer', minimum: 0, maximum: 65535 },
    rule: { type: ['integer', 'null'], description: 'Index of the deciding entry in the snapshot\'s edges (egress) or allow_cidrs (ingress); null: no rule.' },
    reason: { type: ['string', 'null'], enum: [...FLOW_REASONS, null] },
    count: { type: 'integer', minimum: 1 },
    interval: { type: 'object', additionalProperties: false, required: ['start', 'end'], properties: { start: { type: 'string' }, end: { type: 'string' } } },
    received_at: { type: 'string' },
  },
} as const;

const FLOW_PAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items', 'next_cursor'],
  properties: { items: { type: 'array', items: FLOW_ENTRY_SCHEMA }, next_cursor: { type: ['string', 'null'] } },
} as const;

export function addSegRoutes(r: Router, d: SegRouteDeps): void {
  const { orchestrator, agents, audit, tenancy, flowLog } = d;
  /** A revision's targets as the API shows them: machine ids, and their hostnames as labels. */
  const shown = async (targets: string[]) => ({ target_machines: targets, target_hosts: await d.targets.labels(targets) });
  /** A service's current targets must all be the key's own machines (unrestricted: any). */
  const assertService = async (p: Parameters<Tenancy['assertService']>[0], serviceId: number) =>
    tenancy.assertService(p, serviceId, await orchestrator.currentTargets(serviceId));

  for (const base of ['/seg/maps', '/api/v1/seg/maps']) {
    r.add('POST', base, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:write');
      const stageParam = req.query.get('stage');
      if (stageParam !== null && stageParam !== 'canary' && stageParam !== 'enforce') {
        throw new ValidationError([{ path: 'stage', message: 'must be canary or enforce' }]);
      }
      const query = parseTargetQuery(req.query.get('target_host'), req.query.get('target_machine'));
      if (query === null) tenancy.assertMayTargetEveryHost(p);
      const targets = await d.targets.resolve(query, scopeOf(p));
      const { targets: _t, ...submitted } = await orchestrator.submit(req.body, {
        targets,
        ...(stageParam ? { stage: stageParam as Stage } : {}),
        actor: actorOf(p),
      });
      const result = { ...submitted, ...(await shown(targets)) };
      await audit.record({
        event_type: 'seg.map.accepted',
        actor: actorOf(p),
        client_ip: req.clientIp,
        data: { service_id: result.service_id, revision: result.revision, stage: result.stage, targets: result.target_machines, hosts: result.target_hosts },
      });
      return { status: 200, body: result };
    }, {
      maxBody: MAX_SNAPSHOT_BODY_BYTES,
      doc: {
        summary: 'Submit a service map (a new revision)',
        description: 'Without target_host/target_machine it targets every host, which a key limited to one customer may not do.',
        tag: 'segmentation',
        auth: { kind: 'api_key', scope: 'seg:write' },
        query: TARGET_QUERY,
        request: { schema: mapBody },
        responses: { 200: { description: 'The accepted revision.', schema: revisionSchema } },
        errors: ['NOT_FOUND', 'CONFLICT'],
      },
    });
    r.add('GET', base, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:read');
      const own = await tenancy.machinesOf(p);
      const current = (await orchestrator.current()).filter((c) => Tenancy.visible(own, c.target));
      const labels = await d.targets.labels(current.map((c) => c.target));
      const hosts = await agents.list(own);
      return {
        status: 200,
        body: {
          current: current.map((c, i) => ({ ...c, host: labels[i] })),
          hosts: hosts.map((h) => ({ machine_id: h.machine_id, host: h.host, last_seen_at: h.last_seen_at, applied: h.applied })),
        },
      };
    }, {
      doc: {
        summary: 'Current revisions and what each host applied',
        tag: 'segmentation',
        auth: { kind: 'api_key', scope: 'seg:read' },
        responses: { 200: { description: 'Current revisions and host states.', schema: segView({ current: { type: 'array' }, hosts: { type: 'array' } }, 'Current revisions and host states.') } },
      },
    });
    r.add('GET', `${base}/:service_id`, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:read');
      const serviceId = serviceIdParam(req.params.service_id!);
      await assertService(p, serviceId);
      return { status: 200, body: { service_id: serviceId, revisions: await orchestrator.history(serviceId) } };
    }, {
      doc: {
        summary: 'Revision history of a service',
        tag: 'segmentation',
        auth: { kind: 'api_key', scope: 'seg:read' },
        responses: { 200: { description: 'Its revisions.', schema: segView({ service_id: { type: 'integer' }, revisions: { type: 'array' } }, 'A service and its revisions.') } },
        errors: ['NOT_FOUND'],
      },
    });
    r.add('POST', `${base}/promote`, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:write');
      const { service_id, revision } = promoteBody(req.body);
      await assertService(p, service_id);
      const rev = await orchestrator.promote(service_id, revision);
      await audit.record({ event_type: 'seg.map.promoted', actor: actorOf(p), client_ip: req.clientIp, data: { service_id, revision: rev.revision } });
      return { status: 200, body: { promoted: true, service_id, revision: rev.revision, stage: rev.stage, ...(await shown(rev.targets)) } };
    }, {
      doc: {
        summary: 'Promote a canary revision to enforce',
        tag: 'segmentation',
        auth: { kind: 'api_key', scope: 'seg:write' },
        request: { schema: promoteBody.schema, example: { service_id: 7, revision: 2 } },
        responses: { 200: { description: 'The promoted revision.', schema: revisionSchema } },
        errors: ['NOT_FOUND', 'CONFLICT'],
      },
    });
    r.add('POST', `${base}/rollback`, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:write');
      const { service_id } = rollbackBody(req.body);
      await assertService(p, service_id);
      const rev = await orchestrator.rollback(service_id, actorOf(p));
      await audit.record({
        event_type: 'seg.map.rolled_back',
        actor: actorOf(p),
        client_ip: req.clientIp,
        data: { service_id, rolled_back: rev.rolled_back, restores_revision: rev.restores_revision, revision: rev.revision },
      });
      return {
        status: 200,
        body: { rolled_back: rev.rolled_back, restores_revision: rev.restores_revision, revision: rev.revision, stage: rev.stage, service_id, ...(await shown(rev.targets)) },
      };
    }, {
      doc: {
        summary: 'Roll a service back to its previous revision',
        tag: 'segmentation',
        auth: { kind: 'api_key', scope: 'seg:write' },
        request: { schema: rollbackBody.schema, example: { service_id: 7 } },
        responses: { 200: { description: 'The revision that restores the previous one.', schema: revisionSchema } },
        errors: ['NOT_FOUND', 'CONFLICT'],
      },
    });
  }

  // The segmenter: flows in, a proposal out; a proposal in, a MapSnapshot out.
  for (const base of ['/segment', '/api/v1/segment']) {
    r.add(
      'POST',
      `${base}/propose`,
      async (req) => {
        const p = await authorize(d.apiKeys, req, 'seg:read');
        const body = req.body as Record<string, unknown> | null;
        if (body !== null && typeof body === 'object' && body.from_agents === true) {
          const { from_agents: _f, flows: given, since: sinceField, ...rest } = body;
          if (given !== undefined) throw new ValidationError([{ path: '/flows', message: 'give flows or from_agents, not both' }]);
          if (!Number.isInteger(rest.service_id)) throw new ValidationError([{ path: '/service_id', message: 'is required with from_agents' }]);
          const problems: FieldProblem[] = [];
          const since = sinceField === undefined ? undefined : dateTimeParam(sinceField, '/since', problems);
          if (problems.length > 0) throw new ValidationError(problems);
          const flows = await flowLog.deniedEgress(rest.service_id as number, await tenancy.machinesOf(p), since);
          return { status: 200, body: { ...propose({ ...rest, flows }), source: 'agents' } };
        }
        return { status: 200, body: propose(body) };
      },
      {
        maxBody: MAX_SNAPSHOT_BODY_BYTES,
        doc: {
          summary: 'Propose a segmentation from observed flows',
          description: 'Give `flows`, or `from_agents: true` and a `service_id` to use what the agents reported.',
          tag: 'segmentation',
          auth: { kind: 'api_key', scope: 'seg:read' },
          request: { schema: { type: 'object', description: 'A flow set: { service_id, flows: [...] } or { service_id, from_agents: true }.' } },
          responses: { 200: { description: 'A proposal to review and plan.', schema: { type: 'object' } } },
        },
      },
    );
    r.add(
      'POST',
      `${base}/plan`,
      async (req) => {
        await authorize(d.apiKeys, req, 'seg:read');
        return { status: 200, body: plan(req.body) };
      },
      {
        maxBody: MAX_SNAPSHOT_BODY_BYTES,
        doc: {
          summary: 'Turn a reviewed proposal into a MapSnapshot',
          tag: 'segmentation',
          auth: { kind: 'api_key', scope: 'seg:read' },
          request: { schema: { type: 'object', required: ['proposal'], description: '{ "proposal": {...} } as /propose answered it, possibly edited.' } },
          responses: { 200: { description: 'A MapSnapshot to submit.', schema: MAP_SNAPSHOT_SCHEMA } },
        },
      },
    );
  }

  r.add('GET', '/api/v1/agents', async (req) => {
    const p = await authorize(d.apiKeys, req, 'seg:read');
    return { status: 200, body: { items: await agents.list(await tenancy.machinesOf(p)) } };
  }, {
    doc: {
      summary: 'Agents that have reported',
      tag: 'segmentation',
      auth: { kind: 'api_key', scope: 'seg:read' },
      responses: { 200: { description: 'Their last reports.', schema: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: AGENT_VIEW_SCHEMA } } } } },
    },
  });
  r.add('GET', '/api/v1/agents/:machine_id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'seg:read');
    const machineId = req.params.machine_id!;
    if (!Tenancy.visible(await tenancy.machinesOf(p), machineId)) throw new AegisError('NOT_FOUND', `no agent of machine ${machineId} has reported`);
    return { status: 200, body: await agents.get(machineId) };
  }, {
    doc: {
      summary: 'One machine\'s agent report',
      tag: 'segmentation',
      auth: { kind: 'api_key', scope: 'seg:read' },
      responses: { 200: { description: 'Its last report.', schema: AGENT_VIEW_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });
  /** Denied egress reported for a service, per reporting machine (what the segmenter's from_agents sums). */
  r.add('GET', '/api/v1/seg/flows/:service_id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'seg:read');
    const serviceId = serviceIdParam(req.params.service_id!);
    return { status: 200, body: { service_id: serviceId, items: await flowLog.deniedEgressByMachine(serviceId, await tenancy.machinesOf(p)) } };
  }, {
    doc: {
      summary: 'Denied egress agents reported for a service, per machine',
      tag: 'segmentation',
      auth: { kind: 'api_key', scope: 'seg:read' },
      responses: { 200: { description: 'The flows.', schema: segView({ service_id: { type: 'integer' }, items: { type: 'array' } }, 'Denied egress per reporting machine.') } },
    },
  });
  /** The flow log, newest first: another customer's machine is the unknown-machine 404, and never listed. */
  r.add('GET', '/api/v1/flows', async (req) => {
    const p = await authorize(d.apiKeys, req, 'seg:read');
    const q = flowQueryOf(req.query);
    if (q.machine !== undefined) await tenancy.assertMachine(p, q.machine);
    return { status: 200, body: await flowLog.query({ ...q, machines: await tenancy.machinesOf(p) }) };
  }, {
    doc: {
      summary: 'The flow log',
      description: 'What agents reported their datapath decided, newest first (by when the server received it), paged by cursor.',
      tag: 'segmentation',
      auth: { kind: 'api_key', scope: 'seg:read' },
      query: FLOW_QUERY_DOC,
      responses: { 200: { description: 'A page of the flow log.', schema: FLOW_PAGE_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });

  /**
   * The HTTP fallback: the machine proves itself with its host key (header X-Aegis-Proof,
   * audience aegis-snapshots) and gets the same signed messages NATS would deliver to it.
   * The path names the machine by id: a hostname names nothing a host cannot also claim.
   */
  r.add('GET', '/api/v1/machines/:id/snapshots', async (req: Request) => {
    const machineId = req.params.id!;
    const proof = req.headers['x-aegis-proof'];
    if (typeof proof !== 'string') throw new AegisError('UNAUTHORIZED', 'a host-key proof is required (X-Aegis-Proof)');
    await d.lifecycle.authenticateSnapshotMachine(machineId, proof);
    const body: AgentSnapshotsResponse = { machine_id: machineId, messages: await orchestrator.messagesFor(machineId) };
    return { status: 200, body };
  }, {
    doc: {
      summary: 'The signed segmentation messages for a machine (HTTP fallback)',
      tag: 'segmentation',
      auth: { kind: 'host_proof_header', audience: AUD_SNAPSHOTS_PROOF },
      responses: { 200: { description: 'The same signed messages NATS delivers.', schema: AGENT_SNAPSHOTS_SCHEMA } },
      errors: ['PROOF_INVALID', 'PROOF_REPLAYED', 'NOT_FOUND', 'MACHINE_DEACTIVATED'],
    },
  });
}
