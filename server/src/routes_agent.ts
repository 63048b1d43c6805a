/**
 * Agent endpoints. On the mTLS agent listener every request carries a client certificate
 * the handshake verified against the Aegis CA; the machine lifecycle checks its serial
 * against the server's records (revoked, expired, deactivated machine, unusable license:
 * 401), and every endpoint but the token endpoint wants a single-use scoped access token
 * bound to that certificate (401 without one or on replay, 403 without the scope).
 *
 * Without mTLS (ENABLE_MTLS off) the same routes sit on the main listener: the token
 * endpoint then takes a host-key proof and its tokens are unbound.
 */
import {
  ACCEPTED_SCHEMA,
  AGENT_SNAPSHOTS_SCHEMA,
  AUD_AGENT_TOKEN_PROOF,
  ISSUED_AGENT_TOKEN_SCHEMA,
  TOKEN_BUNDLE_SCHEMA,
  AegisError,
  AGENT_API,
  type AcceptedResponse,
  type AgentScope,
  type AgentSnapshotsResponse,
  type AgentTokenRequest,
  type IssuedAgentToken,
  type RefreshRequest,
  type TokenBundle,
} from '../../protocol/src/index.js';
import { requestedScopes } from './agent_tokens.js';
import type { AuditLog } from './audit.js';
import type { Reply, Request, Router } from './http/router.js';
import type { AgentCaller, MachineLifecycle } from './machine_lifecycle.js';
import { refreshMachine, refreshFingerprintProperties } from './routes.js';
import type { Orchestrator } from './rollout/orchestrator.js';
import { validator } from './validation.js';
import { addAgentIngestRoutes, type IngestDeps } from './events/routes.js';

export interface AgentRouteDeps {
  lifecycle: MachineLifecycle;
  orchestrator: Orchestrator;
  audit: AuditLog;
  /** True on the mTLS listener: a request without a verified client certificate is refused. */
  requireMtls: boolean;
  /** Where threats, file verdicts and telemetry go. */
  ingest: IngestDeps;
}

const tokenBody = validator<AgentTokenRequest>({
  type: 'object',
  additionalProperties: false,
  properties: {
    scope: { anyOf: [{ type: 'string', maxLength: 512 }, { type: 'array', maxItems: 16, items: { type: 'string', maxLength: 64 } }] },
    machine_id: { type: 'string', minLength: 1, maxLength: 64 },
    proof: { type: 'string', minLength: 1, maxLength: 4096 },
  },
});
const refreshBody = validator<RefreshRequest>({
  type: 'object',
  additionalProperties: false,
  properties: { csr: { type: 'string', minLength: 1, maxLength: 8192 }, ...refreshFingerprintProperties },
});

function reply<T>(status: number, body: T): Reply {
  return { status, body };
}

export function addAgentRoutes(r: Router, d: AgentRouteDeps): void {
  const { lifecycle } = d;

  /** Authenticates an agent call: certificate (when mTLS), then the access token and its scope. */
  async function caller(req: Request, scope: AgentScope): Promise<AgentCaller> {
    const peer = await lifecycle.certifiedPeer(req.peer, d.requireMtls);
    return lifecycle.agentCaller(peer, req.headers.authorization, scope);
  }

  r.add(
    'POST',
    AGENT_API.token,
    async (req): Promise<Reply> => {
      const body = tokenBody(req.body ?? {});
      const scopes = requestedScopes(body.scope);
      const peer = await lifecycle.certifiedPeer(req.peer, d.requireMtls);
      const hostProof = { ...(body.machine_id ? { machineId: body.machine_id } : {}), ...(body.proof ? { proof: body.proof } : {}) };
      return reply<IssuedAgentToken>(200, await lifecycle.issueAgentToken(peer, scopes, hostProof));
    },
    {
      body: true,
      doc: {
        summary: 'Get a single-use agent access token',
        description: 'On the mTLS listener the client certificate authenticates and the token is bound to it; without mTLS the body names the machine and carries a host-key proof.',
        tag: 'agent',
        auth: { kind: 'host_proof', audience: AUD_AGENT_TOKEN_PROOF },
        request: { schema: tokenBody.schema, required: false, example: { scope: ['snapshots:read'] } },
        responses: { 200: { description: 'The access token.', schema: ISSUED_AGENT_TOKEN_SCHEMA } },
        errors: ['UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND', 'PROOF_INVALID', 'PROOF_REPLAYED', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED'],
      },
    },
  );

  r.add('POST', AGENT_API.refresh, async (req) => {
    const who = await caller(req, 'license:refresh');
    const { csr, proof: _proof, ...fingerprint } = refreshBody(req.body ?? {});
    return reply<TokenBundle>(200, await refreshMachine(lifecycle, d.audit, req, who.machineId, { transport: 'agent-listener' }, csr, undefined, fingerprint));
  }, {
    doc: {
      summary: 'Refresh this machine\'s tokens (agent listener)',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'license:refresh' },
      request: { schema: refreshBody.schema, required: false },
      responses: { 200: { description: 'Fresh tokens (and a new client certificate for a CSR).', schema: TOKEN_BUNDLE_SCHEMA } },
      errors: ['LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED', 'FINGERPRINT_MISMATCH', 'HOST_KEY_MISMATCH', 'CONTAINER_NOT_ALLOWED', 'SIGNING_KEY_UNAVAILABLE'],
    },
  });

  r.add('GET', AGENT_API.snapshots, async (req) => {
    const who = await caller(req, 'snapshots:read');
    return reply<AgentSnapshotsResponse>(200, { machine_id: who.machineId, messages: await d.orchestrator.messagesFor(who.machineId) });
  }, {
    doc: {
      summary: 'The signed segmentation messages for this machine',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'snapshots:read' },
      responses: { 200: { description: 'Compact JWS messages, as NATS carries them.', schema: AGENT_SNAPSHOTS_SCHEMA } },
    },
  });

  r.add('POST', AGENT_API.status, async (req) => {
    const who = await caller(req, 'status:write');
    const report = req.body as Record<string, unknown> | null;
    if (report === null || typeof report !== 'object' || Array.isArray(report)) {
      throw new AegisError('VALIDATION_FAILED', 'body must be a status report', { details: [{ path: '', message: 'must be an object' }] });
    }
    // The certificate (or access token) names the machine; the report is filed under it.
    const ok = await lifecycle.recordStatus(who, report);
    if (!ok) throw new AegisError('VALIDATION_FAILED', 'not a status report (edition and services are required)', { details: [{ path: '', message: 'edition and services are required' }] });
    return reply<AcceptedResponse>(202, { accepted: true });
  }, {
    doc: {
      summary: 'Report this machine\'s status',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'status:write' },
      request: { schema: { type: 'object', required: ['edition', 'services'], description: 'An AgentStatusReport: edition, services and what the datapath applied.' } },
      responses: { 202: { description: 'Filed under the authenticated machine.', schema: ACCEPTED_SCHEMA } },
    },
  });

  // Threats, file verdicts and telemetry: server/src/events/routes.ts.
  addAgentIngestRoutes(r, caller, lifecycle, d.ingest);
}
