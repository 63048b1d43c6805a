/**
 * aegis-server's main listener over HTTPS and its CORS allow-list, with a real server:
 * - a self-signed certificate made by openssl in the test: the admin API answers over
 *   HTTPS to a client that trusts it, a client that does not refuses the handshake, and a
 *   plain-http request to the TLS port gets no HTTP answer;
 * - start refuses a key that is not the certificate's, an unreadable file, a key others
 *   can read, and a certificate without its key, each with a clear error (the real CLI
 *   too: one line, no stack trace, non-zero exit);
 * - CORS: a listed origin gets Access-Control-Allow-Origin (never -Credentials), an
 *   unlisted one gets no CORS header, a preflight is answered 204 only for a listed
 *   origin (403 without CORS headers otherwise); with no list, no CORS header at all.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../server/src/config.js';
import { KeyStore } from '../server/src/keys/keystore.js';
import { missingCommand, requireCapability } from './harness/capabilities.js';
import { STACK_FRAME } from './harness/ctl.js';
import { startTestServer } from './harness/server.js';

const CLI = fileURLToPath(new URL('../server/src/cli.js', import.meta.url));

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function httpsGet(url: string, opts: { ca?: string; headers?: Record<string, string>; method?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: opts.method ?? 'GET', headers: opts.headers ?? {}, ...(opts.ca ? { ca: opts.ca } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const corsHeaders = (h: Headers | Answer['headers']) => {
  const names = h instanceof Headers ? [...h.keys()] : Object.keys(h);
  return names.filter((n) => n.toLowerCase().startsWith('access-control-'));
};

if (requireCapability(t, missingCommand('openssl'))) {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-tls-main-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const selfSigned = (name: string) => {
    const cert = join(dir, `${name}.crt`);
    const key = join(dir, `${name}.key`);
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
    chmodSync(key, 0o600);
    return { cert, key };
  };
  const main = selfSigned('main');
  const other = selfSigned('other');

  t.test('HTTPS on the main listener with a self-signed certificate', async (t) => {
    const s = await startTestServer({ env: { AEGIS_TLS_CERT: main.cert, AEGIS_TLS_KEY: main.key } });
    t.teardown(() => s.close());
    t.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the listener says https');
    const ca = readFileSync(main.cert, 'utf8');
    const health = await httpsGet(`${s.url}/healthz`, { ca });
    t.equal(health.status, 200);
    t.same(JSON.parse(health.body), { status: 'ok' });
    const customers = await httpsGet(`${s.url}/api/v1/customers`, { ca, headers: { 'x-api-key': s.adminKey } });
    t.equal(customers.status, 200, 'the admin API answers over HTTPS');
    t.equal((await httpsGet(`${s.url}/api/v1/customers`, { ca })).status, 401, 'and still wants its key');
    await t.rejects(httpsGet(`${s.url}/healthz`, { ca: readFileSync(other.cert, 'utf8') }), /self[- ]signed|unable to verify|certificate/i, 'a client that trusts another certificate refuses the handshake');
    const plain = s.url.replace('https://', 'http://');
    await t.rejects(fetch(`${plain}/healthz`), 'plain http to the TLS port gets no HTTP answer');
  });

  t.test('start refuses TLS material that cannot serve, saying which and why', async (t) => {
    await t.rejects(startTestServer({ env: { AEGIS_TLS_CERT: main.cert, AEGIS_TLS_KEY: other.key } }), /TLS key .*other\.key is not the key of the certificate .*main\.crt/, 'a key that is not the certificate\'s');
    await t.rejects(startTestServer({ env: { AEGIS_TLS_CERT: join(dir, 'missing.crt'), AEGIS_TLS_KEY: main.key } }), /TLS certificate .*missing\.crt cannot be read \(ENOENT\); check --tls-cert \/ AEGIS_TLS_CERT/, 'an unreadable certificate');
    const open = join(dir, 'open.key');
    copyFileSync(main.key, open);
    chmodSync(open, 0o644);
    await t.rejects(startTestServer({ env: { AEGIS_TLS_CERT: main.cert, AEGIS_TLS_KEY: open } }), { code: 'INSECURE_KEY_FILE' }, 'a key others can read');
    const garbage = join(dir, 'garbage.crt');
    copyFileSync(main.key, garbage); // a key where the certificate should be
    await t.rejects(startTestServer({ env: { AEGIS_TLS_CERT: garbage, AEGIS_TLS_KEY: main.key } }), /cannot be used .*both must be PEM/, 'a file that is not a certificate');
    t.throws(() => loadConfig({ tlsCert: main.cert }, {}), /needs both a certificate and its key.*only the certificate/, 'a certificate without its key');
    t.throws(() => loadConfig({}, { AEGIS_TLS_KEY: main.key }), /only the key/, 'a key without its certificate');
    t.same(loadConfig({ tlsCert: 'a.crt', tlsKey: 'a.key' }, { AEGIS_TLS_CERT: 'b.crt', AEGIS_TLS_KEY: 'b.key' }).tls, { certPath: 'a.crt', keyPath: 'a.key' }, 'flags win over the environment');
  });

  t.test('the real CLI: a mismatched key ends the start with one clear line', async (t) => {
    const keysDir = join(dir, 'cli-keys');
    KeyStore.open(keysDir).generate();
    const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--database', `sqlite:${join(dir, 'cli.db')}`, '--keys-dir', keysDir, '--tls-cert', main.cert, '--tls-key', other.key], {
      env: { PATH: process.env.PATH, LOG_LEVEL: 'error' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    t.not(code, 0, 'non-zero exit');
    t.match(stderr, /^aegis-server: error: the TLS key .*other\.key is not the key of the certificate .*main\.crt/m);
    t.notMatch(stderr, STACK_FRAME, 'no stack trace');
  });
}

t.test('CORS allow-list on the main listener', async (t) => {
  const LISTED = 'https://console.example.com';
  const s = await startTestServer({ env: { AEGIS_CORS_ORIGINS: `${LISTED}, http://localhost:3000` } });
  t.teardown(() => s.close());

  const listed = await fetch(`${s.url}/api/v1/customers`, { headers: { origin: LISTED, 'x-api-key': s.adminKey } });
  t.equal(listed.status, 200);
  t.equal(listed.headers.get('access-control-allow-origin'), LISTED, 'a listed origin is allowed, by name (never *)');
  t.equal(listed.headers.get('access-control-allow-credentials'), null, 'credentials are never allowed: keys travel in headers, not cookies');
  t.match(listed.headers.get('vary') ?? '', /Origin/);
  t.equal((await fetch(`${s.url}/healthz`, { headers: { origin: 'http://localhost:3000' } })).headers.get('access-control-allow-origin'), 'http://localhost:3000', 'the second listed origin too');
  const refusedKey = await fetch(`${s.url}/api/v1/customers`, { headers: { origin: LISTED } });
  t.equal(refusedKey.status, 401, 'CORS allows the page to ask, not to skip the key');
  t.equal(refusedKey.headers.get('access-control-allow-origin'), LISTED, 'so the page can read why');

  for (const origin of ['https://evil.example.com', 'https://console.example.com.evil.example', 'null', 'https://CONSOLE.example.com', 'http://console.example.com']) {
    const r = await fetch(`${s.url}/api/v1/customers`, { headers: { origin, 'x-api-key': s.adminKey } });
    t.equal(r.status, 200, `${origin}: the request itself is served (browsers enforce CORS)`);
    t.same(corsHeaders(r.headers), [], `${origin}: no CORS header`);
  }

  const preflight = (origin: string) =>
    fetch(`${s.url}/api/v1/customers`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-api-key, content-type' } });
  const ok = await preflight(LISTED);
  t.equal(ok.status, 204, 'preflight for a listed origin');
  t.equal(ok.headers.get('access-control-allow-origin'), LISTED);
  t.match(ok.headers.get('access-control-allow-methods') ?? '', /POST/);
  t.match(ok.headers.get('access-control-allow-headers') ?? '', /x-api-key/);
  t.match(ok.headers.get('access-control-allow-headers') ?? '', /content-type/);
  t.equal(ok.headers.get('access-control-allow-credentials'), null);
  t.equal(await ok.text(), '', 'no body');
  const bad = await preflight('https://evil.example.com');
  t.equal(bad.status, 403, 'preflight for an unlisted origin refused');
  t.same(corsHeaders(bad.headers), [], 'with no CORS header');
  t.equal(((await bad.json()) as { error: { code: string } }).error.code, 'FORBIDDEN');
});

t.test('no AEGIS_CORS_ORIGINS: no CORS headers at all, no preflight answered', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const r = await fetch(`${s.url}/api/v1/customers`, { headers: { origin: 'https://console.example.com', 'x-api-key': s.adminKey } });
  t.equal(r.status, 200);
  t.same(corsHeaders(r.headers), []);
  const p = await fetch(`${s.url}/api/v1/customers`, { method: 'OPTIONS', headers: { origin: 'https://console.example.com', 'access-control-request-method': 'GET' } });
  t.not(p.status, 204, 'the preflight is not answered');
  t.ok(p.status >= 400, `refused (${p.status})`);
  t.same(corsHeaders(p.headers), []);
});

t.test('AEGIS_CORS_ORIGINS accepts exact origins only', async (t) => {
  t.same(loadConfig({}, { AEGIS_CORS_ORIGINS: 'https://a.example.com,http://127.0.0.1:8080, https://a.example.com' }).corsOrigins, ['https://a.example.com', 'http://127.0.0.1:8080'], 'listed once each');
  t.same(loadConfig({}, {}).corsOrigins, [], 'default: none');
  t.throws(() => loadConfig({}, { AEGIS_CORS_ORIGINS: '*' }), /"\*" is refused/);
  t.throws(() => loadConfig({}, { AEGIS_CORS_ORIGINS: 'https://a.example.com/' }), /not an origin.*did you mean https:\/\/a\.example\.com\?/);
  t.throws(() => loadConfig({}, { AEGIS_CORS_ORIGINS: 'https://A.example.com' }), /did you mean https:\/\/a\.example\.com/);
  t.throws(() => loadConfig({}, { AEGIS_CORS_ORIGINS: 'ftp://a.example.com' }), /not an origin/);
  t.throws(() => loadConfig({}, { AEGIS_CORS_ORIGINS: 'null' }), /not an origin/);
});
