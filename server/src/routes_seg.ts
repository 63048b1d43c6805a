/**
 * Segmentation routes: the orchestrator (/seg/maps, also under /api/v1), agent
 * visibility, and the HTTP fallback that serves a host the same signed snapshot messages
 * NATS carries.
 */
import { AegisError, ValidationError, type AgentSnapshotsResponse, type Stage } from '../../protocol/src/index.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { actorOf, authorize } from './http/auth.js';
import type { Request, Router } from './http/router.js';
import type { MachineLifecycle } from './machine_lifecycle.js';
import type { AgentRegistry } from './rollout/agents.js';
import { parseTargets, type Orchestrator } from './rollout/orchestrator.js';
import { validator } from './validation.js';
import { Tenancy } from './tenancy.js';
import { plan, propose } from './proposer/index.js';

export interface SegRouteDeps {
  apiKeys: ApiKeys;
  audit: AuditLog;
  orchestrator: Orchestrator;
  agents: AgentRegistry;
  /** Authenticates the snapshot fallback's host proof against the host's machine. */
  lifecycle: MachineLifecycle;
  /** What an API key limited to one customer may see and target. */
  tenancy: Tenancy;
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

/** A full service (131,072 rules) is about 6 MiB of JSON; the default 1 MiB is too small. */
export const MAX_SNAPSHOT_BODY_BYTES = 16 * 1024 * 1024;

function serviceIdParam(text: string): number {
  if (!/^\d{1,9}$/.test(text)) throw new ValidationError([{ path: 'service_id', message: 'must be a non-negative integer' }]);
  return Number(text);
}

export function addSegRoutes(r: Router, d: SegRouteDeps): void {
  const { orchestrator, agents, audit, tenancy } = d;
  /** A service's current targets must all be the key's own hosts (unrestricted: any). */
  const assertService = async (p: Parameters<Tenancy['assertService']>[0], serviceId: number) =>
    tenancy.assertService(p, serviceId, await orchestrator.currentTargets(serviceId));

  for (const base of ['/seg/maps', '/api/v1/seg/maps']) {
    r.add('POST', base, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:write');
      const stageParam = req.query.get('stage');
      if (stageParam !== null && stageParam !== 'canary' && stageParam !== 'enforce') {
        throw new ValidationError([{ path: 'stage', message: 'must be canary or enforce' }]);
      }
      const targets = parseTargets(req.query.get('target_host'));
      await tenancy.assertTargets(p, targets);
      const result = await orchestrator.submit(req.body, {
        targets,
        ...(stageParam ? { stage: stageParam as Stage } : {}),
        actor: actorOf(p),
      });
      await audit.record({
        event_type: 'seg.map.accepted',
        actor: actorOf(p),
        client_ip: req.clientIp,
        data: { service_id: result.service_id, revision: result.revision, stage: result.stage, targets: result.target_hosts },
      });
      return { status: 200, body: result };
    }, { maxBody: MAX_SNAPSHOT_BODY_BYTES });
    r.add('GET', base, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:read');
      const own = await tenancy.hostsOf(p);
      const current = (await orchestrator.current()).filter((c) => Tenancy.visible(own, c.target));
      const hosts = (await agents.list()).filter((h) => Tenancy.visible(own, h.host));
      return {
        status: 200,
        body: {
          current,
          hosts: hosts.map((h) => ({ host: h.host, last_seen_at: h.last_seen_at, applied: h.applied })),
        },
      };
    });
    r.add('GET', `${base}/:service_id`, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:read');
      const serviceId = serviceIdParam(req.params.service_id!);
      await assertService(p, serviceId);
      return { status: 200, body: { service_id: serviceId, revisions: await orchestrator.history(serviceId) } };
    });
    r.add('POST', `${base}/promote`, async (req) => {
      const p = await authorize(d.apiKeys, req, 'seg:write');
      const { service_id, revision } = promoteBody(req.body);
      await assertService(p, service_id);
      const rev = await orchestrator.promote(service_id, revision);
      await audit.record({ event_type: 'seg.map.promoted', actor: actorOf(p), client_ip: req.clientIp, data: { service_id, revision: rev.revision } });
      return { status: 200, body: { promoted: true, service_id, revision: rev.revision, stage: rev.stage, target_hosts: rev.targets } };
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
        body: { rolled_back: rev.rolled_back, restores_revision: rev.restores_revision, revision: rev.revision, stage: rev.stage, service_id, target_hosts: rev.targets },
      };
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
          const { from_agents: _f, flows: given, ...rest } = body;
          if (given !== undefined) throw new ValidationError([{ path: '/flows', message: 'give flows or from_agents, not both' }]);
          if (!Number.isInteger(rest.service_id)) throw new ValidationError([{ path: '/service_id', message: 'is required with from_agents' }]);
          const flows = await agents.flows(rest.service_id as number, await tenancy.hostsOf(p));
          return { status: 200, body: { ...propose({ ...rest, flows }), source: 'agents' } };
        }
        return { status: 200, body: propose(body) };
      },
      { maxBody: MAX_SNAPSHOT_BODY_BYTES },
    );
    r.add(
      'POST',
      `${base}/plan`,
      async (req) => {
        await authorize(d.apiKeys, req, 'seg:read');
        return { status: 200, body: plan(req.body) };
      },
      { maxBody: MAX_SNAPSHOT_BODY_BYTES },
    );
  }

  r.add('GET', '/api/v1/agents', async (req) => {
    const p = await authorize(d.apiKeys, req, 'seg:read');
    const own = await tenancy.hostsOf(p);
    return { status: 200, body: { items: (await agents.list()).filter((a) => Tenancy.visible(own, a.host)) } };
  });
  r.add('GET', '/api/v1/agents/:host', async (req) => {
    const p = await authorize(d.apiKeys, req, 'seg:read');
    const host = req.params.host!;
    if (!Tenancy.visible(await tenancy.hostsOf(p), host)) throw new AegisError('NOT_FOUND', `no agent ${host} has reported`);
    return { status: 200, body: await agents.get(host) };
  });

  /**
   * The HTTP fallback: a host proves itself with its host key (header X-Aegis-Proof,
   * audience aegis-snapshots) and gets the same signed messages NATS would deliver.
   */
  r.add('GET', '/api/v1/agents/:host/snapshots', async (req: Request) => {
    const host = req.params.host!;
    const proof = req.headers['x-aegis-proof'];
    if (typeof proof !== 'string') throw new AegisError('UNAUTHORIZED', 'a host-key proof is required (X-Aegis-Proof)');
    await d.lifecycle.authenticateSnapshotHost(host, proof);
    const body: AgentSnapshotsResponse = { host, messages: await orchestrator.messagesFor(host) };
    return { status: 200, body };
  });
}
