/**
 * Attack: end a host's license without the server saying so. Whoever sits between the
 * agent and aegis-server (a proxy, a captive portal, a man in the middle on plain http)
 * answers the refresh with a bare 403, 404, 407 or 502; or the host's clock drifts so far
 * that its proofs are refused. None of these is the server's word that the license or the
 * seat is over, so the host keeps its license, retries, and says what is wrong. Only the
 * server's explicit final answer (here: revocation) takes the host to the community edition.
 */
import t from 'tap';
import { startTestServer, type TestServer } from '../harness/server.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from '../harness/agent.js';
import { Middlebox, type OwnAnswer } from '../harness/middlebox.js';

type Mode = 'forward' | OwnAnswer;

let s: TestServer;
let box: Middlebox;
/** What the middlebox in front of the server does with the next request. */
let mode: Mode = 'forward';
let agent: TestAgent;
let licenseId: string;
const dir = agentDir();

t.before(async () => {
  s = await startTestServer();
  box = await Middlebox.start(s.url, { answer: () => (mode === 'forward' ? null : mode) });
  const c = await s.req('POST', '/api/v1/customers', { name: 'Middlebox victim' });
  const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  licenseId = l.body.id;
  agent = await startAgent({ serverUrl: box.url, dir, hardwareFacts: { machine_id: `middlebox-${process.pid}`, macs: ['52:54:00:aa:bb:01'] } });
  await agent.waitReady();
  const a = await agent.api('POST', '/v1/activate', { license_key: l.body.license_key });
  if (a.status !== 200) throw new Error(`activation failed: ${JSON.stringify(a.body)}`);
});
t.teardown(async () => {
  await agent?.stop();
  await box?.close();
  await s?.close();
  cleanupDir(dir);
});

async function refresh(): Promise<{ state: string; last_error: { code: string; message: string } | null }> {
  const r = await agent.api('POST', '/v1/refresh');
  return r.body;
}

t.test('answers that are not from aegis-server never end the license', async (t) => {
  // Node's fetch treats a 407 as a failed connection, not as an answer: unreachable.
  const answers: Array<[string, Mode, string]> = [
    ['a proxy 403 page', { status: 403, contentType: 'text/html', body: '<h1>Forbidden by policy</h1>' }, 'HTTP_403'],
    ['a bare 404', { status: 404, contentType: 'text/plain', body: 'not found' }, 'HTTP_404'],
    ['a 407 proxy auth demand', { status: 407, contentType: 'text/html', body: '<h1>Proxy Authentication Required</h1>' }, 'SERVER_UNREACHABLE'],
    ['a 502 from a load balancer', { status: 502, contentType: 'text/html', body: '<h1>Bad Gateway</h1>' }, 'HTTP_502'],
    ['JSON that is not an Aegis error', { status: 403, contentType: 'application/json', body: '{"message":"denied"}' }, 'HTTP_403'],
  ];
  for (const [what, answer, code] of answers) {
    mode = answer;
    const r = await refresh();
    t.equal(r.state, 'licensed', `${what}: the host stays licensed`);
    t.equal(r.last_error?.code, code, `${what}: the error says what answered`);
    const lic = await agent.api('GET', '/v1/license');
    t.equal(lic.body.retrying, true, `${what}: the refresh is retried`);
  }
  mode = 'forward';
  const ok = await refresh();
  t.equal(ok.state, 'licensed');
  t.equal(ok.last_error, null, 'through an honest path the refresh succeeds again');
});

t.test('a clock far off is named, by how much, and retried', async (t) => {
  // The server's clock 400 s behind this host's: the host's proofs are "from the future".
  s.clock.offsetMs = -400_000;
  t.teardown(() => {
    s.clock.offsetMs = 0;
  });
  const r = await refresh();
  t.equal(r.state, 'licensed', 'a refused proof does not end the license');
  t.equal(r.last_error?.code, 'CLOCK_SKEW');
  t.match(r.last_error?.message, /clock is (39\d|40\d) s ahead of the server's/, 'says by how much');
  const lic = await agent.api('GET', '/v1/license');
  t.equal(lic.body.retrying, true);
  s.clock.offsetMs = 0;
  t.equal((await refresh()).last_error, null, 'with the clocks agreeing the refresh succeeds');
});

t.test("the server's explicit final answer does end it", async (t) => {
  const rv = await s.req('DELETE', `/api/v1/licenses/${licenseId}/revoke`, { reason: 'refund' });
  t.equal(rv.status, 200);
  const r = await refresh();
  t.equal(r.state, 'community', 'revoked: back to the community edition');
  t.equal(r.last_error?.code, 'LICENSE_REVOKED');
});
