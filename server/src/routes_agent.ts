/**
 * Agent endpoints (seed 004, issue 7). On the mTLS agent listener every request carries a
 * client certificate the handshake verified against the Aegis CA; here its serial is
 * checked against the server's records (revoked, expired, deactivated machine: 401), and
 * every endpoint but the token endpoint wants a single-use scoped access token bound to
 * that certificate (401 without one or on replay, 403 without the scope).
 *
 * Without mTLS (ENABLE_MTLS off) the same routes sit on the main listener: the token
 * endpoint then takes a host-key proof and its tokens are unbound.
 */
import { AegisError, type Ed25519PublicJwk } from '../../protocol/src/index.js';
import { AGENT_API, AUD_AGENT_TOKEN_PROOF, type AgentScope } from '../../protocol/src/agent_access.js';
import type { Activations } from './activations.js';
import { requestedScopes, type AgentTokens } from './agent_tokens.js';
import type { AuditLog } from './audit.js';
import type { ServerContext } from './context.js';
import { NOT_FOUND_MESSAGE } from './customers.js';
import { acceptProof, publicKeyFromJwk } from './host_proof.js';
import type { Reply, Request, Router } from './http/router.js';
import { machineIdOfSpiffe } from './pki/authority.js';
import type { CertifiableKey, CertificateIssuer } from './pki/issuer.js';
import type { CertifiedPeer, MachineCertificates } from './pki/machine_certs.js';
import type { AgentRegistry } from './seg/agents.js';
import type { Orchestrator } from './seg/orchestrator.js';
import { validator } from './validation.js';

export interface AgentRouteDeps {
  ctx: ServerContext;
  activations: Activations;
  agentTokens: AgentTokens;
  certs: MachineCertificates;
  issuer: CertificateIssuer | null;
  orchestrator: Orchestrator;
  agents: AgentRegistry;
  audit: AuditLog;
  /** True on the mTLS listener: a request without a verified client certificate is refused. */
  requireMtls: boolean;
}

const tokenBody = validator<{ scope?: string | string[]; machine_id?: string; proof?: string }>({
  type: 'object',
  additionalProperties: false,
  properties: {
    scope: { anyOf: [{ type: 'string', maxLength: 512 }, { type: 'array', maxItems: 16, items: { type: 'string', maxLength: 64 } }] },
    machine_id: { type: 'string', minLength: 1, maxLength: 64 },
    proof: { type: 'string', minLength: 1, maxLength: 4096 },
  },
});
const refreshBody = validator<{ csr?: string }>({
  type: 'object',
  additionalProperties: false,
  properties: { csr: { type: 'string', minLength: 1, maxLength: 8192 } },
});

interface Caller {
  machineId: string;
  hostname: string;
  peer: CertifiedPeer | null;
}

export function addAgentRoutes(r: Router, d: AgentRouteDeps): void {
  const { ctx } = d;

  /** The machine a verified client certificate names, after checking its serial against our records. */
  async function certifiedPeer(req: Request): Promise<CertifiedPeer | null> {
    if (!req.peer) {
      if (d.requireMtls) throw new AegisError('UNAUTHORIZED', 'a client certificate is required on the agent listener');
      return null;
    }
    const trustDomain = d.issuer?.ca.trustDomain;
    const named = trustDomain ? req.peer.uris.map((u) => machineIdOfSpiffe(u, trustDomain)).find((m) => m !== null) : undefined;
    if (!named) throw new AegisError('UNAUTHORIZED', 'client certificate refused: it does not name an Aegis machine');
    const peer = await d.certs.check(req.peer.serial, req.peer.thumbprint);
    if (peer.machine_id !== named) throw new AegisError('UNAUTHORIZED', 'client certificate refused: not issued to the machine it names');
    return peer;
  }

  /** A machine without mTLS: still active, its license not revoked. */
  async function activeMachine(machineId: string): Promise<{ hostname: string; hardware_id: string; host_public_key: string }> {
    const m = await ctx.db
      .selectFrom('machines as m')
      .innerJoin('licenses as l', 'l.id', 'm.license_id')
      .select(['m.hostname', 'm.hardware_id', 'm.host_public_key', 'm.status', 'l.status as license_status'])
      .where('m.id', '=', machineId)
      .executeTakeFirst();
    if (!m) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    if (m.status !== 'active') throw new AegisError('MACHINE_DEACTIVATED', 'this machine was deactivated; activate it again');
    if (m.license_status === 'revoked') throw new AegisError('LICENSE_REVOKED', 'license revoked');
    return m;
  }

  /** Authenticates an agent call: certificate (when mTLS), then the access token and its scope. */
  async function caller(req: Request, scope: AgentScope): Promise<Caller> {
    const peer = await certifiedPeer(req);
    const c = await d.agentTokens.authorize(req.headers.authorization, scope, peer ? { machine_id: peer.machine_id, thumbprint: peer.thumbprint } : null);
    if (peer) return { machineId: peer.machine_id, hostname: peer.hostname, peer };
    const m = await activeMachine(c.machine_id);
    return { machineId: c.machine_id, hostname: m.hostname, peer: null };
  }

  r.add(
    'POST',
    AGENT_API.token,
    async (req): Promise<Reply> => {
      const body = tokenBody(req.body ?? {});
      const scopes = requestedScopes(body.scope);
      const peer = await certifiedPeer(req);
      let machineId: string;
      if (peer) {
        machineId = peer.machine_id;
      } else {
        if (!body.machine_id || !body.proof) {
          throw new AegisError('UNAUTHORIZED', 'without a client certificate, machine_id and a host-key proof (aud aegis-agent-token) are required');
        }
        const m = await activeMachine(body.machine_id);
        await acceptProof(ctx.db, ctx.clock, body.proof, {
          audience: AUD_AGENT_TOKEN_PROOF,
          hardwareId: m.hardware_id,
          key: publicKeyFromJwk(JSON.parse(m.host_public_key) as Ed25519PublicJwk),
        });
        machineId = body.machine_id;
      }
      return { status: 200, body: await d.agentTokens.issue(machineId, scopes, peer?.thumbprint ?? null) };
    },
    { body: true },
  );

  r.add('POST', AGENT_API.refresh, async (req) => {
    const who = await caller(req, 'license:refresh');
    const { csr } = refreshBody(req.body ?? {});
    let key: CertifiableKey | null = null;
    if (csr !== undefined && d.issuer) {
      const m = await ctx.db.selectFrom('machines').select('host_public_key').where('id', '=', who.machineId).executeTakeFirstOrThrow();
      key = await d.issuer.verify(csr, JSON.parse(m.host_public_key) as Ed25519PublicJwk);
    }
    try {
      const result = await d.activations.refreshAuthenticated(who.machineId);
      const { license_id: _l, customer_id: _c, ...response } = result;
      const certificate = d.issuer ? await d.issuer.issue(who.machineId, key, result.license_expires_at) : {};
      return { status: 200, body: { ...response, ...certificate } };
    } catch (e) {
      if (e instanceof AegisError) {
        await d.audit.record({ event_type: 'machine.refresh', outcome: 'refused', actor: `machine:${who.machineId}`, machine_id: who.machineId, client_ip: req.clientIp, reason: `${e.code}: ${e.message}` });
      }
      throw e;
    }
  });

  r.add('GET', AGENT_API.snapshots, async (req) => {
    const who = await caller(req, 'snapshots:read');
    return { status: 200, body: { host: who.hostname, messages: await d.orchestrator.messagesFor(who.hostname) } };
  });

  r.add('POST', AGENT_API.status, async (req) => {
    const who = await caller(req, 'status:write');
    const report = req.body as Record<string, unknown> | null;
    if (report === null || typeof report !== 'object' || Array.isArray(report)) {
      throw new AegisError('VALIDATION_FAILED', 'body must be a status report', { details: [{ path: '', message: 'must be an object' }] });
    }
    // The certificate names the machine; the report is filed under that machine's host.
    const ok = await d.agents.record('status', who.hostname, { ...report, host: who.hostname, machine_id: who.machineId });
    if (!ok) throw new AegisError('VALIDATION_FAILED', 'not a status report (edition and services are required)', { details: [{ path: '', message: 'edition and services are required' }] });
    return { status: 202, body: { accepted: true } };
  });

  r.add(
    'POST',
    AGENT_API.telemetry,
    async (req) => {
      const who = await caller(req, 'telemetry');
      if (req.body === null || typeof req.body !== 'object') {
        throw new AegisError('VALIDATION_FAILED', 'body must be a JSON object', { details: [{ path: '', message: 'must be an object' }] });
      }
      await ctx.db.updateTable('machines').set({ last_seen_at: new Date(ctx.clock.now()).toISOString() }).where('id', '=', who.machineId).execute();
      return { status: 202, body: { accepted: true } };
    },
    { maxBody: 256 * 1024 },
  );
}
