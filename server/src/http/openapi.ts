/**
 * The OpenAPI 3.1 document of a router, generated from what its routes registered: method
 * and path from Router.add, everything else from each route's RouteDoc (its request schema
 * is the one its validator checks with), the error envelope and the code → status mapping
 * from STATUS_OF. Nothing here is written by hand per route, so a route added without a
 * doc shows up as undocumented (the API document test fails), not as silently missing.
 */
import {
  ACCEPTED_SCHEMA,
  AGENT_SNAPSHOTS_SCHEMA,
  CUSTOMER_SCHEMA,
  ERROR_ENVELOPE_SCHEMA,
  ISSUED_AGENT_TOKEN_SCHEMA,
  ISSUED_LICENSE_SCHEMA,
  JWK_SCHEMA,
  JWKS_SCHEMA,
  LICENSE_SCHEMA,
  MACHINE_SCHEMA,
  SIGNED_JWKS_SCHEMA,
  TOKEN_BUNDLE_SCHEMA,
  VALIDATE_RESULT_SCHEMA,
  type ErrorCode,
  type JsonSchema,
} from '../../../protocol/src/index.js';
import type { RegisteredRoute, Router } from './router.js';
import type { RouteAuth, RouteDoc } from './route_doc.js';
import { STATUS_OF } from './status.js';

/** Schemas published under components.schemas, by name; any use of one of these objects becomes a $ref. */
const NAMED_SCHEMAS: ReadonlyArray<readonly [string, JsonSchema]> = [
  ['Error', ERROR_ENVELOPE_SCHEMA],
  ['Customer', CUSTOMER_SCHEMA],
  ['License', LICENSE_SCHEMA],
  ['IssuedLicense', ISSUED_LICENSE_SCHEMA],
  ['Machine', MACHINE_SCHEMA],
  ['Jwk', JWK_SCHEMA],
  ['Jwks', JWKS_SCHEMA],
  ['SignedJwks', SIGNED_JWKS_SCHEMA],
  ['ValidateResult', VALIDATE_RESULT_SCHEMA],
  ['TokenBundle', TOKEN_BUNDLE_SCHEMA],
  ['IssuedAgentToken', ISSUED_AGENT_TOKEN_SCHEMA],
  ['AgentSnapshots', AGENT_SNAPSHOTS_SCHEMA],
  ['Accepted', ACCEPTED_SCHEMA],
];

const ERROR_CODES = Object.keys(STATUS_OF) as ErrorCode[];

/** `/api/v1/customers/:id` → `/api/v1/customers/{id}`. */
export function openApiPath(pattern: string): string {
  return pattern.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
}

/** A deep copy of `schema` with every named schema inside it (not itself at the top) replaced by its $ref. */
function withRefs(schema: unknown, names: Map<unknown, string>, top = true): unknown {
  if (!top && names.has(schema)) return { $ref: `#/components/schemas/${names.get(schema)}` };
  if (Array.isArray(schema)) return schema.map((s) => withRefs(s, names, false));
  if (schema !== null && typeof schema === 'object') {
    const out: Record<string, unknown> = {};
    // A schema carried over from another draft (MAP_SNAPSHOT_SCHEMA says draft-07) is read
    // as the document's dialect, 2020-12: its keywords mean the same there.
    for (const [k, v] of Object.entries(schema)) if (k !== '$schema') out[k] = withRefs(v, names, false);
    return out;
  }
  return schema;
}

/** The error codes a route can answer with: its own plus those of its kind. */
export function errorCodesOf(route: RegisteredRoute): ErrorCode[] {
  const codes = new Set<ErrorCode>(route.doc?.errors ?? []);
  // Query, path-parameter and body text is checked at the edge for every route.
  codes.add('VALIDATION_FAILED');
  codes.add('INTERNAL');
  if (route.takesBody) for (const c of ['MALFORMED_JSON', 'UNSUPPORTED_MEDIA_TYPE', 'PAYLOAD_TOO_LARGE'] as const) codes.add(c);
  if (route.method === 'GET') codes.add('BAD_REQUEST');
  const auth = route.doc?.auth.kind;
  if (auth === 'api_key' || auth === 'api_key_or_host_proof' || auth === 'agent_token' || auth === 'console_session') {
    codes.add('UNAUTHORIZED');
    codes.add('FORBIDDEN');
  }
  if (auth === 'host_proof_header') codes.add('UNAUTHORIZED');
  return ERROR_CODES.filter((c) => codes.has(c));
}

function security(auth: RouteAuth): Array<Record<string, string[]>> {
  switch (auth.kind) {
    case 'public':
    case 'host_proof':
      return [];
    case 'api_key':
      return [{ ApiKey: [auth.scope] }, { ApiKeyBearer: [auth.scope] }, { ConsoleSession: [auth.scope] }];
    case 'console_session':
      return [{ ConsoleSession: [] }];
    case 'api_key_or_host_proof':
      // `{}`: no credential header at all, the body's host proof instead.
      return [{ ApiKey: [auth.scope] }, { ApiKeyBearer: [auth.scope] }, { ConsoleSession: [auth.scope] }, {}];
    case 'host_proof_header':
      return [{ HostProof: [] }];
    case 'agent_token':
      return [{ AgentToken: [auth.scope] }];
  }
}

function authText(auth: RouteAuth): string {
  switch (auth.kind) {
    case 'public':
      return 'Public: no credential.';
    case 'api_key':
      return `Admin API key with the \`${auth.scope}\` scope (or the console session of one; a write then carries X-CSRF-Token).`;
    case 'console_session':
      return 'The operator console session cookie; a write carries the session\'s X-CSRF-Token and the console\'s Origin.';
    case 'api_key_or_host_proof':
      return `Admin API key with the \`${auth.scope}\` scope, or no key and a host-key proof (\`aud: ${auth.audience}\`) in the body.`;
    case 'host_proof':
      return `No API key: the body carries a host-key proof (\`aud: ${auth.audience}\`).`;
    case 'host_proof_header':
      return `Host-key proof (\`aud: ${auth.audience}\`) in the X-Aegis-Proof header.`;
    case 'agent_token':
      return `Agent access token (Authorization: Bearer) with the \`${auth.scope}\` scope; on the mTLS listener bound to the client certificate.`;
  }
}

function operation(route: RegisteredRoute, doc: RouteDoc, names: Map<unknown, string>): Record<string, unknown> {
  const params: Record<string, unknown>[] = [];
  for (const seg of route.pattern.split('/')) {
    if (seg.startsWith(':')) params.push({ name: seg.slice(1), in: 'path', required: true, schema: { type: 'string', minLength: 1, maxLength: 256 } });
  }
  for (const q of doc.query ?? []) params.push({ name: q.name, in: 'query', required: false, description: q.description, schema: withRefs(q.schema, names) });
  if (doc.auth.kind === 'host_proof_header') {
    params.push({ name: 'X-Aegis-Proof', in: 'header', required: true, description: `Compact JWS host-key proof, aud ${doc.auth.audience}.`, schema: { type: 'string' } });
  }
  const responses: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(doc.responses)) {
    responses[status] = {
      description: r.description,
      ...(r.schema
        ? { content: { [r.contentType ?? 'application/json']: { schema: withRefs(r.schema, names), ...(r.example === undefined ? {} : { example: r.example }) } } }
        : {}),
    };
  }
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of errorCodesOf(route)) byStatus.set(STATUS_OF[code], [...(byStatus.get(STATUS_OF[code]) ?? []), code]);
  for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    responses[String(status)] = {
      description: `Refused: ${codes.join(', ')}.`,
      content: {
        'application/json': {
          schema: {
            allOf: [{ $ref: '#/components/schemas/Error' }, { type: 'object', properties: { error: { type: 'object', properties: { code: { enum: codes } } } } }],
          },
          example: { error: { code: codes[0], message: `an example ${codes[0]} refusal`, details: null } },
        },
      },
    };
  }
  return {
    operationId: `${route.method.toLowerCase()}${openApiPath(route.pattern).replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
    summary: doc.summary,
    description: [doc.description, authText(doc.auth)].filter(Boolean).join('\n\n'),
    tags: [doc.tag],
    security: security(doc.auth),
    ...(params.length > 0 ? { parameters: params } : {}),
    ...(doc.request
      ? {
          requestBody: {
            required: doc.request.required ?? true,
            content: { 'application/json': { schema: withRefs(doc.request.schema, names), ...(doc.request.example === undefined ? {} : { example: doc.request.example }) } },
          },
        }
      : {}),
    responses,
  };
}

export interface OpenApiInfo {
  version: string;
}

/** The document of every documented route of `router`; routes without a doc are left out (and listed by the test). */
export function openApiDocument(router: Router, info: OpenApiInfo): Record<string, unknown> {
  const names = new Map<unknown, string>(NAMED_SCHEMAS.map(([n, s]) => [s, n]));
  const paths: Record<string, Record<string, unknown>> = {};
  const tags = new Set<string>();
  for (const route of router.registered()) {
    if (!route.doc) continue;
    tags.add(route.doc.tag);
    const path = openApiPath(route.pattern);
    (paths[path] ??= {})[route.method.toLowerCase()] = operation(route, route.doc, names);
  }
  const schemas: Record<string, unknown> = {};
  for (const [name, schema] of NAMED_SCHEMAS) schemas[name] = withRefs(schema, names);
  return {
    openapi: '3.1.0',
    info: {
      title: 'Aegis server API',
      version: info.version,
      description:
        'License authority, host activation and network segmentation. Every refusal is `{"error":{"code","message","details"}}` with a stable code; each operation lists the codes it can answer with under their HTTP status. Generated from the routes the server registered and the schemas it validates requests with.',
    },
    servers: [{ url: '/' }],
    tags: [...tags].map((name) => ({ name })),
    paths,
    components: {
      schemas,
      securitySchemes: {
        ApiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'Admin API key (`aegis-server admin create-key`); the security requirement names the scope it needs.' },
        ApiKeyBearer: { type: 'http', scheme: 'bearer', description: 'The same admin API key as Authorization: Bearer.' },
        HostProof: { type: 'apiKey', in: 'header', name: 'X-Aegis-Proof', description: 'A host-key proof: compact EdDSA JWS signed by the activated host key.' },
        ConsoleSession: {
          type: 'apiKey',
          in: 'cookie',
          name: 'aegis_console',
          description: 'The operator console session (POST /console/api/session): the key it signed in with. Writes also need X-CSRF-Token and a same-origin Origin.',
        },
        AgentToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'A single-use agent access token from POST /api/v1/agent/token.' },
      },
    },
  };
}
