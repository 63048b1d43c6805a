/**
 * The agent's server URL list (server_url as a comma list): the next URL only when one
 * cannot be reached or answers 5xx, the one that answers kept; a 4xx is an answer, and a
 * 2xx with a forged signature is refused, never skipped for the next URL.
 */
import t from 'tap';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ServerLink } from '../agent/src/server_link.js';
import { loadConfig, serverUrlsOf } from '../agent/src/config.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from './harness/agent.js';
import { startTestServer, type TestServer } from './harness/server.js';
import { freePort } from './harness/postgres.js';

const quiet = { info() {}, warn() {}, error() {}, debug() {} } as never;

interface Fake {
  url: string;
  hits: string[];
  close(): Promise<void>;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse, hits: string[]) => void): Promise<Fake> {
  const hits: string[] = [];
  const srv: Server = createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    handler(req, res, hits);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

const JWKS = JSON.stringify({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'AAAA', kid: 'k1' }] });
const answer = (status: number, body: string) => (_req: IncomingMessage, res: ServerResponse) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(body);
};

t.test('config: server_url as a comma list, or server_urls; every URL is checked', async (t) => {
  const env = { AEGIS_CONFIG: undefined } as NodeJS.ProcessEnv;
  const list = loadConfig({ configPath: undefined, env: { ...env, AEGIS_SERVER_URL: 'https://a.example:8443,https://b.example:8443' } });
  t.same(serverUrlsOf(list.config), ['https://a.example:8443', 'https://b.example:8443']);
  const arr = loadConfig({ env, flags: { server_urls: ['https://c.example', 'https://d.example'] } });
  t.same(serverUrlsOf(arr.config), ['https://c.example', 'https://d.example'], 'server_urls wins');
  t.throws(() => loadConfig({ env: { ...env, AEGIS_SERVER_URL: 'https://a.example,http://b.example' } }), /server_url: http:\/\/b\.example is plain http:\/\//, 'a plain http:// second URL is refused like a first');
  t.throws(() => loadConfig({ env, flags: { server_urls: ['https://a.example', 'ftp://b'] } }), /server_urls/);
});

t.test('ServerLink: failover policy', async (t) => {
  const good = await listen(answer(200, JWKS));
  const busy = await listen(answer(503, JSON.stringify({ error: { code: 'UNAVAILABLE', message: 'draining' } })));
  const refusing = await listen(answer(404, JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no' } })));
  t.teardown(() => Promise.all([good.close(), busy.close(), refusing.close()]));
  const dead = `http://127.0.0.1:${await freePort()}`;

  t.test('first URL dead: the second answers and is kept', async (t) => {
    const link = new ServerLink({ serverUrl: `${dead},${good.url}`, log: quiet });
    const before = good.hits.length;
    t.equal((await link.jwks()).keys.length, 1);
    t.equal(link.serverUrl, good.url, 'sticky to the one that answered');
    await link.jwks();
    t.equal(good.hits.length - before, 2);
  });

  t.test('5xx: the next URL, then sticky (the busy one is not asked again)', async (t) => {
    const link = new ServerLink({ serverUrl: [busy.url, good.url], log: quiet });
    const b0 = busy.hits.length;
    await link.jwks();
    await link.jwks();
    t.equal(busy.hits.length - b0, 1, 'asked once');
    t.equal(link.serverUrl, good.url);
  });

  t.test('4xx is an answer: not retried elsewhere', async (t) => {
    const link = new ServerLink({ serverUrl: `${refusing.url},${good.url}`, log: quiet });
    const g0 = good.hits.length;
    await t.rejects(link.jwks(), { status: 404, code: 'NOT_FOUND' });
    t.equal(good.hits.length, g0, 'the second URL was never asked');
    t.equal(link.serverUrl, refusing.url);
  });

  t.test('none answers: SERVER_UNREACHABLE after trying each once', async (t) => {
    const link = new ServerLink({ serverUrl: `${dead},${busy.url}`, log: quiet });
    const b0 = busy.hits.length;
    await t.rejects(link.jwks(), { code: 'UNAVAILABLE', status: 503 });
    t.equal(busy.hits.length - b0, 1);
  });
});

/** A reverse proxy to the real server; `tamper` may rewrite a 2xx JSON answer. */
async function proxy(target: string, tamper?: (path: string, body: any) => any): Promise<Fake> {
  const u = new URL(target);
  return listen((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const up = httpRequest({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        const out: Buffer[] = [];
        ur.on('data', (c: Buffer) => out.push(c));
        ur.on('end', () => {
          let body = Buffer.concat(out).toString();
          if (tamper && (ur.statusCode ?? 0) < 300 && body) body = JSON.stringify(tamper(req.url ?? '', JSON.parse(body)));
          const headers = { ...ur.headers };
          delete headers['content-length'];
          res.writeHead(ur.statusCode ?? 502, headers);
          res.end(body);
        });
      });
      up.on('error', () => {
        res.writeHead(502);
        res.end();
      });
      up.end(Buffer.concat(chunks));
    });
  });
}

/** Flips one character in the middle of a compact JWS's signature. */
function forge(jws: string): string {
  const [h, p, s] = jws.split('.') as [string, string, string];
  const i = Math.floor(s.length / 2);
  return `${h}.${p}.${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
}

t.test('real agent, real server: a forged answer on the first URL is refused, a dead first URL is skipped', async (t) => {
  const s: TestServer = await startTestServer();
  t.teardown(() => s.close());
  const c = await s.req('POST', '/api/v1/customers', { name: 'Failover test' });
  const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  t.equal(l.status, 201, JSON.stringify(l.body));
  const hostile = await proxy(s.url, (path, body) => (path.startsWith('/api/v1/activations') && typeof body?.license_token === 'string' ? { ...body, license_token: forge(body.license_token) } : body));
  const honest = await proxy(s.url);
  t.teardown(() => honest.close());
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  let agent: TestAgent = await startAgent({ serverUrl: `${hostile.url},${honest.url}`, dir, hardwareFacts: { machine_id: `failover-${process.pid}`, macs: ['52:54:00:aa:bb:01'] } });
  t.teardown(() => agent.stop());
  await agent.waitReady();

  const forged = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
  t.not(forged.status, 200, `forged activation answer refused: ${JSON.stringify(forged.body)}`);
  t.equal((await agent.api('GET', '/v1/status')).body.edition, 'community', 'not licensed by a forged token');
  t.notOk(
    honest.hits.some((h) => h.startsWith('POST /api/v1/activations')),
    'the refused answer did not send the agent on to the next URL',
  );

  // The hostile listener goes away: the agent's next call finds the second URL.
  await hostile.close();
  await agent.stop();
  agent = await startAgent({ serverUrl: `${hostile.url},${honest.url}`, dir, hardwareFacts: { machine_id: `failover-${process.pid}`, macs: ['52:54:00:aa:bb:01'] } });
  await agent.waitReady();
  const ok = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
  t.equal(ok.status, 200, JSON.stringify(ok.body));
  t.equal((await agent.api('GET', '/v1/status')).body.edition, 'licensed');
  t.ok(honest.hits.some((h) => h.startsWith('POST /api/v1/activations')), 'activated through the second URL');
  t.ok(
    agent.logs.some((line) => line.includes('trying the next server URL')),
    'the failover is logged',
  );
});
