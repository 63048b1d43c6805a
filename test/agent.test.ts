/**
 * aegis-agent as a real process against a real aegis-server (and, where the machine has
 * it, the real BPF datapath): licensing, the control socket, systemd and restarts end to end.
 */
import t from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { AUD_KERNEL, BPF_ABI, featureMask } from '../protocol/src/index.js';
import { startTestServer, type TestServer } from './harness/server.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from './harness/agent.js';
import { missingCommand, requireCapability } from './harness/capabilities.js';
import { ageLayout, missingDatapath, makeCgroup, removeCgroup, testPinRoot, runNodeInCgroup, helperScript } from './harness/datapath.js';
import { purgePins } from '../agent/src/datapath/index.js';

let s: TestServer;
const dirs: string[] = [];
t.before(async () => {
  s = await startTestServer();
});
t.teardown(async () => {
  await s?.close();
  for (const d of dirs) cleanupDir(d);
});

async function issue(server: TestServer, body: Record<string, unknown> = {}): Promise<{ id: string; key: string }> {
  const c = await server.req('POST', '/api/v1/customers', { name: `Agent test ${Math.random().toString(36).slice(2, 7)}` });
  const l = await server.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', ...body });
  if (l.status !== 201) throw new Error(JSON.stringify(l.body));
  return { id: l.body.id, key: l.body.license_key };
}

function facts(name: string) {
  return { machine_id: `${name}-${process.pid}-${Math.random()}`, macs: ['52:54:00:aa:bb:cc'] };
}

async function agentFor(server: TestServer, name: string, extra: Partial<Parameters<typeof startAgent>[0]> = {}): Promise<TestAgent> {
  const dir = extra.dir ?? agentDir();
  if (!dirs.includes(dir)) dirs.push(dir);
  const a = await startAgent({ serverUrl: server.url, dir, hardwareFacts: facts(name), ...extra });
  await a.waitReady();
  return a;
}

function claimsOf(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
}

t.test('activation end to end: token file, claims, cache modes', async (t) => {
  const lic = await issue(s);
  const a = await agentFor(s, 'activate');
  t.teardown(() => a.stop());
  const st = await a.api('GET', '/v1/status');
  t.equal(st.body.edition, 'community', 'unlicensed host runs the community edition');
  t.match(st.body.edition_reason, /no license/);

  t.equal((await a.api('POST', '/v1/activate', { license_key: 'AEGIS-NOPE' })).status, 400, 'malformed key refused locally');
  const unknown = await a.api('POST', '/v1/activate', { license_key: 'AEGIS-00000-00000-00000-00000' });
  t.equal(unknown.status, 404);

  const r = await a.api('POST', '/v1/activate', { license_key: lic.key });
  t.equal(r.status, 200, JSON.stringify(r.body));
  t.equal(r.body.tier, 'server');
  const token = readFileSync(a.tokenPath, 'utf8');
  t.equal(statSync(a.tokenPath).mode & 0o777, 0o600, 'kernel token is 0600');
  const c = claimsOf(token);
  const hw = await a.api('GET', '/v1/hwid');
  t.equal(c.aud, AUD_KERNEL);
  t.equal(c.hwid, hw.body.hardware_id, 'token bound to this host');
  t.equal(c.sub, r.body.machine_id);
  t.equal(c.fmask, featureMask(c.features));
  t.ok(c.exp - c.iat === 3600);
  for (const f of ['host_key.pem', 'machine.json', 'license.json', 'jwks.json']) {
    t.equal(statSync(join(a.stateDir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  }
  t.equal(statSync(a.stateDir).mode & 0o777, 0o700, 'state dir is 0700');
  t.equal(readFileSync(join(a.dir, 'kmod-reload'), 'utf8'), '1\n', 'kernel module poked after the new token');
  const st2 = await a.api('GET', '/v1/status');
  t.equal(st2.body.edition, 'licensed');
  t.ok(st2.body.features.includes('segmentation_enforce'));
  const tok = await a.api('GET', '/v1/token');
  t.equal(tok.body.present, true);
  t.ok(tok.body.seconds_left > 3500);
  const lics = await s.req('GET', `/api/v1/licenses/${lic.id}/machines`);
  t.equal(lics.body.items[0].hardware_id, hw.body.hardware_id, 'server bound the same fingerprint');
});

t.test('aegisctl against the running agent', async (t) => {
  const lic = await issue(s);
  const a = await agentFor(s, 'ctl');
  t.teardown(() => a.stop());
  // Asynchronous on purpose: the server under test runs in this process's event loop.
  const ctl = (...args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [join(import.meta.dirname, '../agent/src/ctl/main.js'), '--socket', a.socket, '-q', ...args], (err, stdout, stderr) =>
        resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
  const act = await ctl('activate', lic.key);
  t.equal(act.status, 0, act.stderr);
  const status = JSON.parse((await ctl('status', '--json')).stdout);
  t.equal(status.edition, 'licensed');
  const hw = JSON.parse((await ctl('hwid', '--json')).stdout);
  t.equal(hw.hardware_id, (await a.api('GET', '/v1/hwid')).body.hardware_id);
  const human = await ctl('hwid');
  t.match(human.stdout, hw.hardware_id, 'table shows the fingerprint');
  const tok = JSON.parse((await ctl('token', 'show', '--json')).stdout);
  t.equal(tok.claims.aud, 'aegis-kmod');
  t.match((await ctl('license')).stdout, /licensed/);
  const again = await ctl('activate', 'AEGIS-00000-00000-00000-00000');
  t.equal(again.status, 5, 'unknown key: exit 5');
  t.match(again.stderr, /^aegisctl: error: /);
  t.equal((await ctl('deactivate')).status, 0);
  t.equal(JSON.parse((await ctl('status', '--json')).stdout).edition, 'community', 'deactivated: community');
  const machines = await s.req('GET', `/api/v1/licenses/${lic.id}/machines`);
  t.equal(machines.body.items[0].status, 'deactivated', 'seat freed on the server');
});

t.test('seat limit is reported clearly and the host stays community', async (t) => {
  const lic = await issue(s, { max_machines: 1 });
  const a = await agentFor(s, 'seat-a');
  const b = await agentFor(s, 'seat-b');
  t.teardown(async () => {
    await a.stop();
    await b.stop();
  });
  t.equal((await a.api('POST', '/v1/activate', { license_key: lic.key })).status, 200);
  const r = await b.api('POST', '/v1/activate', { license_key: lic.key });
  t.equal(r.status, 409);
  t.equal(r.body.error.code, 'SEAT_LIMIT');
  t.match(r.body.error.message, /seat/);
  t.equal((await b.api('GET', '/v1/status')).body.edition, 'community');
  t.ok(b.logs.some((l) => l.includes('activation failed') && l.includes('SEAT_LIMIT')), 'logged with its reason');
});

t.test('revocation takes the host back to community on the next refresh, without retrying', async (t) => {
  const lic = await issue(s);
  const a = await agentFor(s, 'revoke');
  t.teardown(() => a.stop());
  await a.api('POST', '/v1/activate', { license_key: lic.key });
  t.ok(existsSync(a.tokenPath));
  await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'test revocation' });
  const r = await a.api('POST', '/v1/refresh');
  t.equal(r.body.state, 'community');
  t.match(r.body.reason, /LICENSE_REVOKED/);
  t.notOk(existsSync(a.tokenPath), 'kernel token removed');
  const lic2 = await a.api('GET', '/v1/license');
  t.equal(lic2.body.retrying, false, 'a final answer is not retried');
  t.equal(lic2.body.next_refresh_at, null);
  t.ok(a.logs.some((l) => l.includes('not retrying')));
});

t.test('the kernel token is refreshed at half its lifetime', async (t) => {
  const short = await startTestServer({ kernelTokenTtlSeconds: 60 });
  t.teardown(() => short.close());
  const lic = await issue(short);
  const a = await agentFor(short, 'halflife');
  t.teardown(() => a.stop());
  await a.api('POST', '/v1/activate', { license_key: lic.key });
  const cachedLicenseToken = () => (JSON.parse(readFileSync(join(a.stateDir, 'license.json'), 'utf8')) as { license_token: string }).license_token;
  const firstLicense = claimsOf(cachedLicenseToken());
  t.equal(typeof firstLicense.exp, 'number', 'a perpetual license token carries exp');
  const first = (await a.api('GET', '/v1/license')).body;
  const planned = Date.parse(first.next_refresh_at) - Date.now();
  t.ok(planned > 20_000 && planned <= 31_000, `refresh planned at half-life (${planned} ms)`);
  await a.waitFor(() => a.logs.some((l) => l.includes('kernel token refreshed')), 45_000, 'a scheduled refresh');
  const second = (await a.api('GET', '/v1/license')).body;
  t.ok(Date.parse(second.kernel_token_expires_at) > Date.parse(first.kernel_token_expires_at), 'a newer token');
  t.equal(claimsOf(readFileSync(a.tokenPath, 'utf8')).exp, Date.parse(second.kernel_token_expires_at) / 1000, 'new token written');
  const refreshedLicense = claimsOf(cachedLicenseToken());
  t.not(refreshedLicense.jti, firstLicense.jti, 'the refreshed license token replaced the cached one');
  t.ok(refreshedLicense.iat > firstLicense.iat && refreshedLicense.exp > firstLicense.exp, 'and it is newer, with a later exp');
});

t.test('damaged cache files are logged, discarded and re-fetched', async (t) => {
  const lic = await issue(s);
  const dir = agentDir();
  const a = await agentFor(s, 'corrupt', { dir, hardwareFacts: { machine_id: 'corrupt-host' } });
  await a.api('POST', '/v1/activate', { license_key: lic.key });
  t.equal((await a.stop()).code, 0);
  const lf = join(a.stateDir, 'license.json');
  writeFileSync(lf, readFileSync(lf, 'utf8').slice(0, 40)); // truncated
  writeFileSync(join(a.stateDir, 'jwks.json'), '\u0000\u00ff garbage');
  writeFileSync(join(a.stateDir, 'snapshots', '7.json'), '{"snapshot":');
  const b = await agentFor(s, 'corrupt', { dir, hardwareFacts: { machine_id: 'corrupt-host' } });
  t.teardown(() => b.stop());
  await b.waitFor(() => b.logs.filter((l) => l.includes('discarded a damaged state file')).length >= 3, 5000, 'three discards');
  await b.waitFor(() => b.logs.some((l) => l.includes('kernel token refreshed')), 15_000, 're-fetch');
  t.equal((await b.api('GET', '/v1/status')).body.edition, 'licensed', 'licensed again after re-fetch');
  t.doesNotThrow(() => JSON.parse(readFileSync(lf, 'utf8')), 'license cache rewritten whole');
  t.ok(existsSync(`${lf}`), 'cache present');
});

t.test('control socket: mode 0660, other users refused; SIGTERM exits 0 within 5 s', async (t) => {
  const a = await agentFor(s, 'socket');
  t.equal(statSync(a.socket).mode & 0o777, 0o660);
  if (process.getuid?.() === 0) {
    const r = spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, '-e', `require('net').connect(${JSON.stringify(a.socket)}).on('connect',()=>{console.log('CONNECTED');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(1)})`], { encoding: 'utf8' });
    t.match(r.stdout.trim(), /EACCES/, 'user nobody cannot connect');
  }
  const { code, ms } = await a.stop('SIGTERM');
  t.equal(code, 0);
  t.ok(ms < 5000, `exited in ${ms.toFixed(0)} ms`);
  t.ok(a.notifications.some((n) => n.includes('STOPPING=1')), 'STOPPING=1 sent');
  t.notOk(existsSync(a.socket), 'socket removed');
});

t.test('bad configuration: one clear line per field, exit 78', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-cfg-'));
  dirs.push(dir);
  const cfg = join(dir, 'agent.json');
  writeFileSync(cfg, JSON.stringify({ server_url: 'ftp://x', services: { web: '/x', '101': 5 }, expiry_behaviour: 'maybe', colour: 'blue' }));
  const r = spawnSync(process.execPath, [join(import.meta.dirname, '../agent/src/main.js'), '--config', cfg], { encoding: 'utf8' });
  t.equal(r.status, 78);
  for (const what of [/server_url/, /services: key "web"/, /services\.101/, /expiry_behaviour: must be one of fail-open, fail-closed/, /colour: unknown setting/]) {
    t.match(r.stderr, what);
  }
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  writeFileSync(cfg, '{ not json');
  const j = spawnSync(process.execPath, [join(import.meta.dirname, '../agent/src/main.js'), '--config', cfg], { encoding: 'utf8' });
  t.equal(j.status, 78);
  t.match(j.stderr, /not valid JSON/);
});

t.test('unusable datapath and token path are reported, not fatal', async (t) => {
  const lic = await issue(s);
  const a = await agentFor(s, 'nodp', { pinRoot: '/tmp/not-bpffs/aegis', tokenPath: '/proc/aegis-cannot-exist/auth.token', services: { '5': '/nonexistent-cgroup' } });
  t.teardown(() => a.stop());
  const st = await a.api('GET', '/v1/status');
  t.equal(st.body.datapath.available, false);
  t.match(st.body.datapath.reason, /^datapath unavailable: /);
  t.equal(st.body.services[0].bound, false);
  await a.api('POST', '/v1/activate', { license_key: lic.key });
  const st2 = await a.api('GET', '/v1/status');
  t.equal(st2.body.token_fallback, true, 'token fell back to the state dir');
  t.equal(st2.body.token_path, join(a.stateDir, 'auth.token'));
  t.ok(existsSync(join(a.stateDir, 'auth.token')));
});

t.test('hardware fingerprint is stable across restarts', async (t) => {
  const dir = agentDir();
  const a = await agentFor(s, 'stable', { dir, hardwareFacts: undefined });
  const one = (await a.api('GET', '/v1/hwid')).body;
  await a.stop();
  const b = await agentFor(s, 'stable', { dir, hardwareFacts: undefined });
  t.teardown(() => b.stop());
  const two = (await b.api('GET', '/v1/hwid')).body;
  t.equal(two.hardware_id, one.hardware_id);
  t.match(one.hardware_id, /^[0-9a-f]{64}$/);
  t.ok(Array.isArray(one.ignored_interfaces) && one.ignored_interfaces.includes('lo'), 'loopback ignored');
});

function listen(port = 0): Promise<Server> {
  return new Promise((resolve) => {
    const srv = createServer((c) => c.end());
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

async function probe(cgroup: string, ports: number[]): Promise<boolean[]> {
  const r = await runNodeInCgroup(cgroup, helperScript('traffic_client.js'), [
    JSON.stringify({ op: 'probe', targets: ports.map((port) => ({ proto: 'tcp', host: '127.0.0.1', port, timeoutMs: 1000 })) }),
  ]);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { results: Array<{ ok: boolean }> };
  return out.results.map((x) => x.ok);
}

t.test('restart with the server down: licensed from cache, enforcement restored before READY', async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const server = await startTestServer();
  let serverUp = true;
  t.teardown(async () => {
    if (serverUp) await server.close();
  });
  const allowed = await listen();
  const denied = await listen();
  t.teardown(() => {
    allowed.close();
    denied.close();
  });
  const pa = (allowed.address() as { port: number }).port;
  const pd = (denied.address() as { port: number }).port;
  const cgroup = makeCgroup('agent-e2e');
  const pinRoot = testPinRoot('agent-e2e');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });
  const dir = agentDir();
  const opts = { dir, pinRoot, services: { '101': cgroup }, hardwareFacts: { machine_id: 'enforcer' } };
  const lic = await issue(server);
  const a = await agentFor(server, 'enforcer', opts);
  await a.api('POST', '/v1/activate', { license_key: lic.key });
  const put = await a.api('PUT', '/v1/snapshots/101', {
    version: 1,
    service_id: 101,
    edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp', port: pa }],
    ttl_seconds: 3600,
  });
  t.equal(put.status, 200, JSON.stringify(put.body));
  t.equal(put.body.mode, 'enforce', 'enforce stage + segmentation_enforce license = enforce');
  t.same(await probe(cgroup, [pa, pd]), [true, false], 'allowed edge connects, the other is refused');
  const snaps = (await a.api('GET', '/v1/snapshots')).body.services[0];
  t.ok(snaps.counters.dropped >= 1, 'drop counted');

  t.equal((await a.stop()).code, 0);
  t.same(await probe(cgroup, [pa, pd]), [true, false], 'enforcement stays pinned while the agent is down');
  await purgePins(pinRoot); // as after a reboot: nothing left in the kernel
  t.same(await probe(cgroup, [pa, pd]), [true, true], 'no enforcement without pins');

  await server.close();
  serverUp = false;
  const b = await startAgent({ serverUrl: server.url, ...opts });
  await b.waitReady();
  // The first thing after READY: the kernel already enforces the cached snapshot.
  t.same(await probe(cgroup, [pa, pd]), [true, false], 'enforcement restored before READY');
  const st = await b.api('GET', '/v1/status');
  t.equal(st.body.edition, 'licensed', 'still licensed from cache with the server down');
  const view = (await b.api('GET', '/v1/snapshots')).body.services[0];
  t.equal(view.mode, 'enforce');
  t.equal(view.revision, 1);
  t.ok(view.ttl_left_s > 3500);
  t.equal((await b.stop()).code, 0);
});

t.test('an agent upgrading from an older datapath layout retires it only once its services are enforced', async (t) => {
  if (!requireCapability(t, (await missingDatapath()) ?? missingCommand('bpftool'))) return;
  const allowed = await listen();
  const denied = await listen();
  const later = await listen();
  t.teardown(() => {
    for (const l of [allowed, denied, later]) l.close();
  });
  const [pa, pd, pl] = [allowed, denied, later].map((l) => (l.address() as { port: number }).port) as [number, number, number];
  const cgroup = makeCgroup('agent-upgrade');
  const pinRoot = testPinRoot('agent-upgrade');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });
  const olderPins = () => readdirSync(pinRoot).filter((n) => n.startsWith(`aegis_v${BPF_ABI.AEGIS_LAYOUT_VERSION - 1}_`));
  const dir = agentDir();
  const opts = { dir, pinRoot, services: { '102': cgroup }, hardwareFacts: { machine_id: 'upgrader' } };
  const lic = await issue(s);
  const a = await agentFor(s, 'upgrader', opts);
  await a.api('POST', '/v1/activate', { license_key: lic.key });
  const snap = (port: number, version: number) => ({ version, service_id: 102, edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp', port }], ttl_seconds: 3600 });
  t.equal((await a.api('PUT', '/v1/snapshots/102', snap(pa, 1))).status, 200);
  t.equal((await a.stop()).code, 0);

  // What the previous release left: its programs enforcing the same policy.
  ageLayout(pinRoot);
  const b = await agentFor(s, 'upgrader', opts);
  t.same(olderPins(), [], 'the cached snapshot is enforced by the new layout before READY, so the old one is retired');
  t.same(await probe(cgroup, [pa, pd]), [true, false], 'and the policy holds');
  t.equal((await b.stop()).code, 0);

  // Again, but this time the agent has no cached policy for the service: it must not drop
  // the old enforcement before it has its own.
  ageLayout(pinRoot);
  rmSync(join(b.stateDir, 'snapshots', '102.json'));
  const c = await agentFor(s, 'upgrader', opts);
  t.teardown(() => c.stop());
  t.not(olderPins().length, 0, 'without a policy of its own the agent keeps the old layout');
  t.same(await probe(cgroup, [pa, pd, pl]), [true, false, false], 'which still enforces the old policy');
  t.equal((await c.api('PUT', '/v1/snapshots/102', snap(pl, 2))).status, 200);
  t.same(olderPins(), [], 'the first policy it enforces itself retires the old layout');
  t.same(await probe(cgroup, [pa, pd, pl]), [false, false, true], 'and the new policy alone decides');
});
