/**
 * The admin and host HTTP API (customers, licenses, activation and machines): API-key
 * authentication, rate limits, request schemas and audit records around the stores and
 * the machine lifecycle. Handlers see Request/Reply only and never touch storage.
 */
import {
  AegisError,
  AUD_LICENSE,
  FEATURES,
  FLEET_NAME_PATTERN,
  EXTERNAL_ID_PATTERN,
  HARDWARE_ID_PATTERN,
  HOST_VERSION_PATTERN,
  MODULE_NAME_PATTERN,
  LICENSE_TYPES,
  LICENSED_TIERS,
  ValidationError,
  LICENSE_STATUSES,
  CLONE_POLICIES,
  HEARTBEAT_CULL_STRATEGIES,
  COMPONENT_DIGEST_PATTERN,
  ENTITLEMENT_PATTERN,
  FINGERPRINT_COMPONENT_NAMES,
  FINGERPRINT_MATCH_STRATEGIES,
  HOST_ENVIRONMENTS,
  MAX_ENTITLEMENTS,
  computeFingerprint,
  isEd25519PublicJwk,
  AUD_ACTIVATION_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_REFRESH_PROOF,
  AUD_HEARTBEAT_PROOF,
  HEARTBEAT_RESPONSE_SCHEMA,
  CUSTOMER_SCHEMA,
  ISSUED_LICENSE_SCHEMA,
  LICENSE_SCHEMA,
  MACHINE_SCHEMA,
  TOKEN_BUNDLE_SCHEMA,
  VALIDATE_RESULT_SCHEMA,
  pagedSchema,
  type ActivationRequest,
  type EntitlementsRequest,
  type HeartbeatResponse,
  type RefreshRequest,
  type Customer,
  type CustomerInput,
  type IssuedLicense,
  type IssueLicenseRequest,
  type License,
  type LicenseStatus,
  type Machine,
  type Paged,
  type TokenBundle,
  type ValidateRequest,
  type ValidateResult,
} from '../../protocol/src/index.js';
import type { ApiKeys, ApiPrincipal, Scope } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { NOT_FOUND_MESSAGE, type Customers } from './customers.js';
import type { Licenses } from './licenses.js';
import { auditRefusal, type DeactivationAuth, type FingerprintChange, type MachineLifecycle, type RefreshAuth, type RefreshFingerprint } from './machine_lifecycle.js';
import { parsePage } from './pagination.js';
import type { Limiter, RateLimits } from './rate_limit.js';
import { Router, type Request, type Reply } from './http/router.js';
import { validator } from './validation.js';
import { actorOf, authorize as authorizeKey } from './http/auth.js';
import type { ServerContext } from './context.js';
import { scopeOf, type Tenancy } from './tenancy.js';
import type { QueryParamDoc } from './http/route_doc.js';
import { AUDIT_PAGE_SCHEMA, FINGERPRINT_SCHEMA, HEALTH_SCHEMA, INFO_SCHEMA, STATS_SCHEMA } from './api_schemas.js';
import { CUSTOMER_EXAMPLE, ISSUED_LICENSE_EXAMPLE, VALIDATE_REFUSED_EXAMPLE } from './api_examples.js';
import { JWKS_DOC } from './routes_jwks.js';
import { MAX_LIMIT } from './pagination.js';

const str = (max: number) => ({ type: 'string', minLength: 1, maxLength: max });
/** Entitlement codes in a request: each of ENTITLEMENT_PATTERN, at most MAX_ENTITLEMENTS, no repeats. */
const entitlementList = { type: 'array', maxItems: MAX_ENTITLEMENTS, uniqueItems: true, items: { type: 'string', pattern: ENTITLEMENT_PATTERN.source } };
/** Named fingerprint components: only known names, each a salted SHA-256 digest in hex. */
const componentsSchema = {
  type: 'object',
  additionalProperties: false,
  maxProperties: FINGERPRINT_COMPONENT_NAMES.length,
  properties: Object.fromEntries(FINGERPRINT_COMPONENT_NAMES.map((n) => [n, { type: 'string', pattern: COMPONENT_DIGEST_PATTERN.source }])),
};
const environmentSchema = { type: 'string', enum: [...HOST_ENVIRONMENTS] };
const nullableStr = (max: number) => ({ type: ['string', 'null'], maxLength: max });

const customerCreate = validator<CustomerInput>({
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: str(200),
    external_id: { type: 'string', pattern: EXTERNAL_ID_PATTERN.source },
    email: nullableStr(320),
    company: nullableStr(200),
    is_active: { type: 'boolean' },
  },
});
const customerPatch = validator<Partial<CustomerInput>>({
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: { name: str(200), email: nullableStr(320), company: nullableStr(200), is_active: { type: 'boolean' } },
});
const licenseIssue = validator<IssueLicenseRequest>({
  type: 'object',
  additionalProperties: false,
  required: ['customer_id', 'license_type'],
  properties: {
    customer_id: str(64),
    tier: { type: 'string', enum: [...LICENSED_TIERS] },
    module_name: { type: 'string', pattern: MODULE_NAME_PATTERN.source },
    license_type: { type: 'string', enum: [...LICENSE_TYPES] },
    expires_at: { type: 'string', minLength: 10, maxLength: 40 },
    duration_days: { type: 'integer', minimum: 1, maximum: 36500 },
    max_machines: { type: 'integer', minimum: 1, maximum: 100000 },
    allowed_major_versions: { type: 'array', maxItems: 64, items: { type: 'string', pattern: '^[0-9]{1,6}$' } },
    features: { type: 'array', maxItems: 64, items: { type: 'string', enum: FEATURES } },
    fleet: { type: 'string', pattern: FLEET_NAME_PATTERN.source },
    entitlements: entitlementList,
    fingerprint_match: { type: 'string', enum: [...FINGERPRINT_MATCH_STRATEGIES] },
    clone_policy: { type: 'string', enum: [...CLONE_POLICIES] },
    allow_containers: { type: 'boolean' },
    heartbeat_interval_seconds: { type: ['integer', 'null'], minimum: 1, maximum: 31_536_000 },
    heartbeat_cull: { type: 'string', enum: [...HEARTBEAT_CULL_STRATEGIES] },
    floating: { type: 'boolean' },
    lease_ttl_seconds: { type: ['integer', 'null'], minimum: 1, maximum: 31_536_000 },
    grace_period_seconds: { type: ['integer', 'null'], minimum: 0, maximum: 31_536_000 },
  },
});
const entitlementsBody = validator<EntitlementsRequest>({
  type: 'object',
  additionalProperties: false,
  required: ['entitlements'],
  properties: { entitlements: { ...entitlementList, minItems: 1 } },
});
const revokeBody = validator<{ reason: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['reason'],
  properties: { reason: str(500) },
});
const validateBody = validator<ValidateRequest>({
  type: 'object',
  additionalProperties: false,
  required: ['token'],
  properties: {
    token: { type: 'string', maxLength: 16384 },
    product: str(100),
    version: str(64),
    hardware_id: str(128),
    module_name: { type: 'string', pattern: MODULE_NAME_PATTERN.source },
    odoo_version: { type: 'string', pattern: HOST_VERSION_PATTERN.source },
    entitlements: entitlementList,
  },
});
export const activationBody = validator<ActivationRequest>({
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
    components: componentsSchema,
    environment: environmentSchema,
  },
});
/** What a refresh may say about the host's hardware now (both listeners). */
export const refreshFingerprintProperties = {
  hardware_id: { type: 'string', pattern: HARDWARE_ID_PATTERN.source },
  components: componentsSchema,
  environment: environmentSchema,
};
const refreshBody = validator<RefreshRequest & { proof: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['proof'],
  properties: { proof: { type: 'string', minLength: 1, maxLength: 4096 }, csr: { type: 'string', minLength: 1, maxLength: 8192 }, ...refreshFingerprintProperties },
});
const proofBody = validator<{ proof: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['proof'],
  properties: { proof: { type: 'string', minLength: 1, maxLength: 4096 } },
});

/** `?limit=&offset=` of every list endpoint (parsePage). */
const PAGE_QUERY: QueryParamDoc[] = [
  { name: 'limit', description: `Page size, 1 to ${MAX_LIMIT} (default 50).`, schema: { type: 'integer', minimum: 1, maximum: MAX_LIMIT } },
  { name: 'offset', description: 'Items to skip.', schema: { type: 'integer', minimum: 0 } },
];
const textQuery = (name: string, description: string): QueryParamDoc => ({ name, description, schema: { type: 'string', maxLength: 1024 } });
const boolQuery = (name: string, description: string): QueryParamDoc => ({ name, description, schema: { type: 'string', enum: ['true', 'false', '1', '0'] } });
const enumQuery = (name: string, values: readonly string[]): QueryParamDoc => ({ name, description: `Only items whose ${name} is this.`, schema: { type: 'string', enum: [...values] } });

/** A JSON answer, typed with the wire declaration clients parse it with. */
function ok<T>(body: T, status = 200): Reply {
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

/**
 * The one refresh handler body of both listeners (host proof on the main listener, the
 * agent listener's certificate and access token there): the lifecycle's refresh, and a
 * refusal audit record naming the machine, its license and customer.
 */
export async function refreshMachine(
  lifecycle: MachineLifecycle,
  audit: AuditLog,
  req: Request,
  machineId: string,
  auth: RefreshAuth,
  csr: string | undefined,
  onAuthenticated?: (machineId: string) => void | Promise<void>,
  fingerprint: RefreshFingerprint = {},
): Promise<TokenBundle> {
  let r;
  try {
    r = await lifecycle.refresh(machineId, auth, csr, onAuthenticated, fingerprint);
  } catch (e) {
    return auditRefusal(audit, e, { event_type: 'machine.refresh', actor: `machine:${machineId}`, machine_id: machineId, client_ip: req.clientIp });
  }
  if (r.fingerprint) await auditFingerprintChange(audit, r, `machine:${machineId}`, req.clientIp, r.bundle.machine_id);
  return r.bundle;
}

/** Records that a machine's hardware changed within its license's strategy (component names, never digests). */
async function auditFingerprintChange(
  audit: AuditLog,
  ids: { license_id: string; customer_id: string; fingerprint: FingerprintChange | null },
  actor: string,
  clientIp: string,
  machineId: string,
): Promise<void> {
  if (!ids.fingerprint) return;
  await audit.record({
    event_type: 'machine.fingerprint_updated',
    actor,
    license_id: ids.license_id,
    customer_id: ids.customer_id,
    machine_id: machineId,
    client_ip: clientIp,
    data: { changed: ids.fingerprint.changed, previous_hardware_id: ids.fingerprint.previous_hardware_id },
  });
}

export interface RouteDeps {
  customers: Customers;
  licenses: Licenses;
  /** Activation, refresh and every end of a seat, with what hangs off the machine. */
  lifecycle: MachineLifecycle;
  apiKeys: ApiKeys;
  audit: AuditLog;
  limiter: Limiter;
  limits: RateLimits;
  ctx: ServerContext;
  /** What an API key limited to one customer may see and change. */
  tenancy: Tenancy;
}

export function buildRouter(d: RouteDeps): Router {
  const r = new Router();
  const { ctx, tenancy } = d;

  const authorize = (req: Request, scope: Scope): Promise<ApiPrincipal> => authorizeKey(d.apiKeys, req, scope);

  const refused = (err: unknown, e: Parameters<typeof auditRefusal>[2]): Promise<never> => auditRefusal(d.audit, err, e);

  /**
   * The Aegis id of the customer a path or body names by id or external reference,
   * visible to `p`: another customer's and an unknown one are the same 404.
   */
  const customerOf = async (p: ApiPrincipal, ref: string): Promise<string> => {
    const id = await d.customers.resolve(ref);
    tenancy.assertCustomer(p, id ?? ref);
    if (id === null) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return id;
  };

  /** A `customer_id` filter by id or external reference (an unknown one matches nothing). */
  const customerFilter = async (ref: string | null): Promise<string | undefined> => (ref === null ? undefined : ((await d.customers.resolve(ref)) ?? ref));

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
  }, {
    doc: {
      summary: 'Health: database and signing key',
      tag: 'system',
      auth: { kind: 'public' },
      responses: { 200: { description: 'Healthy.', schema: HEALTH_SCHEMA }, 503: { description: 'A check failed; `checks` says which.', schema: HEALTH_SCHEMA } },
    },
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
    { doc: { summary: 'Server name, version, database kind and active signing key id', tag: 'system', auth: { kind: 'public' }, responses: { 200: { description: 'Server information.', schema: INFO_SCHEMA } } } },
  );
  r.add('GET', '/.well-known/jwks.json', async () => ({ status: 200, body: ctx.keys.jwks(), headers: { 'cache-control': 'public, max-age=300' } }), { doc: JWKS_DOC });

  // --- customers ----------------------------------------------------------------
  r.add('POST', '/api/v1/customers', async (req) => {
    const p = await authorize(req, 'customers:write');
    tenancy.assertUnrestricted(p, 'create customers');
    const c = await d.customers.create(customerCreate(req.body));
    await d.audit.record({ event_type: 'customer.created', actor: actorOf(p), customer_id: c.id, client_ip: req.clientIp, data: { name: c.name } });
    return ok<Customer>(c, 201);
  }, {
    doc: {
      summary: 'Create a customer',
      tag: 'customers',
      auth: { kind: 'api_key', scope: 'customers:write' },
      request: { schema: customerCreate.schema, example: { name: 'Example Ltd', external_id: 'CUST-001', email: 'ops@example.com', company: 'Example Ltd' } },
      responses: { 201: { description: 'Created.', schema: CUSTOMER_SCHEMA, example: CUSTOMER_EXAMPLE } },
      errors: ['CONFLICT'],
    },
  });
  r.add('GET', '/api/v1/customers', async (req) => {
    const p = await authorize(req, 'customers:read');
    const page = parsePage(req.query);
    const filters = {
      tenant: scopeOf(p),
      is_active: boolParam(req.query, 'is_active'),
      email: req.query.get('email') ?? undefined,
      external_id: req.query.get('external_id') ?? undefined,
      q: req.query.get('q') ?? undefined,
    };
    return ok<Paged<Customer>>(await d.customers.list(filters, page));
  }, {
    doc: {
      summary: 'List customers',
      tag: 'customers',
      auth: { kind: 'api_key', scope: 'customers:read' },
      query: [
        ...PAGE_QUERY,
        boolQuery('is_active', 'Only active (true) or inactive (false) customers.'),
        textQuery('email', 'Exact email.'),
        textQuery('external_id', 'Exact external reference.'),
        textQuery('q', 'Substring of name, email or company.'),
      ],
      responses: { 200: { description: 'A page of customers (a key limited to one customer sees only it).', schema: pagedSchema(CUSTOMER_SCHEMA) } },
    },
  });
  r.add('GET', '/api/v1/customers/:id', async (req) => {
    const p = await authorize(req, 'customers:read');
    return ok<Customer>(await d.customers.get(await customerOf(p, req.params.id!)));
  }, {
    doc: {
      summary: 'Get a customer by id or external reference',
      tag: 'customers',
      auth: { kind: 'api_key', scope: 'customers:read' },
      responses: { 200: { description: 'The customer.', schema: CUSTOMER_SCHEMA, example: CUSTOMER_EXAMPLE } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add('PATCH', '/api/v1/customers/:id', async (req) => {
    const p = await authorize(req, 'customers:write');
    const patch = customerPatch(req.body);
    const c = await d.customers.update(await customerOf(p, req.params.id!), patch);
    await d.audit.record({ event_type: 'customer.updated', actor: actorOf(p), customer_id: c.id, client_ip: req.clientIp, data: { fields: Object.keys(patch) } });
    return ok<Customer>(c);
  }, {
    doc: {
      summary: 'Change a customer',
      description: '`external_id` is set only at creation.',
      tag: 'customers',
      auth: { kind: 'api_key', scope: 'customers:write' },
      request: { schema: customerPatch.schema, example: { email: 'billing@example.com' } },
      responses: { 200: { description: 'The changed customer.', schema: CUSTOMER_SCHEMA } },
      errors: ['NOT_FOUND', 'CONFLICT'],
    },
  });
  r.add('DELETE', '/api/v1/customers/:id', async (req) => {
    const p = await authorize(req, 'customers:write');
    const force = boolParam(req.query, 'force') ?? false;
    const id = await customerOf(p, req.params.id!);
    let result;
    try {
      result = await d.lifecycle.deleteCustomer(id, force);
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
      data: {
        licenses_removed_while_active: result.revoked_license_ids,
        machines_removed: result.machine_ids,
        certificates_revoked: result.certificates_revoked,
        nats_users_revoked: result.nats_users_revoked,
        agents_removed: result.agents_removed,
      },
    });
    return { status: 204, body: null };
  }, {
    doc: {
      summary: 'Delete a customer',
      description: 'Refused while it holds active licenses, unless `force=true`: then its licenses, machines, certificates and NATS users go with it.',
      tag: 'customers',
      auth: { kind: 'api_key', scope: 'customers:write' },
      query: [boolQuery('force', 'Delete even with active licenses.')],
      responses: { 204: { description: 'Deleted.' } },
      errors: ['NOT_FOUND', 'CUSTOMER_HAS_ACTIVE_LICENSES'],
    },
  });

  // --- licenses -----------------------------------------------------------------
  r.add('POST', '/api/v1/licenses', async (req) => {
    const p = await authorize(req, 'licenses:write');
    const input = licenseIssue(req.body);
    // customer_id may be the customer's external reference; the key's limit applies to
    // the customer it resolves to (an unknown reference is a restricted key's 404 too).
    const customerId = await d.customers.resolve(input.customer_id);
    tenancy.assertCustomer(p, customerId ?? input.customer_id);
    const { license, license_key } = await d.licenses.issue({ ...input, customer_id: customerId ?? input.customer_id });
    await d.audit.record({
      event_type: 'license.issued',
      actor: actorOf(p),
      license_id: license.id,
      customer_id: license.customer_id,
      client_ip: req.clientIp,
      data: { tier: license.tier, license_type: license.license_type, module_name: license.module_name, max_machines: license.max_machines, expires_at: license.expires_at },
    });
    ctx.events.emit('license.changed', license.id);
    return ok<IssuedLicense>({ ...license, license_key }, 201);
  }, {
    doc: {
      summary: 'Issue a license',
      description: 'The answer is the only time the license key is shown. `customer_id` may be the customer\'s external reference. With `module_name` it is a module license and carries a signed `token`.',
      tag: 'licenses',
      auth: { kind: 'api_key', scope: 'licenses:write' },
      request: { schema: licenseIssue.schema, example: { customer_id: 'CUST-001', tier: 'server', license_type: 'subscription', duration_days: 365, max_machines: 5 } },
      responses: { 201: { description: 'Issued.', schema: ISSUED_LICENSE_SCHEMA, example: ISSUED_LICENSE_EXAMPLE } },
      errors: ['NOT_FOUND', 'SIGNING_KEY_UNAVAILABLE'],
    },
  });
  r.add('GET', '/api/v1/licenses', async (req) => {
    const p = await authorize(req, 'licenses:read');
    const page = parsePage(req.query);
    const filters = {
      tenant: scopeOf(p),
      customer_id: req.query.get('customer_id') ?? undefined,
      status: enumParam<LicenseStatus>(req.query, 'status', LICENSE_STATUSES),
      tier: enumParam(req.query, 'tier', LICENSED_TIERS),
      license_type: enumParam(req.query, 'license_type', LICENSE_TYPES),
    };
    return ok<Paged<License>>(await d.licenses.list(filters, page));
  }, {
    doc: {
      summary: 'List licenses',
      tag: 'licenses',
      auth: { kind: 'api_key', scope: 'licenses:read' },
      query: [
        ...PAGE_QUERY,
        textQuery('customer_id', 'Only this customer\'s (id or external reference).'),
        enumQuery('status', LICENSE_STATUSES),
        enumQuery('tier', LICENSED_TIERS),
        enumQuery('license_type', LICENSE_TYPES),
      ],
      responses: { 200: { description: 'A page of licenses (never their keys).', schema: pagedSchema(LICENSE_SCHEMA) } },
    },
  });
  r.add('GET', '/api/v1/licenses/:id', async (req) => {
    const p = await authorize(req, 'licenses:read');
    await tenancy.assertLicense(p, req.params.id!);
    return ok<License>(await d.licenses.getWithToken(req.params.id!));
  }, {
    doc: {
      summary: 'Get a license',
      description: 'A module license comes with its signed token.',
      tag: 'licenses',
      auth: { kind: 'api_key', scope: 'licenses:read' },
      responses: { 200: { description: 'The license.', schema: LICENSE_SCHEMA } },
      errors: ['NOT_FOUND', 'SIGNING_KEY_UNAVAILABLE'],
    },
  });
  r.add('GET', '/api/v1/licenses/:id/machines', async (req) => {
    const p = await authorize(req, 'licenses:read');
    await tenancy.assertLicense(p, req.params.id!);
    return ok<{ items: Machine[] }>({ items: await d.licenses.machines(req.params.id!) });
  }, {
    doc: {
      summary: 'Machines activated on a license',
      tag: 'licenses',
      auth: { kind: 'api_key', scope: 'licenses:read' },
      responses: { 200: { description: 'Its machines, deactivated ones included.', schema: { type: 'object', additionalProperties: false, required: ['items'], properties: { items: { type: 'array', items: MACHINE_SCHEMA } } } } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add(
    'DELETE',
    '/api/v1/licenses/:id/revoke',
    async (req) => {
      const p = await authorize(req, 'licenses:write');
      const { reason } = revokeBody(req.body);
      await tenancy.assertLicense(p, req.params.id!);
      const { license, changed, certificates_revoked, nats_users_revoked } = await d.lifecycle.revokeLicense(req.params.id!, reason);
      if (changed) {
        await d.audit.record({
          event_type: 'license.revoked',
          actor: actorOf(p),
          license_id: license.id,
          customer_id: license.customer_id,
          client_ip: req.clientIp,
          reason,
          data: { certificates_revoked, nats_users_revoked },
        });
        ctx.events.emit('license.changed', license.id);
      }
      return ok<License>(license);
    },
    {
      body: true,
      doc: {
        summary: 'Revoke a license',
        description: 'Its machines\' certificates and NATS users are revoked with it. Revoking again changes nothing and answers the license.',
        tag: 'licenses',
        auth: { kind: 'api_key', scope: 'licenses:write' },
        request: { schema: revokeBody.schema, example: { reason: 'contract ended' } },
        responses: { 200: { description: 'The revoked license.', schema: LICENSE_SCHEMA } },
        errors: ['NOT_FOUND'],
      },
    },
  );
  for (const method of ['POST', 'DELETE'] as const) {
    const add = method === 'POST';
    r.add(
      method,
      '/api/v1/licenses/:id/entitlements',
      async (req) => {
        const p = await authorize(req, 'licenses:write');
        const { entitlements } = entitlementsBody(req.body);
        await tenancy.assertLicense(p, req.params.id!);
        const { license, changed } = await d.licenses.changeEntitlements(req.params.id!, entitlements, add, ctx.dialect);
        if (changed.length > 0) {
          await d.audit.record({
            event_type: add ? 'license.entitlements_attached' : 'license.entitlements_detached',
            actor: actorOf(p),
            license_id: license.id,
            customer_id: license.customer_id,
            client_ip: req.clientIp,
            data: { entitlements: changed },
          });
          ctx.events.emit('license.changed', license.id);
        }
        return ok<License>(license);
      },
      {
        body: true,
        doc: {
          summary: add ? 'Attach entitlements to a license' : 'Detach entitlements from a license',
          description: add
            ? `Operator-defined codes (\`${ENTITLEMENT_PATTERN.source}\`, at most ${MAX_ENTITLEMENTS} on a license). They appear in machine and module license tokens signed from now on (\`entitlements\` claim), at once in \`/validate\`, and those mapped to kernel bits in the kernel token's \`fmask\`. Attaching one already held changes nothing.`
            : 'Detached codes are missing from `/validate` at once and from every token signed from now on. Detaching one not held changes nothing.',
          tag: 'licenses',
          auth: { kind: 'api_key', scope: 'licenses:write' },
          request: { schema: entitlementsBody.schema, example: { entitlements: ['reports.export', 'kernel.usb_guard'] } },
          responses: { 200: { description: 'The license with its entitlements now.', schema: LICENSE_SCHEMA } },
          errors: ['NOT_FOUND', 'SIGNING_KEY_UNAVAILABLE'],
        },
      },
    );
  }
  r.add('POST', '/api/v1/licenses/validate', async (req) => {
    // Per IP first: that is all unauthenticated traffic can be charged to.
    await d.limiter.take(`validate:ip:${req.clientIp}`, d.limits.validatePerIp);
    const input = validateBody(req.body);
    // Per license only once the signature verified: a forged token naming a license must
    // not spend that license's budget and lock its genuine validations out.
    const result = await d.lifecycle.validate(input, (licenseId) => d.limiter.take(`validate:license:${licenseId}`, d.limits.validatePerLicense));
    if (!result.valid) {
      const c = result.claims ?? {};
      await d.audit.recordRefusal({
        event_type: 'license.validate',
        actor: 'anonymous',
        license_id: typeof c.license_id === 'string' ? c.license_id : null,
        // A module license token's sub is its license, not a machine.
        machine_id: c.aud === AUD_LICENSE && typeof c.sub === 'string' ? c.sub : null,
        client_ip: req.clientIp,
        reason: `${result.code}: ${result.message}`,
      });
    }
    return ok<ValidateResult>(result);
  }, {
    doc: {
      summary: 'Validate a license or machine token',
      description: 'Always 200: `valid` and a stable `code` say the verdict. Rate limited per client IP, and per license once the signature verified.',
      tag: 'licenses',
      auth: { kind: 'public' },
      request: { schema: validateBody.schema, example: { token: 'eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl', module_name: 'example_module', odoo_version: '17.0' } },
      responses: { 200: { description: 'The verdict.', schema: VALIDATE_RESULT_SCHEMA, example: VALIDATE_REFUSED_EXAMPLE } },
      errors: ['RATE_LIMITED'],
    },
  });
  r.add('POST', '/api/v1/licenses/fingerprint', async (req) => ok(computeFingerprint(req.body)), {
    doc: {
      summary: 'Compute a hardware id from hardware facts',
      description: 'The same canonicalization and hash the agent uses; nothing is stored.',
      tag: 'licenses',
      auth: { kind: 'public' },
      request: { schema: { type: 'object', description: 'Hardware facts: machine_id, product_uuid, board_serial, … and the lists macs and disk_serials.' }, example: { machine_id: '0123456789abcdef0123456789abcdef', macs: ['52:54:00:00:00:01'] } },
      responses: { 200: { description: 'The hardware id and the facts it was computed from.', schema: FINGERPRINT_SCHEMA } },
    },
  });

  // --- activation and machines ----------------------------------------------------
  r.add('POST', '/api/v1/activations', async (req) => {
    await d.limiter.take(`activate:ip:${req.clientIp}`, d.limits.activationPerIp);
    const input = activationBody(req.body);
    // The schema checks the shape; this refuses private members (a JWK with "d").
    if (!isEd25519PublicJwk(input.host_public_key)) {
      throw new ValidationError([{ path: '/host_public_key', message: 'must be an Ed25519 public JWK without private members' }]);
    }
    const base = { event_type: 'machine.activate', actor: `host:${input.hostname}`, client_ip: req.clientIp };
    let result;
    try {
      result = await d.lifecycle.activate(input, (licenseId) =>
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
      data: {
        hardware_id: input.hardware_id,
        agent_version: input.agent_version,
        environment: input.environment ?? null,
        ...(result.clone_of ? { clone_of: result.clone_of } : {}),
      },
    });
    await auditFingerprintChange(d.audit, result, base.actor, req.clientIp, result.machine_id);
    return ok<TokenBundle>(result.bundle, result.created ? 201 : 200);
  }, {
    doc: {
      summary: 'Activate a host on a license',
      description: 'Takes a seat (201), or renews the same machine\'s (200): the same host key with the same hardware id, or with `components` that still match the machine\'s under the license\'s `fingerprint_match`. A VM clone of an active machine (same machine_id and product_uuid components, another host key) is 409 `MACHINE_CLONE_DETECTED` under `clone_policy: refuse`, a seat of its own under `new_machine`. `environment: container` is 403 `CONTAINER_NOT_ALLOWED` unless the license allows containers. With a `csr` and a server CA the answer carries a client certificate.',
      tag: 'machines',
      auth: { kind: 'host_proof', audience: AUD_ACTIVATION_PROOF },
      request: { schema: activationBody.schema },
      responses: { 200: { description: 'The same machine, activated again.', schema: TOKEN_BUNDLE_SCHEMA }, 201: { description: 'A new seat.', schema: TOKEN_BUNDLE_SCHEMA } },
      errors: ['NOT_FOUND', 'RATE_LIMITED', 'SEAT_LIMIT', 'HOST_KEY_MISMATCH', 'MACHINE_CLONE_DETECTED', 'CONTAINER_NOT_ALLOWED', 'PROOF_INVALID', 'PROOF_REPLAYED', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED', 'CONFLICT', 'SIGNING_KEY_UNAVAILABLE'],
    },
  });
  r.add('POST', '/api/v1/machines/:id/refresh', async (req) => {
    const id = req.params.id!;
    await d.limiter.take(`refresh:ip:${req.clientIp}`, d.limits.refreshPerIp);
    const { proof, csr, ...fingerprint } = refreshBody(req.body);
    // Per machine only once the proof checked: bogus proofs naming a machine must not
    // spend its budget and lock its genuine refresh out.
    const perMachine = (machineId: string) => d.limiter.take(`refresh:machine:${machineId}`, d.limits.refreshPerMachine);
    return ok<TokenBundle>(await refreshMachine(d.lifecycle, d.audit, req, id, { proof }, csr, perMachine, fingerprint));
  }, {
    doc: {
      summary: 'Refresh a machine\'s tokens',
      description: 'A host whose hardware changed signs its proof with its new `hardware_id` and sends its `components`: within the license\'s `fingerprint_match` the machine keeps its seat and takes the new hardware id; beyond it 409 `FINGERPRINT_MISMATCH` (activate: a new machine).',
      tag: 'machines',
      auth: { kind: 'host_proof', audience: AUD_REFRESH_PROOF },
      request: { schema: refreshBody.schema },
      responses: { 200: { description: 'Fresh tokens.', schema: TOKEN_BUNDLE_SCHEMA } },
      errors: ['NOT_FOUND', 'RATE_LIMITED', 'FINGERPRINT_MISMATCH', 'HOST_KEY_MISMATCH', 'CONTAINER_NOT_ALLOWED', 'PROOF_INVALID', 'PROOF_REPLAYED', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED', 'SIGNING_KEY_UNAVAILABLE'],
    },
  });
  r.add('POST', '/api/v1/machines/:id/heartbeat', async (req) => {
    const id = req.params.id!;
    await d.limiter.take(`heartbeat:ip:${req.clientIp}`, d.limits.heartbeatPerIp);
    const { proof } = proofBody(req.body);
    const perMachine = (machineId: string) => d.limiter.take(`heartbeat:machine:${machineId}`, d.limits.heartbeatPerMachine);
    let r;
    try {
      r = await d.lifecycle.heartbeat(id, proof, perMachine);
    } catch (e) {
      return refused(e, { event_type: 'machine.heartbeat', actor: `machine:${id}`, machine_id: id, client_ip: req.clientIp });
    }
    // Only changes of state are audited (a dead machine coming back), not every beat.
    if (r.revived) {
      await d.audit.record({ event_type: 'machine.heartbeat_revived', actor: `machine:${id}`, machine_id: id, license_id: r.license_id, customer_id: r.customer_id, client_ip: req.clientIp });
    }
    return ok<HeartbeatResponse>(r.response);
  }, {
    doc: {
      summary: 'A machine\'s heartbeat (renews a floating lease)',
      description:
        'The body is a host proof (aud `aegis-heartbeat`) signed by the machine\'s own host key with a `seq` claim strictly greater than its last accepted heartbeat\'s; each proof is single-use. Marks the machine alive (a `dead` one under `heartbeat_cull: keep` comes back), starts its heartbeat window anew and renews a floating license\'s lease. A seat whose lease lapsed, or that missed its window and grace under `heartbeat_cull: deactivate`, has ended: 409 `MACHINE_DEACTIVATED`, activate again.',
      tag: 'machines',
      auth: { kind: 'host_proof', audience: AUD_HEARTBEAT_PROOF },
      request: { schema: proofBody.schema },
      responses: { 200: { description: 'Accepted: the machine\'s heartbeat state now.', schema: HEARTBEAT_RESPONSE_SCHEMA } },
      errors: ['NOT_FOUND', 'RATE_LIMITED', 'PROOF_INVALID', 'PROOF_REPLAYED', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'MACHINE_DEACTIVATED'],
    },
  });
  r.add('GET', '/api/v1/machines/:id', async (req) => {
    const p = await authorize(req, 'licenses:read');
    await tenancy.assertMachine(p, req.params.id!);
    return ok<Machine>(await d.lifecycle.getMachine(req.params.id!));
  }, {
    doc: {
      summary: 'Get a machine',
      description: 'With its heartbeat state (`heartbeat_status` alive or dead, `last_heartbeat_at`) and a floating license\'s `lease_expires_at`.',
      tag: 'machines',
      auth: { kind: 'api_key', scope: 'licenses:read' },
      responses: { 200: { description: 'The machine.', schema: MACHINE_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });
  r.add(
    'DELETE',
    '/api/v1/machines/:id',
    async (req) => {
      const id = req.params.id!;
      let actor: string;
      let auth: DeactivationAuth;
      let admin: ApiPrincipal | null = null;
      // An admin key, or the console session of one.
      if (req.headers['x-api-key'] || req.headers.authorization || d.apiKeys.sessions?.presented(req)) {
        admin = await authorize(req, 'licenses:write');
        actor = actorOf(admin);
        auth = { admin: true };
      } else {
        actor = `machine:${id}`;
        auth = { proof: proofBody(req.body).proof };
      }
      try {
        // Its certificates stop working at once (the agent listener checks serials), and
        // so does its NATS user.
        if (admin) await tenancy.assertMachine(admin, id);
        const res = await d.lifecycle.deactivate(id, auth);
        await d.audit.record({
          event_type: 'machine.deactivated',
          actor,
          machine_id: id,
          license_id: res.license_id,
          customer_id: res.customer_id,
          client_ip: req.clientIp,
          data: { certificates_revoked: res.certificates_revoked, nats_users_revoked: res.nats_users_revoked },
        });
        return ok<Machine>(res.machine);
      } catch (e) {
        return refused(e, { event_type: 'machine.deactivate', actor, machine_id: id, client_ip: req.clientIp });
      }
    },
    {
      body: true,
      doc: {
        summary: 'Deactivate a machine (free its seat)',
        description: 'By an admin, or by the host itself with a proof. Its certificates and NATS user stop working at once.',
        tag: 'machines',
        auth: { kind: 'api_key_or_host_proof', scope: 'licenses:write', audience: AUD_DEACTIVATION_PROOF },
        request: { schema: proofBody.schema, required: false },
        responses: { 200: { description: 'The deactivated machine.', schema: MACHINE_SCHEMA } },
        errors: ['NOT_FOUND', 'PROOF_INVALID', 'PROOF_REPLAYED', 'MACHINE_DEACTIVATED'],
      },
    },
  );

  // --- admin --------------------------------------------------------------------
  r.add('GET', '/api/v1/admin/stats', async (req) => {
    const p = await authorize(req, 'admin:read');
    return ok(await ctx.stats(scopeOf(p)));
  }, { doc: { summary: 'Counts of customers, licenses, machines and refusals', tag: 'admin', auth: { kind: 'api_key', scope: 'admin:read' }, responses: { 200: { description: 'Statistics (of its customer only, for a limited key).', schema: STATS_SCHEMA } } } });
  r.add('GET', '/api/v1/admin/audit-logs', async (req) => {
    const p = await authorize(req, 'admin:read');
    const page = parsePage(req.query);
    const since = req.query.get('since') ?? undefined;
    if (since !== undefined && Number.isNaN(new Date(since).getTime())) {
      throw new ValidationError([{ path: 'since', message: 'must be an ISO-8601 date-time' }]);
    }
    const result = await d.audit.list({
      tenant: scopeOf(p),
      event_type: req.query.get('event_type') ?? undefined,
      license_id: req.query.get('license_id') ?? undefined,
      customer_id: await customerFilter(req.query.get('customer_id')),
      since: since === undefined ? undefined : new Date(since).toISOString(),
      ...page,
    });
    return ok({ ...result, ...page });
  }, {
    doc: {
      summary: 'The audit log, newest first',
      tag: 'admin',
      auth: { kind: 'api_key', scope: 'admin:read' },
      query: [
        ...PAGE_QUERY,
        textQuery('event_type', 'Exact event type, such as license.issued.'),
        textQuery('license_id', 'Only records of this license.'),
        textQuery('customer_id', 'Only records of this customer (id or external reference).'),
        { name: 'since', description: 'Only records at or after this ISO-8601 time.', schema: { type: 'string', format: 'date-time' } },
      ],
      responses: { 200: { description: 'A page of audit records.', schema: AUDIT_PAGE_SCHEMA } },
    },
  });

  return r;
}
