/**
 * The mTLS agent listener end to end: the real aegis-agent daemon against a server that
 * runs it. The agent gets a client certificate at activation, fetches snapshots over
 * mTLS with single-use scoped tokens, renews its certificate at half-life and keeps
 * working across rotations; revocation cuts it off.
 */
import t from 'tap';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { startMtlsServer, type MtlsTestServer } from './harness/mtls.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from './harness/agent.js';

let s: MtlsTestServer;
const dirs: string[] = [];
t.before(async () => {
  // 12-second certificates: renewed every ~6 s.
  s = await startMtlsServer({ certTtlSeconds: 12 });
});
t.teardown(async () => {
  await s?.close();
  for (const d of dirs) cleanupDir(d);
});

async function issue(): Promise<{ id: string; key: string }> {
  const c = await s.req('POST', '/api/v1/customers', { name: `mtls agent ${Math.random().toString(36).slice(2, 7)}` });
  const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  return { id: l.body.id, key: l.body.license_key };
}

async function agent(name: string): Promise<TestAgent> {
  const dir = agentDir();
  dirs.push(dir);
  const a = await startAgent({
    serverUrl: s.url,
    dir,
    hardwareFacts: { machine_id: `${name}-${process.pid}-${Math.random()}`, macs: ['52:54:00:aa:bb:cd'] },
    extraConfig: { agent_server_url: s.agentUrl, fallback_interval_seconds: 1, hostname: name },
  });
  await a.waitReady();
  return a;
}

t.test('a long-running agent stays connected across certificate rotations', async (t) => {
  const lic = await issue();
  const a = await agent('rotate');
  t.teardown(() => a.stop());
  const act = await a.api('POST', '/v1/activate', { license_key: lic.key });
  t.equal(act.status, 200, JSON.stringify(act.body));
  const first = (await a.api('GET', '/v1/status')).body.mtls;
  t.equal(first.url, s.agentUrl);
  t.match(first.certificate.serial, /^[0-9A-F]{32}$/);
  t.equal(statSync(join(a.stateDir, 'mtls.json')).mode & 0o777, 0o600, 'certificate cache 0600');

  const serials = new Set<string>([first.certificate.serial]);
  const okTimes = new Set<string>();
  const errors: string[] = [];
  const end = Date.now() + 22_000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 500));
    const m = (await a.api('GET', '/v1/status')).body.mtls;
    if (m.certificate) serials.add(m.certificate.serial);
    if (m.last_ok_at) okTimes.add(m.last_ok_at);
    if (m.last_error) errors.push(m.last_error);
  }
  t.ok(serials.size >= 3, `certificate rotated at least twice (${serials.size} serials)`);
  t.ok(okTimes.size >= 12, `mTLS calls kept succeeding (${okTimes.size} distinct successes in 22 s)`);
  t.same(errors, [], 'no failed mTLS call across rotations');
  const last = (await a.api('GET', '/v1/status')).body.mtls;
  t.ok(Date.now() - Date.parse(last.last_ok_at) < 3000, 'still connected at the end');
  const machineId = act.body.machine_id as string;
  const records = await s.app.certs.forMachine(machineId);
  t.ok(records.length >= 3, `server recorded every issued certificate (${records.length})`);
  t.equal((await a.api('GET', '/v1/status')).body.edition, 'licensed');
});

t.test('a revoked license cuts the agent off the mTLS listener and ends its license', async (t) => {
  const lic = await issue();
  const a = await agent('cutoff');
  t.teardown(() => a.stop());
  t.equal((await a.api('POST', '/v1/activate', { license_key: lic.key })).status, 200);
  await a.waitFor(() => a.logs.some((l) => l.includes('client certificate installed')), 5000, 'certificate');
  t.equal((await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'test' })).status, 200);
  await a.waitFor(() => a.logs.some((l) => /"error":"client certificate refused: revoked".*snapshots over mTLS failed/.test(l)), 5000, 'mTLS refusal');
  const r = await a.api('POST', '/v1/refresh');
  t.equal(r.body.state, 'community', 'license ended');
  t.equal((await a.api('GET', '/v1/status')).body.mtls.certificate, null, 'certificate dropped');
});
