/**
 * The HTTP API (seed 001's routes plus activation): authentication, rate limits, request
 * schemas and audit records around the core services. Handlers see Request/Reply only.
 */
import {
  AegisError,
  FEATURES,
  FLEET_NAME_PATTERN,
  HARDWARE_ID_PATTERN,
  LICENSE_TYPES,
  LICENSED_TIERS,
  ValidationError,
  computeFingerprint,
  isEd25519PublicJwk,
  isHostId,
  type Ed25519PublicJwk,
} from '../../protocol/src/index.js';
import type { ApiKeys, ApiPrincipal, Scope } from './api_keys.js';
import type { AuditLog, AuditEntry } from './audit.js';
import type { Customers, CustomerInput } from './customers.js';
import { LICENSE_STATUSES, type Licenses, type IssueInput, type LicenseStatus } from './licenses.js';
import { Refusal, type Activations, type ActivationInput } from './activations.js';
import { validateLicenseToken, type ValidateInput } from './license_validation.js';
import { decodeCompact } from './tokens.js';
import type { NatsAuthority } from './nats/credentials.js';
import { parsePage } from './pagination.js';
import type { RateLimiter, RateLimits } from './rate_limit.js';
import { Router, type Request, type Reply } from './http/router.js';
import { validator } from './validation.js';
import { actorOf, authorize as authorizeKey } from './http/auth.js';
import type { ServerContext } from './context.js';
import type { CertifiableKey, CertificateIssuer } from './pki/issuer.js';
import type { MachineCertificates } from './pki/machine_certs.js';

const str = (max: number) => ({ type: 'string', minLength: 1, maxLength: max });
const nullableStr = (max: number) => ({ type: ['string', 'null'], maxLength: max });

const customerCreate = validator<CustomerInput>({
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: { name: str(200), email: nullableStr(320), company: nullableStr(200), is_active: { type: 'boolean' } },
});
const customerPatch = validator<Partial<CustomerInput>>({
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { name: str(200), email: nullableStr(320), company: nullableStr(200), is_active: { type: 'boolean' } },
});
const licenseIssue = validator<IssueInput>({
  type: 'object',
  additionalProperties: false,
  required: ['customer_id', 'tier', 'license_type'],
  properties: {
    customer_id: str(64),
    tier: { type: 'string', enum: [...LICENSED_TIERS] },
    license_type: { type: 'string', enum: [...LICENSE_TYPES] },
    expires_at: { type: 'string', minLength: 10, maxLength: 40 },
    duration_days: { type: 'integer', minimum: 1, maximum: 36500 },
    max_machines: { type: 'integer', minimum: 1, maximum: 100000 },
    allowed_major_versions: { type: 'array', maxItems: 64, items: { type: 'string', pattern: '^[0-9]{1,6}$' } },
    features: { type: 'array', maxItems: 64, items: { type: 'string', enum: FEATURES } },
    fleet: { type: 'string', pattern: FLEET_NAME_PATTERN.source },
  },
});
const revokeBody = validator<{ reason: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['reason'],
  properties: { reason: str(500) },
});
const validateBody = validator<ValidateInput>({
  type: 'object',
  additionalProperties: false,
  required: ['token'],
  properties: { token: { type: 'string', maxLength: 16384 }, product: str(100), version: str(64), hardware_id: str(128) },
});
const activationBody = validator<ActivationInput & { csr?: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['license_key', 'hardware_id', 'host_public_key', 'hostname', 'agent_version', 'proof'],
  properties: {
    license_key: str(64),
    hardware_id: { type: 'string', pattern: HARDWARE_ID_PATTERN.source },
    host_public_key: {
      type: 'object',
      required: ['kty', 'crv', 'x'],
      properties: { kty: { const: 'OKP' }, crv: { const: 'Ed25519' }, x: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
    },
    hostname: str(253),
    agent_version: str(64),
    proof: { type: 'string', minLength: 1, maxLength: 4096 },
    csr: { type: 'string', minLength: 1, maxLength: 8192 },
  },
});
const refreshBody = validator<{ proof: string; csr?: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['proof'],
  properties: { proof: { type: 'string', minLength: 1, maxLength: 4096 }, csr: { type: 'string', minLength: 1, maxLength: 8192 } },
});
const proofBody = validator<{ proof: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['proof'],
  properties: { proof: { type: 'string', minLength: 1, maxLength: 4096 } },
});

function ok(body: unknown, status = 200): Reply {
  return { status, body };
}

function boolParam(q: URLSearchParams, name: string): boolean | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new ValidationError([{ path: name, message: 'must be true or false' }]);
}

function enumParam<T extends string>(q: URLSearchParams, name: string, allowed: readonly T[]): T | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  if (!(allowed as readonly string[]).includes(v)) throw new ValidationError([{ path: name, message: `must be one of ${allowed.join(', ')}` }]);
  return v as T;
}

export interface RouteDeps {
  customers: Customers;
  licenses: Licenses;
  activations: Activations;
  apiKeys: ApiKeys;
  audit: AuditLog;
  limiter: RateLimiter;
  limits: RateLimits;
  ctx: ServerContext;
  /** Machine client certificates (issue 7): revoked with their machine or license. */
  certs?: MachineCertificates;
  /** Issues client certificates from activation/refresh CSRs when a CA is configured. */
  issuer?: CertificateIssuer | null;
  /** Per-agent NATS credentials (operator mode), when configured. */
  nats?: NatsAuthority | null;
}

export function buildRouter(d: RouteDeps): Router {
  const r = new Router();
  const { ctx } = d;

  const authorize = (req: Request, scope: Scope): Promise<ApiPrincipal> => authorizeKey(d.apiKeys, req, scope);

  /** NATS credentials for an activated host (operator mode only; host names with dots get none). */
  async function natsCredentials(licenseId: string, machineId: string, host: string): Promise<{ nats?: { creds: string; user_public_key: string; expires_at: string | null } }> {
    if (!d.nats || !isHostId(host)) return {};
    const lic = await ctx.db.selectFrom('licenses').select('fleet').where('id', '=', licenseId).executeTakeFirst();
    const c = await d.nats.issueAgentCredentials({ host, fleet: lic?.fleet ?? 'default', machineId });
    return { nats: { creds: c.creds, user_public_key: c.userPublicKey, expires_at: c.expiresAt?.toISOString() ?? null } };
  }

  async function revokeNats(machineId: string): Promise<void> {
    if (!d.nats) return;
    const r = await d.nats.revokeAgent(machineId);
    // Recorded in the config fragment either way; not pushed means live connections of
    // that user last until nats-server reloads its config.
    if (r.revoked && !r.pushed) {
      await d.audit.record({ event_type: 'nats.revocation_not_pushed', outcome: 'refused', actor: 'aegis-server', machine_id: machineId, reason: String(r.pushError ?? 'unknown') });
    }
  }

  /** Records a refusal (with the ids a Refusal carries) and rethrows it. */
  async function refused(err: unknown, e: Omit<AuditEntry, 'outcome' | 'reason'>): Promise<never> {
    if (err instanceof AegisError) {
      const ids = err instanceof Refusal ? err.ids : {};
      await d.audit.record({ ...e, ...ids, outcome: 'refused', reason: `${err.code}: ${err.message}` });
    }
    throw err;
  }

  // --- system -------------------------------------------------------------------
  r.add('GET', '/health', async () => {
    const checks: Record<string, string> = {};
    let healthy = true;
    try {
      await ctx.ping();
      checks.database = 'ok';
    } catch (e) {
      healthy = false;
      checks.database = `error: ${(e as Error).message}`;
    }
    try {
      checks.signing_key = `ok (${ctx.keys.signingKey().kid})`;
    } catch (e) {
      healthy = false;
      checks.signing_key = `error: ${(e as Error).message}`;
    }
    return { status: healthy ? 200 : 503, body: { status: healthy ? 'ok' : 'unhealthy', checks } };
  });
  r.add('GET', '/info', async () =>
    ok({
      name: 'aegis-server',
      version: ctx.version,
      database: ctx.dialect,
      signing_kid: ctx.keys.activeKid(),
      jwks_uri: '/.well-known/jwks.json',
      started_at: ctx.startedAt,
    }),
  );
  r.add('GET', '/.well-known/jwks.json', async () => ({ status: 200, body: ctx.keys.jwks(), headers: { 'cache-control': 'public, max-age=300' } }));

  // --- customers ----------------------------------------------------------------
  r.add('POST', '/api/v1/customers', async (req) => {
    const p = await authorize(req, 'customers:write');
    const c = await d.customers.create(customerCreate(req.body));
    await d.audit.record({ event_type: 'customer.created', actor: actorOf(p), customer_id: c.id, client_ip: req.clientIp, data: { name: c.name } });
    return ok(c, 201);
  });
  r.add('GET', '/api/v1/customers', async (req) => {
    await authorize(req, 'customers:read');
    const page = parsePage(req.query);
    const filters = {
      is_active: boolParam(req.query, 'is_active'),
      email: req.query.get('email') ?? undefined,
      q: req.query.get('q') ?? undefined,
    };
    return ok(await d.customers.list(filters, page));
  });
  r.add('GET', '/api/v1/customers/:id', async (req) => {
    await authorize(req, 'customers:read');
    return ok(await d.customers.get(req.params.id!));
  });
  r.add('PATCH', '/api/v1/customers/:id', async (req) => {
    const p = await authorize(req, 'customers:write');
    const patch = customerPatch(req.body);
    const c = await d.customers.update(req.params.id!, patch);
    await d.audit.record({ event_type: 'customer.updated', actor: actorOf(p), customer_id: c.id, client_ip: req.clientIp, data: { fields: Object.keys(patch) } });
    return ok(c);
  });
  r.add('DELETE', '/api/v1/customers/:id', async (req) => {
    const p = await authorize(req, 'customers:write');
    const force = boolParam(req.query, 'force') ?? false;
    const id = req.params.id!;
    let result;
    try {
      result = await d.customers.delete(id, force);
    } catch (e) {
      if (e instanceof AegisError && e.code === 'CUSTOMER_HAS_ACTIVE_LICENSES') {
        await refused(e, { event_type: 'customer.delete', actor: actorOf(p), customer_id: id, client_ip: req.clientIp });
      }
      throw e;
    }
    await d.audit.record({
      event_type: 'customer.deleted',
      actor: actorOf(p),
      customer_id: id,
      client_ip: req.clientIp,
      reason: force ? 'forced' : null,
      data: { licenses_removed_while_active: result.revokedLicenseIds },
    });
    return { status: 204, body: null };
  });

  // --- licenses -----------------------------------------------------------------
  r.add('POST', '/api/v1/licenses', async (req) => {
    const p = await authorize(req, 'licenses:write');
    const { license, license_key } = await d.licenses.issue(licenseIssue(req.body));
    await d.audit.record({
      event_type: 'license.issued',
      actor: actorOf(p),
      license_id: license.id,
      customer_id: license.customer_id,
      client_ip: req.clientIp,
      data: { tier: license.tier, license_type: license.license_type, max_machines: license.max_machines, expires_at: license.expires_at },
    });
    ctx.events.emit('license.changed', license.id);
    return ok({ ...license, license_key }, 201);
  });
  r.add('GET', '/api/v1/licenses', async (req) => {
    await authorize(req, 'licenses:read');
    const page = parsePage(req.query);
    const filters = {
      customer_id: req.query.get('customer_id') ?? undefined,
      status: enumParam<LicenseStatus>(req.query, 'status', LICENSE_STATUSES),
      tier: enumParam(req.query, 'tier', LICENSED_TIERS),
      license_type: enumParam(req.query, 'license_type', LICENSE_TYPES),
    };
    return ok(await d.licenses.list(filters, page));
  });
  r.add('GET', '/api/v1/licenses/:id', async (req) => {
    await authorize(req, 'licenses:read');
    return ok(await d.licenses.get(req.params.id!));
  });
  r.add('GET', '/api/v1/licenses/:id/machines', async (req) => {
    await authorize(req, 'licenses:read');
    return ok({ items: await d.licenses.machines(req.params.id!) });
  });
  r.add(
    'DELETE',
    '/api/v1/licenses/:id/revoke',
    async (req) => {
      const p = await authorize(req, 'licenses:write');
      const { reason } = revokeBody(req.body);
      const { license, changed } = await d.licenses.revoke(req.params.id!, reason);
      await d.certs?.revokeLicense(license.id);
      if (d.nats) for (const m of await d.licenses.machines(license.id)) await revokeNats(m.id);
      if (changed) {
        await d.audit.record({ event_type: 'license.revoked', actor: actorOf(p), license_id: license.id, customer_id: license.customer_id, client_ip: req.clientIp, reason });
        ctx.events.emit('license.changed', license.id);
      }
      return ok(license);
    },
    { body: true },
  );
  r.add('POST', '/api/v1/licenses/validate', async (req) => {
    d.limiter.take(`validate:ip:${req.clientIp}`, d.limits.validatePerIp);
    const input = validateBody(req.body);
    // Per license too (from the unverified claims: a forged license_id only spends the
    // budget of the license it names, and verification follows regardless).
    const named = decodeCompact(input.token)?.payload.license_id;
    if (typeof named === 'string' && named.length <= 64) d.limiter.take(`validate:license:${named}`, d.limits.validatePerLicense);
    const result = await validateLicenseToken(ctx.db, ctx.clock, ctx.tokens, input);
    if (!result.valid) {
      const c = result.claims ?? {};
      await d.audit.record({
        event_type: 'license.validate',
        outcome: 'refused',
        actor: 'anonymous',
        license_id: typeof c.license_id === 'string' ? c.license_id : null,
        machine_id: typeof c.sub === 'string' ? c.sub : null,
        client_ip: req.clientIp,
        reason: `${result.code}: ${result.message}`,
      });
    }
    return ok(result);
  });
  r.add('POST', '/api/v1/licenses/fingerprint', async (req) => ok(computeFingerprint(req.body)));

  // --- activation and machines ----------------------------------------------------
  r.add('POST', '/api/v1/activations', async (req) => {
    d.limiter.take(`activate:ip:${req.clientIp}`, d.limits.activationPerIp);
    const body = req.body as Record<string, unknown> | null;
    const input = activationBody(body);
    if (!isEd25519PublicJwk(input.host_public_key)) {
      throw new ValidationError([{ path: '/host_public_key', message: 'must be an Ed25519 public JWK without private members' }]);
    }
    const base = { event_type: 'machine.activate', actor: `host:${input.hostname}`, client_ip: req.clientIp };
    const { csr, ...activation } = input;
    // A bad CSR is refused before the seat is touched.
    const certKey = csr !== undefined && d.issuer ? await d.issuer.verify(csr, input.host_public_key as Ed25519PublicJwk) : null;
    let result;
    try {
      result = await d.activations.activate({ ...activation, host_public_key: input.host_public_key as Ed25519PublicJwk }, (licenseId) =>
        d.limiter.take(`activate:license:${licenseId}`, d.limits.activationPerLicense),
      );
    } catch (e) {
      return refused(e, { ...base, data: { hardware_id: input.hardware_id } });
    }
    await d.audit.record({
      ...base,
      event_type: result.created ? 'machine.activated' : 'machine.reactivated',
      license_id: result.license_id,
      customer_id: result.customer_id,
      machine_id: result.machine_id,
      data: { hardware_id: input.hardware_id, agent_version: input.agent_version },
    });
    const { created, license_id: _l, customer_id: _c, ...response } = result;
    const certificate = d.issuer ? await d.issuer.issue(result.machine_id, certKey, result.license_expires_at) : {};
    return ok({ ...response, ...certificate, ...(await natsCredentials(result.license_id, result.machine_id, input.hostname)) }, created ? 201 : 200);
  });
  r.add('POST', '/api/v1/machines/:id/refresh', async (req) => {
    const id = req.params.id!;
    d.limiter.take(`refresh:ip:${req.clientIp}`, d.limits.refreshPerIp);
    d.limiter.take(`refresh:machine:${id}`, d.limits.refreshPerMachine);
    const { proof, csr } = refreshBody(req.body);
    const base = { event_type: 'machine.refresh', actor: `machine:${id}`, machine_id: id, client_ip: req.clientIp };
    let certKey: CertifiableKey | null = null;
    if (csr !== undefined && d.issuer) {
      const m = await ctx.db.selectFrom('machines').select('host_public_key').where('id', '=', id).executeTakeFirst();
      if (m) certKey = await d.issuer.verify(csr, JSON.parse(m.host_public_key) as Ed25519PublicJwk);
    }
    try {
      const result = await d.activations.refresh(id, proof);
      const { license_id: _l, customer_id: _c, ...response } = result;
      const certificate = d.issuer ? await d.issuer.issue(id, certKey, result.license_expires_at) : {};
      return ok({ ...response, ...certificate });
    } catch (e) {
      return refused(e, base);
    }
  });
  r.add(
    'DELETE',
    '/api/v1/machines/:id',
    async (req) => {
      const id = req.params.id!;
      let actor: string;
      let auth: { admin: true } | { proof: unknown };
      if (req.headers['x-api-key'] || req.headers.authorization) {
        actor = actorOf(await authorize(req, 'licenses:write'));
        auth = { admin: true };
      } else {
        actor = `machine:${id}`;
        auth = { proof: proofBody(req.body).proof };
      }
      try {
        const res = await d.activations.deactivate(id, auth);
        // Its certificates stop working at once (the agent listener checks serials), and
        // so does its NATS user.
        await d.certs?.revokeMachine(id);
        await revokeNats(id);
        await d.audit.record({ event_type: 'machine.deactivated', actor, machine_id: id, license_id: res.license_id, customer_id: res.customer_id, client_ip: req.clientIp });
        return ok(res.machine);
      } catch (e) {
        return refused(e, { event_type: 'machine.deactivate', actor, machine_id: id, client_ip: req.clientIp });
      }
    },
    { body: true },
  );

  // --- admin --------------------------------------------------------------------
  r.add('GET', '/api/v1/admin/stats', async (req) => {
    await authorize(req, 'admin:read');
    return ok(await ctx.stats());
  });
  r.add('GET', '/api/v1/admin/audit-logs', async (req) => {
    await authorize(req, 'admin:read');
    const page = parsePage(req.query);
    const since = req.query.get('since') ?? undefined;
    if (since !== undefined && Number.isNaN(new Date(since).getTime())) {
      throw new ValidationError([{ path: 'since', message: 'must be an ISO-8601 date-time' }]);
    }
    const result = await d.audit.list({
      event_type: req.query.get('event_type') ?? undefined,
      license_id: req.query.get('license_id') ?? undefined,
      customer_id: req.query.get('customer_id') ?? undefined,
      since: since === undefined ? undefined : new Date(since).toISOString(),
      ...page,
    });
    return ok({ ...result, ...page });
  });

  return r;
}
