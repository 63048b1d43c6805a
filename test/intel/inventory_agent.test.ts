/**
 * The package inventory end to end: a real aegis-agent process reads a dpkg status file
 * this test writes (and then changes the way dpkg does, write and rename), finds the
 * listening socket of a process whose executable a package's `.list` names, and reports
 * to a real aegis-server: the full inventory first, then a diff; an import then yields a
 * finding marked exposed, and the upgrade in the next diff removes it. Hostile bytes in
 * the status file cost only their paragraph.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { loadFeedPath } from '../../server/src/intel/feed_loader.js';
import { agentDir, cleanupDir, startAgent, type TestAgent } from '../harness/agent.js';
import { startTestServer, type TestServer } from '../harness/server.js';
import { startMtlsServer } from '../harness/mtls.js';

let s: TestServer;
const dir = agentDir();
t.before(async () => {
  s = await startTestServer();
});
t.teardown(async () => {
  await s?.close();
  cleanupDir(dir);
});

const paragraph = (name: string, version: string, source?: string) =>
  [`Package: ${name}`, 'Status: install ok installed', 'Architecture: amd64', ...(source ? [`Source: ${source}`] : []), `Version: ${version}`, 'Description: test package', ''].join('\n');

/** Written the way dpkg writes it: a new file renamed over the old one. */
function writeStatus(path: string, text: string | Buffer): void {
  writeFileSync(`${path}-new`, text);
  renameSync(`${path}-new`, path);
}

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The agent's own "ready" line: READY=1 goes through the addon, which this test does not need. */
const ready = (a: TestAgent) => a.waitFor(() => a.logs.some((l) => l.includes('"aegis-agent ready"')), 30_000, 'aegis-agent ready');

/** A process listening on TCP whose executable is this node binary. */
async function listener(): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, ['-e', "const s=require('node:net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port))"], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => createInterface({ input: proc.stdout! }).once('line', (l) => resolve(Number(l))));
  return { proc, port };
}

t.test('inventory: full, then diff; import, exposed finding; upgrade removes it; hostile bytes skipped', async (t) => {
  const dpkg = join(dir, 'dpkg');
  const info = join(dpkg, 'info');
  mkdirSync(info, { recursive: true });
  const statusPath = join(dpkg, 'status');
  const osRelease = join(dir, 'os-release');
  writeFileSync(osRelease, 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n');
  // The package "nodejs-fake" owns this node binary, so the listener below is its socket.
  writeFileSync(join(info, 'nodejs-fake:amd64.list'), `/.\n/usr\n${realpathSync(process.execPath)}\n`);
  writeFileSync(join(info, 'bash.list'), '/.\n/bin/bash\n');
  writeStatus(statusPath, [paragraph('bash', '5.2.15-2+b2', 'bash (5.2.15-2)'), paragraph('nodejs-fake', '1.0-1', 'nodejs-src')].join('\n'));
  const l = await listener();
  t.teardown(() => l.proc.kill('SIGKILL'));

  const c = await s.req('POST', '/api/v1/customers', { name: 'Inventory test' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  const a: TestAgent = await startAgent({
    serverUrl: s.url,
    dir,
    hardwareFacts: { machine_id: `inventory-${process.pid}`, macs: ['52:54:00:aa:bb:01'] },
    extraConfig: { dpkg_status_path: statusPath, dpkg_info_dir: info, os_release_path: osRelease, inventory_interval_seconds: 1 },
  });
  t.teardown(() => a.stop());
  await ready(a);
  const act = await a.api('POST', '/v1/activate', { license_key: lic.body.license_key });
  t.equal(act.status, 200, JSON.stringify(act.body));
  const machineId = (await a.api('GET', '/v1/status')).body.machine_id as string;

  const packages = () => s.req('GET', `/api/v1/machines/${machineId}/packages`);
  const first = await until('the full inventory', async () => {
    const r = await packages();
    return r.body.seq !== null && r.body.sockets.some((x: { port: number }) => x.port === l.port) && r.body;
  });
  t.equal(first.release, 'bookworm', 'release from os-release');
  t.same(
    first.packages.map((p: { package: string; source: string; source_version: string }) => [p.package, p.source, p.source_version]),
    [['bash', 'bash', '5.2.15-2'], ['nodejs-fake', 'nodejs-src', '1.0-1']],
    'source and source version as dpkg records them',
  );
  const sock = first.sockets.find((x: { port: number }) => x.port === l.port);
  t.match(sock, { proto: 'tcp', address: '127.0.0.1', pid: l.proc.pid, exe: realpathSync(process.execPath), package: 'nodejs-fake' }, 'the socket, its process and its package');
  t.ok(a.logs.some((x) => x.includes('inventory reported') && x.includes('"kind":"full"')), 'the first report is full');

  // An advisory on the source package, imported: the finding appears, exposed.
  const feedFile = join(dir, 'advisory.json');
  writeFileSync(
    feedFile,
    JSON.stringify({
      id: 'DEBIAN-CVE-2099-1234',
      modified: '2026-01-01T00:00:00Z',
      affected: [{ package: { ecosystem: 'Debian:12', name: 'nodejs-src' }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }, { fixed: '1.0-2' }] }] }],
    }),
  );
  const summary = await s.app.intel.importAdvisories(loadFeedPath(feedFile), feedFile);
  t.match(summary, { inserted: 1, findings: 1 });
  const f = await s.req('GET', `/api/v1/findings?machine=${machineId}`);
  t.equal(f.body.total, 1);
  t.match(f.body.items[0], { advisory: 'DEBIAN-CVE-2099-1234', package: 'nodejs-fake', source: 'nodejs-src', fixed_version: '1.0-2', exposed: true });
  t.ok(f.body.items[0].sockets.some((x: { port: number }) => x.port === l.port), 'the exposing socket is named');

  // The upgrade, written like dpkg writes it, with a hostile paragraph added.
  const seqBefore = first.seq as number;
  const hostile = Buffer.concat([Buffer.from('Package: \u0000\xff\xfe evil\nStatus: install ok installed\nVersion: 1:\n\n'), Buffer.from([0xc3, 0x28, 0x0a, 0x0a])]);
  writeStatus(statusPath, Buffer.concat([Buffer.from([paragraph('bash', '5.2.15-2+b2', 'bash (5.2.15-2)'), paragraph('nodejs-fake', '1.0-2', 'nodejs-src'), paragraph('curl', '7.88.1-10+deb12u5'), ''].join('\n')), hostile]));
  const second = await until('the diff', async () => {
    const r = await packages();
    return r.body.seq > seqBefore && r.body.packages.some((p: { package: string }) => p.package === 'curl') && r.body;
  });
  t.same(second.packages.map((p: { package: string; version: string }) => `${p.package}=${p.version}`), ['bash=5.2.15-2+b2', 'curl=7.88.1-10+deb12u5', 'nodejs-fake=1.0-2']);
  t.ok(a.logs.some((x) => x.includes('inventory reported') && x.includes('"kind":"diff"')), 'the change went as a diff');
  t.ok(a.logs.some((x) => x.includes('dpkg status paragraph skipped')), 'the hostile paragraph is skipped and logged');
  t.equal((await s.req('GET', `/api/v1/findings?machine=${machineId}`)).body.total, 0, 'upgraded past the fix: no finding');
  const st = (await a.api('GET', '/v1/status')).body.inventory;
  t.match(st, { enabled: true, last_kind: 'diff', packages: 3, findings: 0, last_error: null });
  t.ok(st.problems >= 1, 'status counts the skipped paragraphs');

  // A restarted agent starts over with a full report.
  await a.stop();
  const b = await startAgent({
    serverUrl: s.url,
    dir,
    hardwareFacts: { machine_id: `inventory-${process.pid}`, macs: ['52:54:00:aa:bb:01'] },
    extraConfig: { dpkg_status_path: statusPath, dpkg_info_dir: info, os_release_path: osRelease, inventory_interval_seconds: 1 },
  });
  t.teardown(() => b.stop());
  await ready(b);
  await until('a full report after the restart', async () => b.logs.some((x) => x.includes('inventory reported') && x.includes('"kind":"full"')));
  t.equal((await packages()).body.packages.length, 3);
});

t.test('with mTLS the inventory goes over the agent listener with a certificate-bound token', async (t) => {
  const m = await startMtlsServer();
  t.teardown(() => m.close());
  const d = agentDir();
  t.teardown(() => cleanupDir(d));
  const statusPath = join(d, 'status');
  writeStatus(statusPath, paragraph('openssh-server', '1:9.2p1-2+deb12u2', 'openssh'));
  const osRelease = join(d, 'os-release');
  writeFileSync(osRelease, 'VERSION_CODENAME=bookworm\n');
  const c = await m.req('POST', '/api/v1/customers', { name: 'Inventory mTLS' });
  const lic = await m.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
  const a = await startAgent({
    serverUrl: m.url,
    dir: d,
    hardwareFacts: { machine_id: `inventory-mtls-${process.pid}`, macs: ['52:54:00:aa:bb:02'] },
    extraConfig: { agent_server_url: m.agentUrl, dpkg_status_path: statusPath, dpkg_info_dir: join(d, 'no-info'), os_release_path: osRelease, inventory_interval_seconds: 1 },
  });
  t.teardown(() => a.stop());
  await ready(a);
  t.equal((await a.api('POST', '/v1/activate', { license_key: lic.body.license_key })).status, 200);
  const machineId = (await a.api('GET', '/v1/status')).body.machine_id as string;
  const got = await until('the inventory over mTLS', async () => {
    const r = await m.req('GET', `/api/v1/machines/${machineId}/packages`);
    return r.body.seq !== null && r.body;
  });
  t.same(got.packages.map((p: { package: string }) => p.package), ['openssh-server']);
  t.ok((await a.api('GET', '/v1/status')).body.mtls.last_ok_at, 'the agent listener was used');
  const main = await fetch(`${m.url}/api/v1/agent/inventory`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  t.equal(main.status, 404, 'with mTLS on, the main listener has no inventory route');
});
