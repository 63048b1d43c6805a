/**
 * Decide and act end to end, with a real aegis-agent (root, eBPF in the kernel, real
 * nats-server): the agent reports its package inventory, a feed is imported, a finding is
 * raised, a rule with `action: quarantine, mode: auto` fires; the quarantine canary reaches
 * the kernel (observe: nothing cut; the agent acks it), the guard rails promote it after the
 * canary window and a connection from the service's cgroup that worked now fails while the
 * management edge still connects; the operator rejects the decision, it rolls back through
 * the orchestrator and traffic flows again. Short windows (3 s canary, 1 s passes).
 */
import t from 'tap';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import { loadFeedPath } from '../server/src/intel/feed_loader.js';
import { startTestServer, type TestServer } from './harness/server.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from './harness/agent.js';
import { startNats, type TestNats } from './harness/nats.js';
import { requireCapability, missingCommand } from './harness/capabilities.js';
import { missingDatapath, makeCgroup, removeCgroup, testPinRoot, tcpListener, probeTcp, eventually } from './harness/datapath.js';
import { purgePins } from '../agent/src/datapath/index.js';

const SERVICE = 131;

/** This file's waits span agent start-up and a canary window: 20 s each. */
const waitUntil = <T>(what: string, fn: () => Promise<T | null | undefined | false>) => eventually(what, fn, 20_000);

const same = (a: boolean[], b: boolean[]) => a.length === b.length && a.every((x, i) => x === b[i]);

t.test('a finding fires a quarantine rule; the canary reaches the kernel, is promoted, cuts traffic, and rolls back on reject', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  if (!requireCapability(t, await missingDatapath())) return;

  const nats: TestNats = await startNats();
  t.teardown(() => nats.stop());
  const s: TestServer = await startTestServer({
    natsUrl: nats.url,
    republishSeconds: 2,
    env: { AEGIS_DECISION_CANARY_SECONDS: '3', AEGIS_DECISION_INTERVAL_SECONDS: '1', AEGIS_RULES_INTERVAL_SECONDS: '3600' },
  });
  t.teardown(() => s.close());
  const app = await tcpListener('127.0.0.1');
  const mgmt = await tcpListener('127.0.0.1');
  t.teardown(() => {
    app.close();
    mgmt.close();
  });
  const pApp = app.port;
  const pMgmt = mgmt.port;
  const cgroup = makeCgroup('decisions-e2e');
  const pinRoot = testPinRoot('decisions-e2e');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });

  // The host's packages, written the way dpkg writes them.
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const dpkg = join(dir, 'dpkg');
  mkdirSync(join(dpkg, 'info'), { recursive: true });
  writeFileSync(join(dpkg, 'status-new'), ['Package: webapp', 'Status: install ok installed', 'Architecture: amd64', 'Source: webapp-src', 'Version: 1.0-1', 'Description: test', ''].join('\n'));
  renameSync(join(dpkg, 'status-new'), join(dpkg, 'status'));
  writeFileSync(join(dir, 'os-release'), 'VERSION_CODENAME=bookworm\nID=debian\n');

  const host = `dec-host-${process.pid}`;
  const agent: TestAgent = await startAgent({
    serverUrl: s.url,
    dir,
    pinRoot,
    services: { [String(SERVICE)]: cgroup },
    hardwareFacts: { machine_id: host },
    extraConfig: {
      hostname: host,
      nats_url: nats.url,
      status_interval_seconds: 1,
      fallback_interval_seconds: 1,
      dpkg_status_path: join(dpkg, 'status'),
      dpkg_info_dir: join(dpkg, 'info'),
      os_release_path: join(dir, 'os-release'),
      inventory_interval_seconds: 1,
    },
  });
  await agent.waitReady();
  t.teardown(() => agent.stop());
  const cust = await s.req('POST', '/api/v1/customers', { name: 'Decisions E2E' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
  t.equal((await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key })).status, 200, 'activated');
  const machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;
  const snapshots = async () => (await agent.api('GET', '/v1/snapshots')).body.services[0];

  // What the operator enforced before: both destinations allowed.
  const base = await s.req('POST', `/seg/maps?target_machine=${machineId}&stage=enforce`, {
    version: 1,
    service_id: SERVICE,
    edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp', port: pApp }, { dst_cidr: '127.0.0.1/32', proto: 'tcp', port: pMgmt }],
    ttl_seconds: 3600,
  });
  t.equal(base.status, 200);
  await waitUntil('the baseline enforced', async () => (await snapshots()).revision === base.body.revision && (await snapshots()).mode === 'enforce');
  t.same(await probeTcp(cgroup, [pApp, pMgmt]), [true, true], 'before: both connect');

  // Inventory reported; a feed imported; a finding raised.
  await waitUntil('the inventory', async () => (await s.req('GET', `/api/v1/machines/${machineId}/packages`)).body.packages?.some((p: { package: string }) => p.package === 'webapp'));
  const feed = join(dir, 'feed.json');
  writeFileSync(
    feed,
    JSON.stringify({
      id: 'DEBIAN-CVE-2099-4242',
      modified: '2026-01-01T00:00:00Z',
      affected: [{ package: { ecosystem: 'Debian:12', name: 'webapp-src' }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }, { fixed: '1.0-2' }] }] }],
    }),
  );
  t.match(await s.app.intel.importAdvisories(loadFeedPath(feed), feed), { inserted: 1, findings: 1 }, 'imported: one finding');

  const rule = {
    id: 'quarantine-webapp',
    title: 'A vulnerable webapp: quarantine the machine',
    type: 'event_count',
    rules: [{ source: 'finding', advisory: 'DEBIAN-CVE-2099-4242' }],
    'group-by': ['machine_id'],
    timespan: '10m',
    condition: { gte: 1 },
    level: 'critical',
    action: { type: 'quarantine', allow: [{ cidr: '127.0.0.1/32', proto: 'tcp', port: pMgmt, direction: 'egress' }] },
    mode: 'auto',
  };
  t.equal((await s.req('POST', '/api/v1/rules', rule)).status, 201);
  t.equal(await s.app.correlator.evaluate(), 1, 'the rule fires');
  const [d] = (await s.req('GET', `/api/v1/decisions?rule=${rule.id}`)).body.items;
  t.same([d.state, d.machine_id], ['canary', machineId], 'auto: a canary at once, for that machine');
  const rev = d.revisions[0].revision as number;

  // The canary in the kernel: observe mode, nothing cut; the agent acks it.
  await waitUntil('the canary applied', async () => (await snapshots()).revision === rev);
  t.equal((await snapshots()).mode, 'observe', 'a canary runs in observe mode');
  t.same(await probeTcp(cgroup, [pApp, pMgmt]), [true, true], 'canary: nothing cut yet');
  await waitUntil('the ack reached the server', async () => (await s.req('GET', `/api/v1/agents/${machineId}`)).body?.applied?.[String(SERVICE)]?.revision === rev);

  // The guard rails promote it after the window; the quarantine cuts the app, keeps the management edge.
  const promoted = await waitUntil('promoted', async () => {
    const r = (await s.req('GET', `/api/v1/decisions/${d.id}`)).body;
    return r.state !== 'canary' && r;
  });
  t.equal(promoted.state, 'promoted', promoted.reason);
  // What the canary counted reached the flow log under its revision: the app port, not the management edge.
  const wouldDrops = await waitUntil('the canary\'s would-drops in the flow log', async () => {
    const items = (await s.req('GET', `/api/v1/flows?machine=${machineId}&verdict=would-drop`)).body.items as Array<{ revision: number; port: number }>;
    const mine = items.filter((f) => f.revision === rev);
    return mine.length > 0 && mine;
  });
  t.ok(wouldDrops.some((f) => f.port === pApp) && !wouldDrops.some((f) => f.port === pMgmt), 'would-drop: the app port only');
  await waitUntil('quarantine enforced', async () => same(await probeTcp(cgroup, [pApp, pMgmt]), [false, true]));
  t.pass('promoted: the connection that worked now fails; the management edge still connects');
  t.equal((await snapshots()).mode, 'enforce');

  // The operator rejects: rolled back through the orchestrator, traffic flows again.
  const rj = await s.req('POST', `/api/v1/decisions/${d.id}/reject`, { reason: 'the operator patched it' });
  t.same([rj.status, rj.body.state], [200, 'rolled_back']);
  const restoredBy = rj.body.revisions[0].restored_by as number;
  t.ok(restoredBy > rev, 'a newer revision restores the baseline');
  await waitUntil('rollback applied', async () => (await snapshots()).revision === restoredBy);
  await waitUntil('traffic flows again', async () => same(await probeTcp(cgroup, [pApp, pMgmt]), [true, true]));
  t.pass('rolled back: both connect again');
  const db = (s.app as unknown as { ctx: { db: Kysely<any> } }).ctx.db;
  const trail = (await db.selectFrom('audit_logs').select(['event_type', 'event_data']).orderBy('id').execute())
    .filter((r: any) => JSON.parse(r.event_data).decision_id === d.id)
    .map((r: any) => r.event_type as string);
  t.same(trail, ['decision.proposed', 'decision.approved', 'decision.canary', 'decision.promoted', 'decision.rolled_back'], 'every transition audited');
});
