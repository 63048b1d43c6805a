/**
 * Attack: hold the server's listeners with slow or idle connections (slowloris, a body
 * trickled a byte at a time, more idle connections than the server should keep). Every
 * listener, the main HTTP one and the mTLS agent one, must cut them within its configured
 * timeouts and refuse connections beyond its cap, while an honest request on a free slot
 * is still answered. Run on SQLite and PostgreSQL.
 */
import t, { type Test } from 'tap';
import { startTestServer, type TestServer } from '../harness/server.js';
import { startMtlsServer, type MtlsTestServer } from '../harness/mtls.js';
import { openRaw, rawRequest, within, type RawConnection } from '../harness/raw_socket.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';

const HEADERS_TIMEOUT_MS = 800;
const REQUEST_TIMEOUT_MS = 1600;
const MAX_CONNECTIONS = 4;
/** What the server may take beyond a timeout: its check interval and scheduling. */
const SLACK_MS = 1200;

const LIMITS_ENV = {
  AEGIS_HTTP_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
  AEGIS_HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
  AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS: '300',
  AEGIS_HTTP_MAX_CONNECTIONS: String(MAX_CONNECTIONS),
};

const health = 'GET /health HTTP/1.1\r\nHost: aegis\r\nConnection: close\r\n\r\n';

async function slowHeadersAreCut(t: Test, url: string): Promise<void> {
  const c = await openRaw(url);
  c.socket.write('GET /health HTTP/1.1\r\nHost: aegis\r\n');
  // One more header line every 200 ms: the headers never finish.
  c.trickle(Array.from({ length: 100 }, (_, i) => `X-Slow-${i}: 1\r\n`), 200);
  const ms = await within(c.closed, HEADERS_TIMEOUT_MS + SLACK_MS + 2000);
  c.socket.destroy();
  t.not(ms, null, 'the connection was closed by the server');
  t.ok(ms !== null && ms <= HEADERS_TIMEOUT_MS + SLACK_MS, `closed after ${ms} ms, within the headers timeout (${HEADERS_TIMEOUT_MS} ms) and its check interval`);
}

/** Opens connections until the cap is full; returns them (none sends a byte). */
async function fillToCap(url: string): Promise<RawConnection[]> {
  const held: RawConnection[] = [];
  for (let i = 0; i < MAX_CONNECTIONS; i++) held.push(await openRaw(url));
  // Give the server a moment to account for every accepted connection.
  await new Promise((r) => setTimeout(r, 100));
  return held;
}

async function extraConnectionRefused(t: Test, url: string): Promise<void> {
  const held = await fillToCap(url);
  t.equal(held.filter((c) => c.socket.destroyed).length, 0, `${MAX_CONNECTIONS} idle connections are accepted`);
  const extra = await openRaw(url).catch(() => null);
  const closedAfter = extra ? await within(extra.closed, 500) : 0;
  t.not(closedAfter, null, 'a connection beyond the cap is closed at once');
  t.equal(extra?.received() ?? '', '', 'and is served nothing');
  for (const c of held) c.socket.destroy();
  await Promise.all(held.map((c) => c.closed));
  await new Promise((r) => setTimeout(r, 100));
}

function suite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let s: TestServer;
  t.before(async () => {
    const databaseUrl = await newDatabase();
    s = await startTestServer({ ...(databaseUrl ? { databaseUrl } : {}), env: LIMITS_ENV });
  });
  t.teardown(() => s?.close());

  t.test('main listener: headers that never finish are cut within the headers timeout', (t) => slowHeadersAreCut(t, s.url));

  t.test('main listener: a connection that sends nothing is cut within the headers timeout', async (t) => {
    const c = await openRaw(s.url);
    const ms = await within(c.closed, HEADERS_TIMEOUT_MS + SLACK_MS + 2000);
    c.socket.destroy();
    t.ok(ms !== null && ms <= HEADERS_TIMEOUT_MS + SLACK_MS, `idle connection closed after ${ms} ms`);
  });

  t.test('main listener: a body trickled a byte at a time is cut within the request timeout, and nothing is written', async (t) => {
    const before = await s.req('GET', '/api/v1/customers?limit=1');
    const body = JSON.stringify({ name: 'trickled customer' });
    const c = await openRaw(s.url);
    c.socket.write(
      `POST /api/v1/customers HTTP/1.1\r\nHost: aegis\r\nX-API-Key: ${s.adminKey}\r\nContent-Type: application/json\r\nContent-Length: ${body.length + 50}\r\n\r\n`,
    );
    c.trickle([...body], 150);
    const ms = await within(c.closed, REQUEST_TIMEOUT_MS + SLACK_MS + 3000);
    c.socket.destroy();
    t.not(ms, null, 'the connection was closed by the server');
    t.ok(ms !== null && ms <= REQUEST_TIMEOUT_MS + SLACK_MS, `closed after ${ms} ms, within the request timeout (${REQUEST_TIMEOUT_MS} ms)`);
    const answer = c.received();
    t.ok(answer === '' || answer.startsWith('HTTP/1.1 408'), `answered 408 or nothing (got ${JSON.stringify(answer.slice(0, 40))})`);
    const after = await s.req('GET', '/api/v1/customers?limit=1');
    t.equal(after.body.total, before.body.total, 'no customer was created');
  });

  t.test('main listener: connections beyond the cap are refused; a freed slot serves an honest request', async (t) => {
    // Let keep-alive connections of earlier requests expire first.
    await new Promise((r) => setTimeout(r, 500));
    const held = await fillToCap(s.url);
    const whileFull = await rawRequest(s.url, health, 500).catch(() => ({ status: null, text: '' }));
    t.equal(whileFull.status, null, 'no answer while every slot is held');
    held.pop()!.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const honest = await rawRequest(s.url, health, 2000);
    t.equal(honest.status, 200, 'an honest request on the freed slot is answered');
    for (const c of held) c.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    await extraConnectionRefused(t, s.url);
    t.equal((await rawRequest(s.url, health, 2000)).status, 200, 'once the idle connections are gone the server serves again');
  });
}

function mtlsListenerSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let s: MtlsTestServer;
  t.before(async () => {
    const databaseUrl = await newDatabase();
    s = await startMtlsServer({ ...(databaseUrl ? { databaseUrl } : {}), env: LIMITS_ENV });
  });
  t.teardown(() => s?.close());

  t.test('agent listener: a TLS handshake never started is cut within the headers timeout', async (t) => {
    const c = await openRaw(s.agentUrl);
    const ms = await within(c.closed, HEADERS_TIMEOUT_MS + SLACK_MS + 2000);
    c.socket.destroy();
    t.ok(ms !== null && ms <= HEADERS_TIMEOUT_MS + SLACK_MS, `closed after ${ms} ms`);
  });

  t.test('agent listener: a TLS handshake trickled a byte at a time is cut within the headers timeout', async (t) => {
    const c = await openRaw(s.agentUrl);
    // The first bytes of a TLS record header, then one byte every 200 ms.
    c.trickle(Array.from({ length: 100 }, (_, i) => (i === 0 ? '\x16' : i === 1 ? '\x03' : '\x01')), 200);
    const ms = await within(c.closed, HEADERS_TIMEOUT_MS + SLACK_MS + 2000);
    c.socket.destroy();
    t.ok(ms !== null && ms <= HEADERS_TIMEOUT_MS + SLACK_MS, `closed after ${ms} ms`);
  });

  t.test('agent listener: connections beyond the cap are refused', (t) => extraConnectionRefused(t, s.agentUrl));
}

t.test('SQLite', async (t) => {
  t.test('main listener', async (t) => suite(t, async () => undefined));
  t.test('mTLS agent listener', async (t) => mtlsListenerSuite(t, async () => undefined));
});

t.test('PostgreSQL', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  t.test('main listener', async (t) => suite(t, () => pg!.newDatabase()));
  t.test('mTLS agent listener', async (t) => mtlsListenerSuite(t, () => pg!.newDatabase()));
});
