/**
 * Advisory intelligence over HTTP: agents report their package inventory (scope
 * `inventory`, filed under the machine their credentials name, never one the body names),
 * and admin keys read the findings and a machine's packages. A key limited to one
 * customer sees only that customer's machines; another's machine id is the unknown-id 404.
 */
import {
  AegisError,
  DebianVersionError,
  INVENTORY_ACCEPTED_SCHEMA,
  INVENTORY_PACKAGE_SCHEMA,
  INVENTORY_REPORT_SCHEMA,
  LISTENING_SOCKET_SCHEMA,
  MAX_INVENTORY_BODY_BYTES,
  AGENT_API,
  ValidationError,
  isMachineId,
  parseDebianVersion,
  type FieldProblem,
  type InventoryReport,
} from '../../protocol/src/index.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { NOT_FOUND_MESSAGE } from './customers.js';
import { authorize } from './http/auth.js';
import type { QueryParamDoc } from './http/route_doc.js';
import type { Router } from './http/router.js';
import { SEVERITY_LEVELS } from './intel/severity.js';
import type { FindingQuery, IntelStore } from './intel/intel_store.js';
import type { MachineLifecycle } from './machine_lifecycle.js';
import { MAX_LIMIT } from './pagination.js';
import type { Tenancy } from './tenancy.js';
import { validator } from './validation.js';

const inventoryBody = validator<InventoryReport>(INVENTORY_REPORT_SCHEMA as unknown as Record<string, unknown>);

const FINDING_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['machine_id', 'advisory', 'aliases', 'package', 'architecture', 'version', 'source', 'source_version', 'fixed_version', 'severity', 'severity_level', 'exposed', 'sockets', 'first_seen_at'],
  properties: {
    machine_id: { type: 'string' },
    advisory: { type: 'string' },
    aliases: { type: 'array', items: { type: 'string' } },
    package: { type: 'string' },
    architecture: { type: 'string' },
    version: { type: 'string' },
    source: { type: 'string' },
    source_version: { type: 'string' },
    fixed_version: { type: ['string', 'null'] },
    severity: { type: ['string', 'null'], description: 'A CVSS vector or the feed\'s urgency word.' },
    severity_level: { enum: [...SEVERITY_LEVELS, 'unknown'] },
    exposed: { type: 'boolean', description: 'True when the package owns the executable of a listening socket.' },
    sockets: { type: 'array', items: LISTENING_SOCKET_SCHEMA },
    first_seen_at: { type: 'string', format: 'date-time' },
  },
} as const;

const FINDING_PAGE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items', 'total', 'limit', 'offset'],
  properties: { items: { type: 'array', items: FINDING_SCHEMA }, total: { type: 'integer' }, limit: { type: 'integer' }, offset: { type: 'integer' } },
} as const;

const MACHINE_PACKAGES_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['machine_id', 'release', 'seq', 'updated_at', 'packages', 'sockets'],
  properties: {
    machine_id: { type: 'string' },
    release: { type: ['string', 'null'] },
    seq: { type: ['integer', 'null'] },
    updated_at: { type: ['string', 'null'] },
    packages: { type: 'array', items: INVENTORY_PACKAGE_SCHEMA },
    sockets: { type: 'array', items: LISTENING_SOCKET_SCHEMA },
  },
} as const;

const FINDING_QUERY_DOC: QueryParamDoc[] = [
  { name: 'machine', description: 'Only this machine\'s findings.', schema: { type: 'string' } },
  { name: 'severity', description: 'At least this level (high: high and critical).', schema: { enum: [...SEVERITY_LEVELS] } },
  { name: 'package', description: 'Only this binary or source package.', schema: { type: 'string', maxLength: 128 } },
  { name: 'advisory', description: 'Only this advisory id (CVE-…, DSA-…, DEBIAN-CVE-…).', schema: { type: 'string', maxLength: 256 } },
  { name: 'limit', description: `Page size, 1 to ${MAX_LIMIT} (default 50).`, schema: { type: 'integer', minimum: 1, maximum: MAX_LIMIT } },
  { name: 'offset', description: 'Items to skip.', schema: { type: 'integer', minimum: 0 } },
];
const FINDING_PARAMS = new Set(FINDING_QUERY_DOC.map((q) => q.name));

const FINDING_EXAMPLE = {
  items: [
    {
      machine_id: '3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10',
      advisory: 'DEBIAN-CVE-2024-6387',
      aliases: ['CVE-2024-6387'],
      package: 'openssh-server',
      architecture: 'amd64',
      version: '1:9.2p1-2+deb12u2',
      source: 'openssh',
      source_version: '1:9.2p1-2+deb12u2',
      fixed_version: '1:9.2p1-2+deb12u3',
      severity: 'high',
      severity_level: 'high',
      exposed: true,
      sockets: [{ proto: 'tcp', address: '0.0.0.0', port: 22, pid: 612, exe: '/usr/sbin/sshd', package: 'openssh-server' }],
      first_seen_at: '2026-01-01T00:00:00.000Z',
    },
  ],
  total: 1,
  limit: 50,
  offset: 0,
};

/** GET /api/v1/findings parameters: unknown or repeated ones are refused, not ignored. */
function findingQueryOf(query: URLSearchParams): Omit<FindingQuery, 'machines'> {
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!FINDING_PARAMS.has(name)) problems.push({ path: name, message: `is not a parameter of this route (${[...FINDING_PARAMS].join(', ')})` });
    else if (seen.has(name)) problems.push({ path: name, message: 'is given more than once' });
    seen.add(name);
  }
  const q: Omit<FindingQuery, 'machines'> = { limit: 50, offset: 0 };
  const machine = query.get('machine');
  if (machine !== null) {
    if (isMachineId(machine)) q.machine = machine;
    else problems.push({ path: 'machine', message: 'must be a machine id' });
  }
  const severity = query.get('severity');
  if (severity !== null) {
    if ((SEVERITY_LEVELS as readonly string[]).includes(severity)) q.severity = severity as FindingQuery['severity'];
    else problems.push({ path: 'severity', message: `must be one of ${SEVERITY_LEVELS.join(', ')}` });
  }
  const pkg = query.get('package');
  if (pkg !== null) {
    if (/^[a-z0-9][a-z0-9+.-]{1,127}$/.test(pkg)) q.package = pkg;
    else problems.push({ path: 'package', message: 'must be a Debian package name' });
  }
  const advisory = query.get('advisory');
  if (advisory !== null) {
    if (advisory.length > 0 && advisory.length <= 256 && !/[\u0000-\u001f\u007f]/.test(advisory)) q.advisory = advisory;
    else problems.push({ path: 'advisory', message: 'must be an advisory id (1 to 256 printable characters)' });
  }
  const limit = query.get('limit');
  if (limit !== null) {
    if (/^\d{1,4}$/.test(limit) && Number(limit) >= 1 && Number(limit) <= MAX_LIMIT) q.limit = Number(limit);
    else problems.push({ path: 'limit', message: `must be an integer from 1 to ${MAX_LIMIT}` });
  }
  const offset = query.get('offset');
  if (offset !== null) {
    if (/^\d{1,9}$/.test(offset)) q.offset = Number(offset);
    else problems.push({ path: 'offset', message: 'must be a non-negative integer' });
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return q;
}

/** Every version in a report must be one dpkg accepts: the matcher compares them. */
function checkVersions(report: InventoryReport): void {
  const problems: FieldProblem[] = [];
  const check = (list: InventoryReport['packages'], path: string) =>
    (list ?? []).forEach((p, i) => {
      for (const field of ['version', 'source_version'] as const) {
        try {
          parseDebianVersion(p[field]);
        } catch (err) {
          if (!(err instanceof DebianVersionError)) throw err;
          if (problems.length < 20) problems.push({ path: `${path}/${i}/${field}`, message: err.message });
        }
      }
    });
  check(report.packages, '/packages');
  check(report.upserted, '/upserted');
  if (problems.length > 0) throw new ValidationError(problems);
}

export interface IntelRouteDeps {
  apiKeys: ApiKeys;
  tenancy: Tenancy;
  store: IntelStore;
}

export function addIntelRoutes(r: Router, d: IntelRouteDeps): void {
  r.add('GET', '/api/v1/findings', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:read');
    const q = findingQueryOf(req.query);
    if (q.machine !== undefined) {
      await d.tenancy.assertMachine(p, q.machine);
      if (!(await d.store.machineExists(q.machine))) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    }
    const page = await d.store.findings({ ...q, machines: await d.tenancy.machinesOf(p) });
    return { status: 200, body: { ...page, limit: q.limit, offset: q.offset } };
  }, {
    doc: {
      summary: 'Vulnerability findings on machines',
      description: 'Advisories matching packages machines reported (by source package and source version, in the machine\'s release), each with whether the package owns a listening socket\'s executable (`exposed`) and those sockets. Recomputed when a machine\'s inventory changes and on every import; a withdrawn advisory yields none. Unknown or repeated parameters are refused.',
      tag: 'intel',
      auth: { kind: 'api_key', scope: 'intel:read' },
      query: FINDING_QUERY_DOC,
      responses: { 200: { description: 'A page of findings.', schema: FINDING_PAGE_SCHEMA, example: FINDING_EXAMPLE } },
      errors: ['NOT_FOUND'],
    },
  });

  r.add('GET', '/api/v1/machines/:id/packages', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:read');
    const id = req.params.id!;
    if (!isMachineId(id)) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    if ([...req.query.keys()].length > 0) throw new ValidationError([...req.query.keys()].map((k) => ({ path: k, message: 'this route takes no parameters' })));
    await d.tenancy.assertMachine(p, id);
    if (!(await d.store.machineExists(id))) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return { status: 200, body: await d.store.machinePackages(id) };
  }, {
    doc: {
      summary: 'A machine\'s reported packages and listening sockets',
      tag: 'intel',
      auth: { kind: 'api_key', scope: 'intel:read' },
      responses: { 200: { description: 'The last inventory the machine\'s agent reported (empty before its first).', schema: MACHINE_PACKAGES_SCHEMA } },
      errors: ['NOT_FOUND'],
    },
  });
}

export interface AgentInventoryRouteDeps {
  lifecycle: MachineLifecycle;
  store: IntelStore;
  audit: AuditLog;
  requireMtls: boolean;
}

/** POST /api/v1/agent/inventory, on whichever listener serves the agent routes. */
export function addAgentInventoryRoute(r: Router, d: AgentInventoryRouteDeps): void {
  r.add('POST', AGENT_API.inventory, async (req) => {
    const peer = await d.lifecycle.certifiedPeer(req.peer, d.requireMtls);
    const who = await d.lifecycle.agentCaller(peer, req.headers.authorization, 'inventory');
    const report = inventoryBody(req.body);
    checkVersions(report);
    // The credentials name the machine; nothing in the body can.
    const accepted = await d.store.applyInventory(who.machineId, report);
    await d.audit.record({
      event_type: 'machine.inventory_reported',
      actor: `machine:${who.machineId}`,
      machine_id: who.machineId,
      client_ip: req.clientIp,
      data: { kind: report.kind, seq: report.seq, packages: accepted.packages, findings: accepted.findings, sockets: report.sockets.length },
    });
    return { status: 200, body: accepted };
  }, {
    maxBody: MAX_INVENTORY_BODY_BYTES,
    doc: {
      summary: 'Report this machine\'s package inventory',
      description: 'A full inventory first, then diffs on the sequence the server acknowledged; a diff on any other base is a CONFLICT and the agent sends a full one. Filed under the machine the credentials name.',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'inventory' },
      request: {
        schema: INVENTORY_REPORT_SCHEMA,
        example: {
          kind: 'full',
          seq: 1,
          release: 'bookworm',
          packages: [{ package: 'openssh-server', version: '1:9.2p1-2+deb12u2', architecture: 'amd64', source: 'openssh', source_version: '1:9.2p1-2+deb12u2' }],
          sockets: [{ proto: 'tcp', address: '0.0.0.0', port: 22, pid: 612, exe: '/usr/sbin/sshd', package: 'openssh-server' }],
        },
      },
      responses: { 200: { description: 'Stored and matched.', schema: INVENTORY_ACCEPTED_SCHEMA, example: { machine_id: '3f1f6c1b-2a10-4c1e-9a51-3f1f6c1b2a10', seq: 1, packages: 1, findings: 0 } } },
      errors: ['CONFLICT', 'PAYLOAD_TOO_LARGE'],
    },
  });
}
