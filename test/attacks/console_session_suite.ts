/**
 * Operator console sessions against a real aegis-server, once per storage backend
 * (console_session_sqlite.test.ts, console_session_postgres.test.ts): the cookie's
 * attributes, the same principal as the key (scopes, customer limit), CSRF and Origin on
 * every write (refused writes change nothing), login CSRF, expiry, sign-out, a revoked
 * key ending its sessions, and the console's files.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { loadConfig } from '../../server/src/config.js';
import { activateTestHost, startTestServer, type TestServer } from '../harness/server.js';


/** The token with its last two characters changed: never equal to it (a fixed 'AA' ending was, once in 4096 tokens). */
function otherToken(token: string): string {
  const tail = token.slice(-2) === 'AA' ? 'BB' : 'AA';
  return token.slice(0, -2) + tail;
}

export type DatabaseFactory = () => Promise<string | undefined>;

/** A browser's requests with a session: the cookie, and what a page adds to a write. */
interface Browser {
  cookie: string;
  csrf: string;
  req(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
}

export function consoleSessionSuite(t: Test, newDatabase: DatabaseFactory): void {
  let dir: string;
  t.before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-console-'));
  });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const start = async (env: Record<string, string> = {}): Promise<TestServer> => {
    const databaseUrl = (await newDatabase()) ?? `sqlite:${join(dir, `${Math.random().toString(36).slice(2)}.db`)}`;
    return startTestServer({ databaseUrl, env: { AEGIS_CONSOLE_SESSION_SECONDS: '600', ...env } });
  };
  const raw = async (s: TestServer, method: string, path: string, body: unknown, headers: Record<string, string>) => {
    const res = await fetch(s.url + path, { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as any) : null, headers: res.headers };
  };
  const signIn = async (s: TestServer, key: string): Promise<Browser & { setCookie: string; answer: any }> => {
    const r = await raw(s, 'POST', '/console/api/session', { api_key: key }, { origin: s.url });
    if (r.status !== 201) throw new Error(`sign-in: ${r.status} ${JSON.stringify(r.body)}`);
    const setCookie = r.headers.get('set-cookie')!;
    const cookie = setCookie.split(';')[0]!;
    const csrf = r.body.csrf_token as string;
    return {
      cookie,
      csrf,
      setCookie,
      answer: r.body,
      req: (method, path, body, headers = {}) =>
        raw(s, method, path, body, { cookie, ...(method === 'GET' ? {} : { 'x-csrf-token': csrf, origin: s.url }), ...headers }),
    };
  };

  t.test('sign-in answers an HttpOnly SameSite=Strict opaque cookie; the session is the key', async (t) => {
    const s = await start();
    t.teardown(() => s.close());
    const b = await signIn(s, s.adminKey);
    t.match(b.setCookie, /^aegis_console=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=600$/, 'HttpOnly, SameSite=Strict, expiry; not Secure over plain HTTP');
    t.notOk(b.setCookie.includes(s.adminKey) || b.setCookie.includes(s.adminKey.slice(10, 30)), 'the cookie is not the key');
    t.same(b.answer.key, { name: 'test-admin', scopes: b.answer.key.scopes, customer_id: null });
    t.ok(b.answer.key.scopes.includes('licenses:write'));
    t.equal((await b.req('GET', '/api/v1/licenses')).status, 200, 'the cookie reads /api/v1 like the key');
    const me = await b.req('GET', '/console/api/session');
    t.same([me.status, me.body.csrf_token], [200, b.csrf], 'the session answers its CSRF token to its own page');
    t.equal((await raw(s, 'GET', '/api/v1/licenses', undefined, { cookie: 'aegis_console=' + 'A'.repeat(43) })).status, 401, 'a made-up session id is 401');
    t.equal((await raw(s, 'GET', '/api/v1/licenses', undefined, {})).status, 401, 'neither key nor cookie: 401');

    const wrong = await raw(s, 'POST', '/console/api/session', { api_key: 'aegis_sk_' + 'x'.repeat(43) }, { origin: s.url });
    t.same([wrong.status, wrong.body.error.code, wrong.headers.get('set-cookie')], [401, 'UNAUTHORIZED', null], 'an unknown key gets no session');
    const extra = await raw(s, 'POST', '/console/api/session', { api_key: s.adminKey, admin: true }, { origin: s.url });
    t.same([extra.status, extra.body.error.code], [400, 'VALIDATION_FAILED'], 'unknown fields refused');
    const audit = (await s.req('GET', '/api/v1/admin/audit-logs?event_type=console.sign_in')).body.items;
    t.equal(audit[0]?.outcome, 'refused', 'the refused sign-in is audited');
    t.equal((await s.req('GET', '/api/v1/admin/audit-logs?event_type=console.signed_in')).body.total, 1, 'the sign-in is audited');

    const secure = await start({ AEGIS_CONSOLE_SECURE_COOKIE: 'true' });
    t.teardown(() => secure.close());
    t.match((await signIn(secure, secure.adminKey)).setCookie, /; Secure$/, 'Secure behind a TLS proxy (AEGIS_CONSOLE_SECURE_COOKIE)');
  });

  t.test('login CSRF: a sign-in from another origin, or with no Origin, is refused', async (t) => {
    const s = await start();
    t.teardown(() => s.close());
    for (const [what, headers] of [
      ['another origin', { origin: 'https://evil.example' }],
      ['no Origin', {}],
      ['Origin null', { origin: 'null' }],
      ['Sec-Fetch-Site cross-site', { origin: s.url, 'sec-fetch-site': 'cross-site' }],
    ] as const) {
      const r = await raw(s, 'POST', '/console/api/session', { api_key: s.adminKey }, headers);
      t.same([r.status, r.body.error.code, r.body.error.details?.reason, r.headers.get('set-cookie')], [403, 'FORBIDDEN', 'origin', null], `${what}: 403, no cookie`);
    }
  });

  t.test('every write needs the CSRF token and the console origin; refused writes change nothing', async (t) => {
    const s = await start();
    t.teardown(() => s.close());
    const b = await signIn(s, s.adminKey);
    const customers = async () => (await s.req('GET', '/api/v1/customers')).body.total as number;
    const before = await customers();
    const cases: Array<[string, Record<string, string>, string]> = [
      ['no token', { 'x-csrf-token': '' }, 'csrf_token'],
      ['a wrong token', { 'x-csrf-token': otherToken(b.csrf) }, 'csrf_token'],
      ['a token of another session', { 'x-csrf-token': (await signIn(s, s.adminKey)).csrf }, 'csrf_token'],
      ['a cross-origin Origin', { origin: 'https://evil.example' }, 'origin'],
      ['another port of this host', { origin: s.url.replace(/:\d+$/, ':1') }, 'origin'],
      ['Sec-Fetch-Site: same-site', { 'sec-fetch-site': 'same-site' }, 'origin'],
    ];
    for (const [what, headers, reason] of cases) {
      const r = await b.req('POST', '/api/v1/customers', { name: `csrf ${what}` }, headers);
      t.same([r.status, r.body.error.code, r.body.error.details?.reason], [403, 'FORBIDDEN', reason], `${what}: 403`);
    }
    const noOrigin = await raw(s, 'POST', '/api/v1/customers', { name: 'no origin' }, { cookie: b.cookie, 'x-csrf-token': b.csrf });
    t.same([noOrigin.status, noOrigin.body.error.details?.reason], [403, 'origin'], 'no Origin at all: 403');
    t.equal(await customers(), before, 'nothing was written by a refused request');
    const lic = (await activateTestHost(s, 'csrf-host')).licenseKey;
    t.ok(lic);
    const listed = (await s.req('GET', '/api/v1/licenses')).body.items[0];
    const revoke = await b.req('DELETE', `/api/v1/licenses/${listed.id}/revoke`, { reason: 'csrf' }, { 'x-csrf-token': 'nope' });
    t.equal(revoke.status, 403, 'revoking without the token: 403');
    t.equal((await s.req('GET', `/api/v1/licenses/${listed.id}`)).body.status, 'active', 'the license is still active');
    const made = await b.req('POST', '/api/v1/customers', { name: 'by the console' });
    t.equal(made.status, 201, 'with the token and the origin the write is done');
    const entry = (await s.req('GET', '/api/v1/admin/audit-logs?event_type=customer.created')).body.items[0];
    t.equal(entry.actor, 'api_key:test-admin', "audited as the session's key");
    t.equal((await raw(s, 'POST', '/api/v1/customers', { name: 'bearer' }, { 'x-api-key': s.adminKey })).status, 201, 'a bearer key needs no CSRF token (it is not ambient)');
  });

  t.test("a session has its key's scopes and customer limit", async (t) => {
    const s = await start();
    t.teardown(() => s.close());
    const a = await activateTestHost(s, 'tenant-a');
    const other = await activateTestHost(s, 'tenant-b');
    const keyA = (await s.app.apiKeys.create('console-a', ['licenses:read', 'licenses:write', 'customers:read', 'admin:read', 'seg:read'], a.customerId)).key;
    const reader = (await s.app.apiKeys.create('console-reader', ['licenses:read'])).key;
    const b = await signIn(s, keyA);
    t.equal(b.answer.key.customer_id, a.customerId, 'the session says whose it is');
    const lics = (await b.req('GET', '/api/v1/licenses')).body.items;
    t.same([...new Set(lics.map((l: any) => l.customer_id))], [a.customerId], "only its customer's licenses");
    const custs = (await b.req('GET', '/api/v1/customers')).body.items;
    t.same(custs.map((c: any) => c.id), [a.customerId], 'only its customer');
    const foreignLicense = (await s.req('GET', `/api/v1/licenses?customer_id=${other.customerId}`)).body.items[0].id;
    t.equal((await b.req('GET', `/api/v1/licenses/${foreignLicense}`)).status, 404, "another customer's license is 404");
    t.equal((await b.req('DELETE', `/api/v1/licenses/${foreignLicense}/revoke`, { reason: 'x' })).status, 404, "revoking another customer's license: 404");
    t.equal((await b.req('DELETE', `/api/v1/machines/${other.machineId}`)).status, 404, "deactivating another customer's machine: 404");
    t.equal((await s.req('GET', `/api/v1/licenses/${foreignLicense}`)).body.status, 'active', 'still active');
    const agents = await b.req('GET', '/api/v1/agents');
    t.equal(agents.status, 200);
    t.ok(agents.body.items.every((x: any) => x.machine_id !== other.machineId), "no agent of another customer's");
    t.equal((await b.req('GET', '/api/v1/seg/maps')).status, 200);
    t.equal((await b.req('POST', '/api/v1/seg/maps/rollback', { service_id: 1 })).body.error.code, 'FORBIDDEN', 'seg:write is not among its scopes');
    t.equal((await b.req('DELETE', `/api/v1/machines/${a.machineId}`)).status, 200, 'its own machine it may deactivate');
    const r = await signIn(s, reader);
    const denied = await r.req('POST', '/api/v1/customers', { name: 'nope' });
    t.same([denied.status, denied.body.error.details?.required_scope], [403, 'customers:write'], 'a read-only key signs in to a read-only session');
  });

  t.test('a session expires, ends at sign-out, and ends when its key is revoked', async (t) => {
    const s = await start();
    t.teardown(() => s.close());
    const b = await signIn(s, s.adminKey);
    t.equal((await b.req('GET', '/api/v1/licenses')).status, 200);
    s.clock.offsetMs += 599_000;
    t.equal((await b.req('GET', '/api/v1/licenses')).status, 200, 'valid until its expiry');
    s.clock.offsetMs += 2_000;
    const expired = await b.req('GET', '/api/v1/licenses');
    t.same([expired.status, expired.body.error.code], [401, 'UNAUTHORIZED'], 'expired: 401');
    t.equal((await b.req('GET', '/console/api/session')).status, 401, 'and the session route says so');

    const c = await signIn(s, s.adminKey);
    const noToken = await raw(s, 'DELETE', '/console/api/session', undefined, { cookie: c.cookie, origin: s.url });
    t.equal(noToken.status, 403, 'sign-out is a write: it needs the token (no forced sign-out from another site)');
    t.equal((await c.req('GET', '/api/v1/licenses')).status, 200, 'still signed in');
    const out = await c.req('DELETE', '/console/api/session');
    t.equal(out.status, 204);
    t.match(out.headers.get('set-cookie') ?? '', /^aegis_console=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0/, 'the cookie is cleared');
    t.equal((await c.req('GET', '/api/v1/licenses')).status, 401, 'the old cookie opens nothing after sign-out');
    t.equal((await c.req('POST', '/api/v1/customers', { name: 'after sign-out' })).status, 401, 'nor writes');
    t.equal((await s.req('GET', '/api/v1/admin/audit-logs?event_type=console.signed_out')).body.total, 1, 'sign-out audited');

    const k = await s.app.apiKeys.create('short-lived', ['licenses:read']);
    const d = await signIn(s, k.key);
    t.equal((await d.req('GET', '/api/v1/licenses')).status, 200);
    await s.app.apiKeys.revoke(k.id);
    t.equal((await d.req('GET', '/api/v1/licenses')).status, 401, 'revoking the key ends its sessions at once');
  });

  t.test('behind a proxy: AEGIS_CONSOLE_ORIGINS names the origins writes may come from', async (t) => {
    t.throws(() => loadConfig({}, { AEGIS_CONSOLE_ORIGINS: 'https://aegis.example.com/path' }), /no path/);
    t.throws(() => loadConfig({}, { AEGIS_CONSOLE_ORIGINS: 'aegis.example.com' }), /AEGIS_CONSOLE_ORIGINS/);
    t.throws(() => loadConfig({}, { AEGIS_CONSOLE_SESSION_SECONDS: '5' }), /AEGIS_CONSOLE_SESSION_SECONDS/);
    t.same(loadConfig({}, { AEGIS_CONSOLE_ORIGINS: 'https://aegis.example.com, https://ops.example.com:8443' }).console.origins, ['https://aegis.example.com', 'https://ops.example.com:8443']);
    const s = await start({ AEGIS_CONSOLE_ORIGINS: 'https://aegis.example.com' });
    t.teardown(() => s.close());
    const own = await raw(s, 'POST', '/console/api/session', { api_key: s.adminKey }, { origin: s.url });
    t.same([own.status, own.body.error.details?.reason], [403, 'origin'], 'the Host-derived origin no longer counts once origins are configured');
    const viaProxy = await raw(s, 'POST', '/console/api/session', { api_key: s.adminKey }, { origin: 'https://aegis.example.com' });
    t.equal(viaProxy.status, 201, 'the configured origin signs in');
    const cookie = viaProxy.headers.get('set-cookie')!.split(';')[0]!;
    const write = await raw(s, 'POST', '/api/v1/customers', { name: 'via proxy' }, { cookie, origin: 'https://aegis.example.com', 'x-csrf-token': viaProxy.body.csrf_token });
    t.equal(write.status, 201, 'and writes');
  });

  t.test('the console files: a fixed list, a strict policy, nothing else reachable', async (t) => {
    const s = await start();
    t.teardown(() => s.close());
    const page = await fetch(s.url + '/console');
    t.equal(page.status, 200);
    t.match(page.headers.get('content-type'), /^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    t.match(csp, /script-src 'self'/);
    t.notOk(/unsafe-inline|unsafe-eval|https?:/.test(csp), 'no inline script, no eval, no other origin');
    t.equal(page.headers.get('x-frame-options'), 'DENY');
    const html = await page.text();
    t.notOk(/https?:\/\//.test(html), 'the page loads nothing from another origin');
    const js = await fetch(s.url + '/console/app.js');
    t.same([js.status, js.headers.get('content-type')], [200, 'text/javascript; charset=utf-8']);
    const bundle = await js.text();
    t.ok(bundle.length > 1000 && !/<script|cdn\.|unpkg|jsdelivr/.test(bundle), 'a bundle with no CDN reference');
    t.equal((await fetch(s.url + '/console/', { redirect: 'manual' })).status, 200, '/console/ is the page too');
    for (const p of ['/console/index.js', '/console/..%2f..%2fpackage.json', '/console/%2e%2e', '/console/app.js.map']) {
      t.equal((await fetch(s.url + p)).status, 404, `${p}: 404`);
    }
  });
}
