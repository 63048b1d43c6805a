/**
 * Event ingest and the operator's file intel.
 *
 * Agent routes (single-use access tokens, scope per route): POST /api/v1/agent/threats
 * (`threat_reporting`), POST /api/v1/agent/files (`file_analysis`), POST
 * /api/v1/agent/telemetry (`telemetry`). The token names the machine; a body that names
 * another machine is refused (403), and nothing a body says changes where an event is filed.
 *
 * Operator routes (admin API key): YARA rules and hash lists (`intel:read`/`intel:write`,
 * an unrestricted key only: they judge every customer's files), and GET /api/v1/events
 * (`events:read`; a key limited to one customer sees its customer's machines' events only).
 */
import { createHash } from 'node:crypto';
import { AegisError, AGENT_API, ValidationError, isMachineId, type AgentScope, type FieldProblem } from '../../../protocol/src/index.js';
import type { ApiKeys } from '../api_keys.js';
import type { AuditLog } from '../audit.js';
import type { Clock } from '../clock.js';
import { actorOf, authorize } from '../http/auth.js';
import type { QueryParamDoc } from '../http/route_doc.js';
import type { Reply, Request, Router } from '../http/router.js';
import type { AgentCaller, MachineLifecycle } from '../machine_lifecycle.js';
import { parseDateTime } from '../rollout/flow_report.js';
import type { Tenancy } from '../tenancy.js';
import { validator } from '../validation.js';
import { FILE_VERDICTS, HASH_ALGORITHMS, type FileIntel, type HashAlgorithm, type HashListEntry } from './intel_store.js';
import type { EventSettings } from './settings.js';
import { decodeEventCursor, DEFAULT_EVENT_QUERY_LIMIT, EVENT_SEVERITIES, EVENT_SOURCES, MAX_EVENT_QUERY_LIMIT, type EventQuery, type EventSeverity, type EventSource, type EventStore, type NewEvent } from './store.js';


/** How far ahead of the server's clock a host's timestamp may be. */
const FUTURE_SKEW_MS = 5 * 60_000;
const THREAT_MAX_BODY = 64 * 1024;
const TELEMETRY_MAX_BODY = 1024 * 1024;

const KIND = { type: 'string', pattern: '^[a-z0-9][a-z0-9_.:-]{0,63}$', description: 'Lower-case name, e.g. `process.exec` or `ransomware.behaviour`.' } as const;
const TIME = { type: 'string', minLength: 1, maxLength: 40, description: 'RFC 3339 date-time.' } as const;
const MACHINE = { type: 'string', maxLength: 64, description: 'Optional; when present it must be the machine the access token names (else 403).' } as const;
const hex = (n: number) => ({ type: 'string', pattern: `^[0-9a-fA-F]{${n}}$` }) as const;

interface ThreatInput {
  kind: string;
  severity: EventSeverity;
  observed_at: string;
  machine_id?: string;
  process?: { pid: number; ppid?: number; exe?: string; cmdline?: string; user?: string };
  file?: { path?: string; sha256?: string };
  evidence?: Record<string, unknown>;
  description?: string;
}
const threatBody = validator<ThreatInput>({
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'severity', 'observed_at'],
  properties: {
    kind: KIND,
    severity: { type: 'string', enum: [...EVENT_SEVERITIES] },
    observed_at: TIME,
    machine_id: MACHINE,
    description: { type: 'string', maxLength: 2048 },
    process: {
      type: 'object',
      additionalProperties: false,
      required: ['pid'],
      properties: {
        pid: { type: 'integer', minimum: 0, maximum: 4_294_967_295 },
        ppid: { type: 'integer', minimum: 0, maximum: 4_294_967_295 },
        exe: { type: 'string', maxLength: 4096 },
        cmdline: { type: 'string', maxLength: 16_384 },
        user: { type: 'string', maxLength: 256 },
      },
    },
    file: {
      type: 'object',
      additionalProperties: false,
      properties: { path: { type: 'string', maxLength: 4096 }, sha256: hex(64) },
    },
    evidence: { type: 'object', description: `Detector-specific facts; the whole body is at most ${THREAT_MAX_BODY / 1024} KiB.` },
  },
});

interface FileInput {
  sha256: string;
  sha1?: string;
  md5?: string;
  size?: number;
  path?: string;
  content_base64?: string;
  machine_id?: string;
}

interface TelemetryInput {
  machine_id?: string;
  events: Array<{ kind: string; at: string; fields?: Record<string, string | number | boolean | null> }>;
}
const telemetryBody = validator<TelemetryInput>({
  type: 'object',
  additionalProperties: false,
  required: ['events'],
  properties: {
    machine_id: MACHINE,
    events: {
      type: 'array',
      minItems: 1,
      description: 'At most AEGIS_TELEMETRY_MAX_EVENTS (default 500) events; more is a 413.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['kind', 'at'],
        properties: {
          kind: KIND,
          at: TIME,
          fields: {
            type: 'object',
            maxProperties: 64,
            propertyNames: { pattern: '^[A-Za-z0-9_.-]{1,64}$' },
            additionalProperties: { anyOf: [{ type: 'string', maxLength: 2048 }, { type: 'number' }, { type: 'boolean' }, { type: 'null' }] },
            description: 'Flat: at most 64 names, each value a string of at most 2048 characters, a number, a boolean or null.',
          },
        },
      },
    },
  },
});

const RECEIPT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'source', 'machine_id', 'at'],
  properties: { id: { type: 'integer' }, source: { type: 'string' }, machine_id: { type: 'string' }, at: { type: 'string' } },
} as const;

const VERDICT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['event_id', 'machine_id', 'sha256', 'verdict', 'yara_matches', 'hash_list_matches', 'scan'],
  properties: {
    event_id: { type: 'integer' },
    machine_id: { type: 'string' },
    sha256: { type: 'string' },
    verdict: { type: 'string', enum: [...FILE_VERDICTS] },
    yara_matches: {
      type: 'array',
      items: { type: 'object', additionalProperties: false, required: ['rule_id', 'name', 'rule', 'verdict'], properties: { rule_id: { type: 'string' }, name: { type: 'string' }, rule: { type: 'string' }, verdict: { type: 'string' } } },
    },
    hash_list_matches: {
      type: 'array',
      items: { type: 'object', additionalProperties: false, required: ['list', 'algorithm', 'hash', 'verdict'], properties: { list: { type: 'string' }, algorithm: { type: 'string' }, hash: { type: 'string' }, verdict: { type: 'string' } } },
    },
    scan: {
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['status', 'rules'],
      properties: { status: { type: 'string', enum: ['ok', 'timeout', 'error'] }, rules: { type: 'integer' }, error: { type: 'string' } },
      description: 'null: no bytes were sent, only digests were looked up.',
    },
  },
} as const;

const YARA_RULE_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'name', 'source', 'verdict', 'description', 'created_by', 'created_at'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    source: { type: 'string' },
    verdict: { type: 'string', enum: ['malicious', 'suspicious'] },
    description: { type: ['string', 'null'] },
    created_by: { type: 'string' },
    created_at: { type: 'string' },
  },
} as const;

const HASH_ENTRY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'list', 'algorithm', 'hash', 'verdict', 'description', 'created_by', 'created_at'],
  properties: {
    id: { type: 'string' },
    list: { type: 'string' },
    algorithm: { type: 'string', enum: [...HASH_ALGORITHMS] },
    hash: { type: 'string' },
    verdict: { type: 'string', enum: ['malicious', 'suspicious', 'clean'] },
    description: { type: ['string', 'null'] },
    created_by: { type: 'string' },
    created_at: { type: 'string' },
  },
} as const;

const EVENT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'source', 'machine_id', 'customer_id', 'at', 'received_at', 'kind', 'severity', 'body'],
  properties: {
    id: { type: 'integer' },
    source: { type: 'string', enum: [...EVENT_SOURCES] },
    machine_id: { type: 'string' },
    customer_id: { type: ['string', 'null'] },
    at: { type: 'string', description: 'When it happened on the host.' },
    received_at: { type: 'string' },
    kind: { type: 'string' },
    severity: { type: ['string', 'null'], enum: [...EVENT_SEVERITIES, null] },
    body: { type: 'object', description: 'threat: the detection as sent (kind, severity, process, file, evidence, …); file_verdict: digests, size, path, verdict and matches; telemetry: `{fields}`.' },
  },
} as const;

const yaraRuleBody = validator<{ name: string; source: string; verdict?: 'malicious' | 'suspicious'; description?: string | null }>({
  type: 'object',
  additionalProperties: false,
  required: ['name', 'source'],
  properties: {
    name: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,128}$' },
    source: { type: 'string', minLength: 1, maxLength: 65_536, description: 'YARA source; compiled (yarac, warnings fatal) before it is kept. `include` is refused.' },
    verdict: { type: 'string', enum: ['malicious', 'suspicious'], description: 'What a match makes the file (default malicious).' },
    description: { type: ['string', 'null'], maxLength: 1024 },
  },
});

const hashEntryBody = validator<{ list: string; algorithm: HashAlgorithm; hash: string; verdict: HashListEntry['verdict']; description?: string | null }>({
  type: 'object',
  additionalProperties: false,
  required: ['list', 'algorithm', 'hash', 'verdict'],
  properties: {
    list: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
    algorithm: { type: 'string', enum: [...HASH_ALGORITHMS] },
    hash: { type: 'string', pattern: '^[0-9a-fA-F]{32,64}$' },
    verdict: { type: 'string', enum: ['malicious', 'suspicious', 'clean'], description: 'clean: an allow list.' },
    description: { type: ['string', 'null'], maxLength: 1024 },
  },
});

export interface IngestDeps {
  events: EventStore;
  intel: FileIntel;
  settings: EventSettings;
  clock: Clock;
}

function objectBody(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new AegisError('VALIDATION_FAILED', 'body must be a JSON object', { details: [{ path: '', message: 'must be an object' }] });
  }
  return body as Record<string, unknown>;
}

/** A body may name the machine only as the one the token names. */
function sameMachine(who: AgentCaller, named: string | undefined): void {
  if (named !== undefined && named !== who.machineId) {
    throw new AegisError('FORBIDDEN', 'the body names another machine: events are filed under the machine the access token names', { details: { token_machine_id: who.machineId } });
  }
}

/** A host timestamp: RFC 3339, not ahead of the server by more than the skew, not older than retention. */
function hostTime(text: string, path: string, d: IngestDeps, problems: FieldProblem[]): string {
  const ms = parseDateTime(text);
  const now = d.clock.now().getTime();
  if (ms === null) problems.push({ path, message: 'must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z' });
  else if (ms > now + FUTURE_SKEW_MS) problems.push({ path, message: 'is in the future (more than 5 minutes ahead of the server)' });
  else if (ms < now - d.settings.retentionDays * 86_400_000) problems.push({ path, message: `is older than the event retention (${d.settings.retentionDays} days)` });
  return ms === null ? '' : new Date(ms).toISOString();
}

function tooLarge(message: string, limit: number, field: string): AegisError {
  return new AegisError('PAYLOAD_TOO_LARGE', message, { details: { limit, field } });
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Agent ingest routes; `caller` authenticates (certificate when mTLS, then the scoped single-use token). */
export function addAgentIngestRoutes(r: Router, caller: (req: Request, scope: AgentScope) => Promise<AgentCaller>, lifecycle: MachineLifecycle, d: IngestDeps): void {
  const maxFile = d.settings.fileMaxBytes;
  const fileBody = validator<FileInput>({
    type: 'object',
    additionalProperties: false,
    required: ['sha256'],
    properties: {
      sha256: hex(64),
      sha1: hex(40),
      md5: hex(32),
      size: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'The file\'s size on the host (it may be larger than what is sent).' },
      path: { type: 'string', maxLength: 4096 },
      content_base64: { type: 'string', description: `The file's bytes, base64 (at most AEGIS_FILE_MAX_BYTES decoded, default 8 MiB; more is a 413). Checked against every digest given.` },
      machine_id: MACHINE,
    },
  });

  r.add('POST', AGENT_API.threats, async (req): Promise<Reply> => {
    const who = await caller(req, 'threat_reporting');
    const body = threatBody(objectBody(req.body));
    sameMachine(who, body.machine_id);
    const problems: FieldProblem[] = [];
    const at = hostTime(body.observed_at, '/observed_at', d, problems);
    if (problems.length > 0) throw new ValidationError(problems);
    const { machine_id: _m, ...rest } = body;
    const file = rest.file?.sha256 ? { ...rest.file, sha256: rest.file.sha256.toLowerCase() } : rest.file;
    const stored = { ...rest, observed_at: at, ...(file ? { file } : {}) };
    const [id] = await d.events.append(who.machineId, [{ source: 'threat', kind: body.kind, at, severity: body.severity, body: stored }], (trx) => lifecycle.recordSeen(who.machineId, trx));
    return { status: 201, body: { id: id!, source: 'threat', machine_id: who.machineId, at } };
  }, {
    maxBody: THREAT_MAX_BODY,
    doc: {
      summary: 'Report a threat detection',
      description: 'Filed as a `threat` event under the machine the access token names; `observed_at` may be at most 5 minutes ahead of the server and no older than the event retention.',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'threat_reporting' },
      request: {
        schema: threatBody.schema,
        example: { kind: 'ransomware.behaviour', severity: 'high', observed_at: '2026-12-01T10:00:00Z', process: { pid: 4242, exe: '/usr/bin/python3', cmdline: 'python3 enc.py /srv' }, file: { path: '/srv/data.db', sha256: 'a'.repeat(64) }, evidence: { renamed_files: 120, window_seconds: 10 } },
      },
      responses: { 201: { description: 'Stored.', schema: RECEIPT_SCHEMA, example: { id: 17, source: 'threat', machine_id: '7d0c4c1e-2f7b-4f0e-9a51-3f1f6c1b2a10', at: '2026-12-01T10:00:00.000Z' } } },
      errors: ['FORBIDDEN', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED', 'PROOF_REPLAYED'],
    },
  });

  r.add('POST', AGENT_API.files, async (req): Promise<Reply> => {
    const who = await caller(req, 'file_analysis');
    const raw = objectBody(req.body);
    // Size first: an oversized file is a 413 naming the limit, before any other check.
    if (typeof raw.content_base64 === 'string' && Math.floor((raw.content_base64.length * 3) / 4) - (raw.content_base64.match(/=*$/)?.[0].length ?? 0) > maxFile) {
      throw tooLarge(`the file's bytes exceed ${maxFile} bytes (AEGIS_FILE_MAX_BYTES); send the digests alone`, maxFile, '/content_base64');
    }
    const body = fileBody(raw);
    sameMachine(who, body.machine_id);
    const digests: Partial<Record<HashAlgorithm, string>> = { sha256: body.sha256.toLowerCase() };
    if (body.sha1 !== undefined) digests.sha1 = body.sha1.toLowerCase();
    if (body.md5 !== undefined) digests.md5 = body.md5.toLowerCase();
    let bytes: Buffer | null = null;
    if (body.content_base64 !== undefined) {
      const text = body.content_base64;
      if (text.length % 4 !== 0 || !BASE64.test(text)) throw new ValidationError([{ path: '/content_base64', message: 'must be base64 (RFC 4648, padded)' }]);
      bytes = Buffer.from(text, 'base64');
      if (bytes.length > maxFile) throw tooLarge(`the file's bytes exceed ${maxFile} bytes (AEGIS_FILE_MAX_BYTES)`, maxFile, '/content_base64');
      const wrong = HASH_ALGORITHMS.filter((a) => digests[a] !== undefined && createHash(a).update(bytes!).digest('hex') !== digests[a]);
      if (wrong.length > 0) {
        throw new AegisError('HASH_MISMATCH', `the bytes sent do not hash to the ${wrong.join(', ')} given`, { details: { mismatched: wrong } });
      }
    }
    const judged = await d.intel.judge(digests, bytes);
    const at = d.clock.now().toISOString();
    const severity: EventSeverity = judged.verdict === 'malicious' ? 'high' : judged.verdict === 'suspicious' ? 'medium' : 'info';
    const eventBody = {
      ...digests,
      ...(body.size !== undefined ? { size: body.size } : {}),
      ...(bytes !== null ? { bytes_received: bytes.length } : {}),
      ...(body.path !== undefined ? { path: body.path } : {}),
      verdict: judged.verdict,
      yara_matches: judged.yara_matches,
      hash_list_matches: judged.hash_list_matches,
      scan: judged.scan,
    };
    const [id] = await d.events.append(who.machineId, [{ source: 'file_verdict', kind: judged.verdict, at, severity, body: eventBody }], (trx) => lifecycle.recordSeen(who.machineId, trx));
    return { status: 200, body: { event_id: id!, machine_id: who.machineId, sha256: digests.sha256!, ...judged } };
  }, {
    // Base64 is 4/3 of the bytes; the rest of the body is small.
    maxBody: Math.ceil(maxFile / 3) * 4 + 64 * 1024,
    doc: {
      summary: 'Ask for a file verdict',
      description: 'Digests (sha256 required) and, within AEGIS_FILE_MAX_BYTES, the bytes. Bytes that do not hash to every digest given are refused (HASH_MISMATCH). The verdict: `malicious` when a malicious hash list entry or YARA rule matched, else `suspicious` when a suspicious one did, else `clean` when an allow (clean) list entry matched or the bytes were scanned to the end by at least one rule without a match, else `unknown`. Each answer is kept as a `file_verdict` event (the bytes are not kept).',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'file_analysis' },
      request: { schema: fileBody.schema, example: { sha256: '687f3891dc9240536081682526d39790801afa1ceb091dd0ed6e0330a59593b2', path: '/tmp/dropper', size: 5, content_base64: 'RVZJTCE=' } },
      responses: { 200: { description: 'The verdict.', schema: VERDICT_SCHEMA } },
      errors: ['FORBIDDEN', 'HASH_MISMATCH', 'PAYLOAD_TOO_LARGE', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED', 'PROOF_REPLAYED'],
    },
  });

  r.add('POST', AGENT_API.telemetry, async (req): Promise<Reply> => {
    const who = await caller(req, 'telemetry');
    const raw = objectBody(req.body);
    if (Array.isArray(raw.events) && raw.events.length > d.settings.telemetryMaxEvents) {
      throw tooLarge(`a telemetry batch holds at most ${d.settings.telemetryMaxEvents} events (AEGIS_TELEMETRY_MAX_EVENTS); send several`, d.settings.telemetryMaxEvents, '/events');
    }
    const body = telemetryBody(raw);
    sameMachine(who, body.machine_id);
    const problems: FieldProblem[] = [];
    const events: NewEvent[] = body.events.map((e, i) => ({ source: 'telemetry', kind: e.kind, at: hostTime(e.at, `/events/${i}/at`, d, problems), severity: null, body: { fields: e.fields ?? {} } }));
    if (problems.length > 0) throw new ValidationError(problems);
    await d.events.append(who.machineId, events, (trx) => lifecycle.recordSeen(who.machineId, trx));
    return { status: 202, body: { accepted: events.length } };
  }, {
    maxBody: TELEMETRY_MAX_BODY,
    doc: {
      summary: 'Send a batch of telemetry events',
      description: 'Each event is kept as a `telemetry` event under the machine the access token names, all or none; the batch marks the machine seen.',
      tag: 'agent',
      auth: { kind: 'agent_token', scope: 'telemetry' },
      request: { schema: telemetryBody.schema, example: { events: [{ kind: 'process.exec', at: '2026-12-01T10:00:00Z', fields: { pid: 4242, exe: '/usr/bin/curl', uid: 1000 } }] } },
      responses: { 202: { description: 'Stored.', schema: { type: 'object', additionalProperties: false, required: ['accepted'], properties: { accepted: { type: 'integer', minimum: 1 } } }, example: { accepted: 1 } } },
      errors: ['FORBIDDEN', 'PAYLOAD_TOO_LARGE', 'LICENSE_REVOKED', 'LICENSE_EXPIRED', 'LICENSE_SUSPENDED', 'MACHINE_DEACTIVATED', 'PROOF_REPLAYED'],
    },
  });
}

export interface IntelRouteDeps {
  apiKeys: ApiKeys;
  audit: AuditLog;
  tenancy: Tenancy;
  events: EventStore;
  intel: FileIntel;
}

const EVENT_QUERY_PARAMS = new Set(['machine', 'source', 'kind', 'since', 'until', 'limit', 'cursor']);

function onlyParams(query: URLSearchParams, allowed: ReadonlySet<string>, problems: FieldProblem[]): void {
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!allowed.has(name)) problems.push({ path: name, message: `is not a parameter of this route (${[...allowed].join(', ') || 'none'})` });
    else if (seen.has(name)) problems.push({ path: name, message: 'is given more than once' });
    seen.add(name);
  }
}

function eventQueryOf(query: URLSearchParams): Omit<EventQuery, 'customer'> {
  const problems: FieldProblem[] = [];
  onlyParams(query, EVENT_QUERY_PARAMS, problems);
  const q: Omit<EventQuery, 'customer'> = { limit: DEFAULT_EVENT_QUERY_LIMIT };
  const get = (name: string) => (EVENT_QUERY_PARAMS.has(name) ? query.get(name) : null);
  const machine = get('machine');
  if (machine !== null) {
    if (isMachineId(machine)) q.machine = machine;
    else problems.push({ path: 'machine', message: 'must be a machine id' });
  }
  const source = get('source');
  if (source !== null) {
    const list = source.split(',');
    if (list.every((s) => (EVENT_SOURCES as readonly string[]).includes(s))) q.sources = list as EventSource[];
    else problems.push({ path: 'source', message: `must be one or more (comma-separated) of ${EVENT_SOURCES.join(', ')}` });
  }
  const kind = get('kind');
  if (kind !== null) {
    if (/^[a-z0-9][a-z0-9_.:-]{0,63}$/.test(kind)) q.kind = kind;
    else problems.push({ path: 'kind', message: 'must be an event kind (lower-case letters, digits, _ . : -)' });
  }
  for (const name of ['since', 'until'] as const) {
    const text = get(name);
    if (text === null) continue;
    const ms = parseDateTime(text);
    if (ms === null) problems.push({ path: name, message: 'must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z' });
    else q[name] = new Date(ms).toISOString();
  }
  const limit = get('limit');
  if (limit !== null) {
    if (/^\d{1,4}$/.test(limit) && Number(limit) >= 1 && Number(limit) <= MAX_EVENT_QUERY_LIMIT) q.limit = Number(limit);
    else problems.push({ path: 'limit', message: `must be an integer from 1 to ${MAX_EVENT_QUERY_LIMIT}` });
  }
  const cursor = get('cursor');
  if (cursor !== null) {
    try {
      q.cursor = decodeEventCursor(cursor);
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      problems.push(...e.problems);
    }
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return q;
}

const EVENT_QUERY_DOC: QueryParamDoc[] = [
  { name: 'machine', description: 'Only this machine\'s events (a machine id).', schema: { type: 'string', format: 'uuid' } },
  { name: 'source', description: `One or more (comma-separated) of ${EVENT_SOURCES.join(', ')}.`, schema: { type: 'string', maxLength: 64 } },
  { name: 'kind', description: 'Only this kind.', schema: { type: 'string', maxLength: 64 } },
  { name: 'since', description: 'Happened at or after (ISO 8601).', schema: { type: 'string', format: 'date-time' } },
  { name: 'until', description: 'Happened before (ISO 8601).', schema: { type: 'string', format: 'date-time' } },
  { name: 'limit', description: `At most this many (default ${DEFAULT_EVENT_QUERY_LIMIT}).`, schema: { type: 'integer', minimum: 1, maximum: MAX_EVENT_QUERY_LIMIT } },
  { name: 'cursor', description: 'next_cursor of the previous page.', schema: { type: 'string', maxLength: 256 } },
];

/** The operator's routes: YARA rules, hash lists, and the events read. */
export function addEventRoutes(r: Router, d: IntelRouteDeps): void {
  const { intel, tenancy } = d;
  const items = (schema: unknown) => ({ type: 'object', additionalProperties: false, required: ['items'], properties: { items: { type: 'array', items: schema } } });

  r.add('POST', '/api/v1/yara-rules', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:write');
    tenancy.assertUnrestricted(p, 'change the YARA rules every customer\'s files are judged by');
    const rule = await intel.addRule(yaraRuleBody(req.body), actorOf(p));
    await d.audit.record({ event_type: 'intel.yara_rule_added', actor: actorOf(p), client_ip: req.clientIp, data: { rule_id: rule.id, name: rule.name, verdict: rule.verdict } });
    return { status: 201, body: rule };
  }, {
    doc: {
      summary: 'Add a YARA rule',
      description: 'Compiled with yarac first (warnings are fatal, `include` is refused): a rule that does not compile is a 400 YARA_RULE_INVALID with the compiler\'s messages, and is not kept.',
      tag: 'intel',
      auth: { kind: 'api_key', scope: 'intel:write' },
      request: { schema: yaraRuleBody.schema, example: { name: 'evil_marker', source: 'rule evil_marker { strings: $a = "EVIL!" condition: $a }', verdict: 'malicious' } },
      responses: { 201: { description: 'Kept.', schema: YARA_RULE_SCHEMA } },
      errors: ['YARA_RULE_INVALID', 'CONFLICT', 'FORBIDDEN'],
    },
  });
  r.add('GET', '/api/v1/yara-rules', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:read');
    tenancy.assertUnrestricted(p, 'read the YARA rules');
    return { status: 200, body: { items: await intel.listRules() } };
  }, {
    doc: { summary: 'List YARA rules', tag: 'intel', auth: { kind: 'api_key', scope: 'intel:read' }, responses: { 200: { description: 'Every rule, oldest first.', schema: items(YARA_RULE_SCHEMA) } }, errors: ['FORBIDDEN'] },
  });
  r.add('DELETE', '/api/v1/yara-rules/:id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:write');
    tenancy.assertUnrestricted(p, 'change the YARA rules');
    const rule = await intel.deleteRule(req.params.id!);
    await d.audit.record({ event_type: 'intel.yara_rule_deleted', actor: actorOf(p), client_ip: req.clientIp, data: { rule_id: rule.id, name: rule.name } });
    return { status: 200, body: rule };
  }, {
    body: false,
    doc: { summary: 'Delete a YARA rule', tag: 'intel', auth: { kind: 'api_key', scope: 'intel:write' }, responses: { 200: { description: 'The deleted rule.', schema: YARA_RULE_SCHEMA } }, errors: ['NOT_FOUND', 'FORBIDDEN'] },
  });

  r.add('POST', '/api/v1/hash-lists', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:write');
    tenancy.assertUnrestricted(p, 'change the hash lists every customer\'s files are judged by');
    const entry = await intel.addHash(hashEntryBody(req.body), actorOf(p));
    await d.audit.record({ event_type: 'intel.hash_added', actor: actorOf(p), client_ip: req.clientIp, data: { entry_id: entry.id, list: entry.list, algorithm: entry.algorithm, hash: entry.hash, verdict: entry.verdict } });
    return { status: 201, body: entry };
  }, {
    doc: {
      summary: 'Add a digest to a hash list',
      description: 'A list is a name; each entry gives the verdict a file with that digest gets (`clean` entries make an allow list).',
      tag: 'intel',
      auth: { kind: 'api_key', scope: 'intel:write' },
      request: { schema: hashEntryBody.schema, example: { list: 'known-bad', algorithm: 'sha256', hash: 'a'.repeat(64), verdict: 'malicious', description: 'dropper seen 2026-11' } },
      responses: { 201: { description: 'Kept.', schema: HASH_ENTRY_SCHEMA } },
      errors: ['CONFLICT', 'FORBIDDEN'],
    },
  });
  r.add('GET', '/api/v1/hash-lists', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:read');
    tenancy.assertUnrestricted(p, 'read the hash lists');
    const problems: FieldProblem[] = [];
    onlyParams(req.query, new Set(['list']), problems);
    const list = req.query.get('list');
    if (list !== null && !/^[A-Za-z0-9_.-]{1,64}$/.test(list)) problems.push({ path: 'list', message: 'must be a list name' });
    if (problems.length > 0) throw new ValidationError(problems);
    return { status: 200, body: { items: await intel.listHashes(list ?? undefined) } };
  }, {
    doc: {
      summary: 'List hash list entries',
      tag: 'intel',
      auth: { kind: 'api_key', scope: 'intel:read' },
      query: [{ name: 'list', description: 'Only this list.', schema: { type: 'string', maxLength: 64 } }],
      responses: { 200: { description: 'The entries.', schema: items(HASH_ENTRY_SCHEMA) } },
      errors: ['FORBIDDEN'],
    },
  });
  r.add('DELETE', '/api/v1/hash-lists/:id', async (req) => {
    const p = await authorize(d.apiKeys, req, 'intel:write');
    tenancy.assertUnrestricted(p, 'change the hash lists');
    const entry = await intel.deleteHash(req.params.id!);
    await d.audit.record({ event_type: 'intel.hash_deleted', actor: actorOf(p), client_ip: req.clientIp, data: { entry_id: entry.id, list: entry.list, algorithm: entry.algorithm, hash: entry.hash } });
    return { status: 200, body: entry };
  }, {
    body: false,
    doc: { summary: 'Delete a hash list entry', tag: 'intel', auth: { kind: 'api_key', scope: 'intel:write' }, responses: { 200: { description: 'The deleted entry.', schema: HASH_ENTRY_SCHEMA } }, errors: ['NOT_FOUND', 'FORBIDDEN'] },
  });

  r.add('GET', '/api/v1/events', async (req) => {
    const p = await authorize(d.apiKeys, req, 'events:read');
    const q = eventQueryOf(req.query);
    if (q.machine !== undefined) await tenancy.assertMachine(p, q.machine);
    return { status: 200, body: await d.events.query({ ...q, customer: p.customer_id }) };
  }, {
    doc: {
      summary: 'What agents reported',
      description: 'Threats, file verdicts and telemetry, newest first (by when they happened on the host), paged by cursor. A key limited to one customer sees its customer\'s machines only (another\'s machine id is a 404).',
      tag: 'events',
      auth: { kind: 'api_key', scope: 'events:read' },
      query: EVENT_QUERY_DOC,
      responses: { 200: { description: 'A page of events.', schema: { type: 'object', additionalProperties: false, required: ['items', 'next_cursor'], properties: { items: { type: 'array', items: EVENT_SCHEMA }, next_cursor: { type: ['string', 'null'] } } } } },
      errors: ['NOT_FOUND'],
    },
  });
}
