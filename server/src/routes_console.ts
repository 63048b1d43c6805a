/**
 * The operator console: `GET /console` (its page), `GET /console/:asset` (the bundle the
 * build put in dist/console, a fixed list of names, as /docs serves Swagger UI) and the
 * session routes under /console/api/session: sign in with an admin API key (a session
 * cookie back), read the session (its CSRF token and expiry), sign out. Everything the
 * console shows and does goes through the /api/v1 routes with that cookie (http/auth.ts),
 * so the key's scopes and customer limit hold for every page and action.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AegisError } from '../../protocol/src/index.js';
import type { ApiKeys } from './api_keys.js';
import type { AuditLog } from './audit.js';
import { authorize } from './http/auth.js';
import type { Keyring } from './keys/keyring.js';
import type { Clock } from './clock.js';
import { ConsoleSessions, CSRF_HEADER, SESSION_COOKIE } from './console/sessions.js';
import { LIVE_TOPICS, type LiveHub } from './console/live.js';
import type { Reply, Request, Router } from './http/router.js';
import type { RouteDoc } from './http/route_doc.js';
import { validator } from './validation.js';

/** Own scripts, styles and API calls only; no inline script or style, no frames, no other origin. */
export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** What the build writes to dist/console (scripts/build-console.mjs). */
const ASSETS: Readonly<Record<string, string>> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};

const PAGE_HEADERS = {
  'content-security-policy': CONSOLE_CSP,
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
};

/** The built console, next to the compiled server: dist/server/src → dist/console. */
const BUILD_DIR = new URL('../../console/', import.meta.url);

interface Asset {
  bytes: Buffer;
  type: string;
  etag: string;
}

const signInBody = validator<{ api_key: string }>({
  type: 'object',
  additionalProperties: false,
  required: ['api_key'],
  properties: { api_key: { type: 'string', minLength: 1, maxLength: 256, description: 'An admin API key (aegis_sk_…).' } },
});

const SESSION_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['csrf_token', 'expires_at', 'key'],
  properties: {
    csrf_token: { type: 'string', description: `Send it in ${CSRF_HEADER} with every write.` },
    expires_at: { type: 'string', format: 'date-time' },
    key: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'scopes', 'customer_id'],
      properties: { name: { type: 'string' }, scopes: { type: 'array', items: { type: 'string' } }, customer_id: { type: ['string', 'null'] } },
    },
  },
} as const;
const SESSION_EXAMPLE = {
  csrf_token: 'Zm9yIGRvY3VtZW50YXRpb24gb25seSwgbmV2ZXIgaXNzdWVk',
  expires_at: '2026-01-01T08:00:00.000Z',
  key: { name: 'ops-console', scopes: ['licenses:read', 'licenses:write'], customer_id: null },
};

const TAG = 'console';

const SIGNING_KEYS_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['items'],
  properties: {
    items: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['kid', 'active', 'retired', 'created_at', 'retired_at', 'age_seconds'],
        properties: {
          kid: { type: 'string' },
          active: { type: 'boolean' },
          retired: { type: 'boolean' },
          created_at: { type: 'string' },
          retired_at: { type: ['string', 'null'] },
          age_seconds: { type: 'number', minimum: 0 },
        },
      },
    },
  },
} as const;

export function addConsoleRoutes(router: Router, d: { apiKeys: ApiKeys; audit: AuditLog; sessions: ConsoleSessions; keys: Keyring; clock: Clock; live: LiveHub }): void {
  const { sessions, audit } = d;
  const assets = new Map<string, Asset>();
  const load = (name: string, type: string): Asset => {
    let a = assets.get(name);
    if (!a) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(new URL(name, BUILD_DIR));
      } catch {
        throw new AegisError('NOT_FOUND', 'the console is not built (npm run build:console)');
      }
      a = { bytes, type, etag: `"${createHash('sha256').update(bytes).digest('base64url').slice(0, 27)}"` };
      assets.set(name, a);
    }
    return a;
  };
  const cached = (req: Request, a: Asset, cacheControl: string): Reply => {
    const headers = { ...PAGE_HEADERS, 'content-type': a.type, 'cache-control': cacheControl, etag: a.etag };
    if (req.headers['if-none-match'] === a.etag) return { status: 304, body: null, headers };
    return { status: 200, body: null, raw: a.bytes, headers };
  };

  router.add('GET', '/console', async (req) => cached(req, load('index.html', 'text/html; charset=utf-8'), 'no-cache'), {
    doc: {
      summary: 'The operator console (sign in with an admin API key)',
      tag: TAG,
      auth: { kind: 'public' },
      responses: { 200: { description: 'The console page.', schema: { type: 'string' }, contentType: 'text/html' }, 304: { description: 'Not modified (ETag).' } },
      errors: ['NOT_FOUND'],
    },
  });
  router.add(
    'GET',
    '/console/:asset',
    async (req) => {
      const name = req.params.asset!;
      if (!Object.hasOwn(ASSETS, name)) throw new AegisError('NOT_FOUND', 'not found');
      return cached(req, load(name, ASSETS[name]!), 'no-cache');
    },
    {
      doc: {
        summary: 'A file of the operator console',
        description: `One of: ${Object.keys(ASSETS).join(', ')}. Any other name is 404.`,
        tag: TAG,
        auth: { kind: 'public' },
        responses: { 200: { description: 'The file, with its content type.' }, 304: { description: 'Not modified (ETag).' } },
        errors: ['NOT_FOUND'],
      },
    },
  );

  // The overview's signing keys: which is active and how old each is (public keys only, as in the JWKS).
  router.add(
    'GET',
    '/api/v1/admin/signing-keys',
    async (req) => {
      await authorize(d.apiKeys, req, 'admin:read');
      const now = d.clock.now().getTime();
      const items = d.keys.kids().map((kid) => {
        const k = d.keys.info(kid);
        return { kid, active: k.active, retired: k.retired, created_at: k.created_at, retired_at: k.retired_at, age_seconds: Math.max(0, Math.round((now - new Date(k.created_at).getTime()) / 1000)) };
      });
      return { status: 200, body: { items } };
    },
    {
      doc: {
        summary: 'Signing keys and their age',
        description: 'Every key id in the keyring: active, retired, created (the public halves are in /.well-known/jwks.json).',
        tag: 'admin',
        auth: { kind: 'api_key', scope: 'admin:read' },
        responses: {
          200: {
            description: 'The keyring.',
            schema: SIGNING_KEYS_SCHEMA,
            example: { items: [{ kid: 'k-2026-01-01', active: true, retired: false, created_at: '2026-01-01T00:00:00.000Z', retired_at: null, age_seconds: 86400 }] },
          },
        },
      },
    },
  );

  const sessionDoc = (over: Partial<RouteDoc>): RouteDoc => ({ summary: '', tag: TAG, auth: { kind: 'console_session' }, responses: {}, ...over });

  router.add(
    'POST',
    '/console/api/session',
    async (req) => {
      // Login CSRF: another site must not sign a browser in to the attacker's key.
      sessions.assertOrigin(req);
      const { api_key } = signInBody(req.body);
      const p = await d.apiKeys.authenticate(api_key);
      if (!p) {
        await audit.recordRefusal({ event_type: 'console.sign_in', actor: 'console', client_ip: req.clientIp, reason: 'UNAUTHORIZED: unknown or revoked API key' });
        throw new AegisError('UNAUTHORIZED', 'unknown or revoked API key');
      }
      const s = await sessions.open(p);
      await audit.record({ event_type: 'console.signed_in', actor: `api_key:${p.name}`, customer_id: p.customer_id, client_ip: req.clientIp, data: { expires_at: s.expires_at } });
      return {
        status: 201,
        body: { csrf_token: s.csrf_token, expires_at: s.expires_at, key: { name: p.name, scopes: p.scopes, customer_id: p.customer_id } },
        headers: { 'set-cookie': sessions.cookie(req, s.id) },
      };
    },
    {
      doc: sessionDoc({
        summary: 'Sign in to the console',
        description: `Answers a session cookie (${SESSION_COOKIE}: HttpOnly, SameSite=Strict, Secure over TLS) that stands for the key until it expires (AEGIS_CONSOLE_SESSION_SECONDS), the key is revoked, or sign-out. The Origin must be the console's own.`,
        auth: { kind: 'public' },
        request: { schema: signInBody.schema, example: { api_key: 'aegis_sk_…' } },
        responses: { 201: { description: 'Signed in; the cookie is in Set-Cookie.', schema: SESSION_SCHEMA, example: SESSION_EXAMPLE } },
        errors: ['UNAUTHORIZED', 'FORBIDDEN'],
      }),
    },
  );
  router.add(
    'GET',
    '/console/api/session',
    async (req) => {
      const { principal: p, csrf_token, expires_at } = await sessions.authenticate(req);
      return { status: 200, body: { csrf_token, expires_at, key: { name: p.name, scopes: p.scopes, customer_id: p.customer_id } } };
    },
    {
      doc: sessionDoc({
        summary: 'The current console session',
        description: 'Its CSRF token (a page of another origin cannot read this answer), expiry and key.',
        responses: { 200: { description: 'The session.', schema: SESSION_SCHEMA, example: SESSION_EXAMPLE } },
      }),
    },
  );
  router.add(
    'DELETE',
    '/console/api/session',
    async (req) => {
      const { principal: p } = await sessions.authenticate(req);
      await sessions.close(req);
      await audit.record({ event_type: 'console.signed_out', actor: `api_key:${p.name}`, customer_id: p.customer_id, client_ip: req.clientIp });
      return { status: 204, body: null, headers: { 'set-cookie': sessions.cookie(req, null) } };
    },
    {
      body: false,
      doc: sessionDoc({
        summary: 'Sign out of the console',
        description: 'The session ends on the server at once: its cookie opens nothing afterwards.',
        responses: { 204: { description: 'Signed out; the cookie is cleared.' } },
      }),
    },
  );

  router.add(
    'GET',
    '/console/api/events',
    async (req) => {
      const { principal: p, session_key } = await sessions.authenticate(req);
      const why = d.live.refusal(session_key);
      if (why) throw new AegisError('RATE_LIMITED', why, { details: { retry_after: 30 } });
      return {
        status: 200,
        body: null,
        headers: { ...PAGE_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' },
        stream: (sink) => d.live.open(session_key, p.customer_id, sink),
      };
    },
    {
      doc: sessionDoc({
        summary: 'Live updates for the console (server-sent events)',
        description: `A text/event-stream that names what changed, never the data: \`event: change\` with \`{"topics":[…]}\` (of ${LIVE_TOPICS.join(', ')}), coalesced; the page refetches through /api/v1 with its session. A key limited to one customer hears only of that customer. \`event: end\` and the stream closes when the session ends (sign-out, expiry, revoked key). At most AEGIS_CONSOLE_STREAMS_PER_SESSION streams per session and AEGIS_CONSOLE_STREAMS_MAX in all (429 past either); a heartbeat comment every AEGIS_CONSOLE_STREAM_HEARTBEAT_MS.`,
        responses: {
          200: {
            description: 'The event stream (stays open).',
            schema: { type: 'string' },
            contentType: 'text/event-stream',
          },
        },
        errors: ['RATE_LIMITED'],
      }),
    },
  );
}
