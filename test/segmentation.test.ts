/**
 * Segmentation end to end: POST /seg/maps → aegis-server → NATS (JetStream last value) →
 * aegis-agent → eBPF in the kernel → a refused or accepted connection. Also the HTTP
 * fallback, NATS outages, forged messages, and sealed fleet license envelopes.
 */
import t from 'tap';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { connect as natsConnect, StringCodec } from 'nats';
import { AUD_SEG_MAP, deriveFleetKey, parseFleetKey } from '../protocol/src/index.js';
import { startTestServer, type TestServer } from './harness/server.js';
import { startAgent, agentDir, cleanupDir, type TestAgent } from './harness/agent.js';
import { startNats, type TestNats } from './harness/nats.js';
import { requireCapability, missingCommand } from './harness/capabilities.js';
import { missingDatapath, makeCgroup, removeCgroup, testPinRoot, tcpListener, probeTcp, eventually } from './harness/datapath.js';
import { purgePins } from '../agent/src/datapath/index.js';

const sc = StringCodec();
/** The server's master fleet key; hosts of fleet prod hold prod's own key, derived from it. */
const FLEET_KEY = randomBytes(32).toString('base64');
const PROD_KEY = deriveFleetKey(parseFleetKey(FLEET_KEY), 'prod', 1).toString('base64');

/** Polls `fn` until it returns true (kernel state follows NATS asynchronously). */
const same = (a: boolean[], b: boolean[]) => a.length === b.length && a.every((x, i) => x === b[i]);

t.test('segmentation end to end', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  if (!requireCapability(t, await missingDatapath())) return;

  const nats: TestNats = await startNats();
  t.teardown(() => nats.stop());
  const s: TestServer = await startTestServer({ natsUrl: nats.url, fleetKey: FLEET_KEY, republishSeconds: 2 });
  t.teardown(() => s.close());
  const a1 = await tcpListener('127.0.0.1');
  const a2 = await tcpListener('127.0.0.1');
  t.teardown(() => {
    a1.close();
    a2.close();
  });
  const pA = a1.port;
  const pB = a2.port;
  const cgroup = makeCgroup('seg-e2e');
  const pinRoot = testPinRoot('seg-e2e');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });
  const host = `seg-host-${process.pid}`;
  const cust = await s.req('POST', '/api/v1/customers', { name: 'Seg E2E' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual', fleet: 'prod', max_machines: 3 });
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const agentOpts = {
    serverUrl: s.url,
    dir,
    pinRoot,
    services: { '101': cgroup },
    hardwareFacts: { machine_id: host },
    extraConfig: { hostname: host, nats_url: nats.url, fleet: 'prod', fleet_key: PROD_KEY, status_interval_seconds: 1, fallback_interval_seconds: 1 },
  };
  let agent: TestAgent = await startAgent(agentOpts);
  await agent.waitReady();
  t.teardown(() => agent.stop());
  // A machine of the fleet's license: snapshot targets, reports and its NATS subjects name
  // the machine id it is given here.
  t.equal((await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key })).status, 200, 'activated');
  let machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;

  await t.test('fleet license arrives within 10 s of start and is saved 0600', async (t) => {
    const t0 = Date.now();
    // Activated above: the agent reconnects NATS as its machine, whose request the server
    // answers with its own fleet's envelope, well before the next periodic publish.
    await agent.waitFor(() => agent.logs.some((l) => l.includes('"message":"fleet license"')), 10_000, 'fleet license');
    t.ok(Date.now() - t0 <= 10_000, 'within 10 s');
    const st = (await agent.api('GET', '/v1/status')).body;
    t.equal(st.edition, 'licensed');
    t.equal(st.fleet_license.status, 'active');
    t.ok(st.features.includes('segmentation_enforce'));
    t.equal(statSync(join(agent.stateDir, 'license.key')).mode & 0o777, 0o600, 'envelope saved 0600');
  });

  const post = async (query: string, body: Record<string, unknown>) => {
    const r = await s.req('POST', `/seg/maps${query}`, body);
    if (r.status !== 200) throw new Error(JSON.stringify(r.body));
    return r.body;
  };
  const snapshot = (port: number) => ({ version: 1, service_id: 101, edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp', port }], ttl_seconds: 3600 });

  await t.test('canary runs in observe mode, promote enforces, rollback restores', async (t) => {
    const r1 = await post(`?target_host=${host}`, snapshot(pA));
    t.equal(r1.stage, 'canary');
    await eventually('revision 1 applied', async () => (await agent.api('GET', '/v1/snapshots')).body.services[0].revision === r1.revision);
    t.same(await probeTcp(cgroup, [pA, pB]), [true, true], 'canary: observe mode, nothing dropped');
    const v1 = (await agent.api('GET', '/v1/snapshots')).body.services[0];
    t.equal(v1.mode, 'observe');
    await eventually('would-drop counted', async () => (await agent.api('GET', '/v1/snapshots')).body.services[0].counters.would_drop >= 1);
    await eventually('ack recorded by the server', async () => (await s.req('GET', `/api/v1/agents/${machineId}`)).body?.applied?.['101']?.revision === r1.revision);

    await s.req('POST', '/seg/maps/promote', { service_id: 101 });
    await eventually('promotion enforced', async () => same(await probeTcp(cgroup, [pA, pB]), [true, false]));
    t.pass('promote: the non-allowed destination is refused, the allowed one connects');

    const r2 = await post(`?target_host=${host}&stage=enforce`, snapshot(pB));
    await eventually('revision 2 enforced', async () => same(await probeTcp(cgroup, [pA, pB]), [false, true]));
    t.pass('a new enforce revision flips the allowed edge');

    const rb = await s.req('POST', '/seg/maps/rollback', { service_id: 101 });
    t.equal(rb.body.restores_revision, r1.revision);
    t.ok(rb.body.revision > r2.revision);
    await eventually('rollback enforced', async () => same(await probeTcp(cgroup, [pA, pB]), [true, false]));
    t.pass('rollback restores the previous revision in the kernel');
    const agents = await s.req('GET', '/api/v1/agents');
    const me = agents.body.items.find((x: { machine_id: string }) => x.machine_id === machineId);
    t.equal(me.host, host, 'listed under its machine, with its hostname as the label');
    t.equal(me.status.edition, 'licensed', 'status reports reach the server');
    t.equal(me.status.services[0].mode, 'enforce');
  });

  await t.test('forged messages past NATS authorization are rejected by the agent', async (t) => {
    const before = (await agent.api('GET', '/v1/snapshots')).body.services[0].revision;
    const nc = await natsConnect({ servers: nats.url });
    const evil = generateKeyPairSync('ed25519').privateKey;
    const kid = s.keys.activeKid();
    const head = Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid })).toString('base64url');
    const body = Buffer.from(
      JSON.stringify({ aud: AUD_SEG_MAP, iss: 'aegis-server', iat: Math.floor(Date.now() / 1000), target: machineId, service_id: 101, revision: 9999, stage: 'enforce', snapshot: { version: 1, service_id: 101, edges: [], ttl_seconds: 3600 } }),
    ).toString('base64url');
    const forged = `${head}.${body}.${sign(null, Buffer.from(`${head}.${body}`), evil).toString('base64url')}`;
    nc.publish(`aegis.seg.maps.${machineId}.101`, sc.encode(forged));
    nc.publish(`aegis.seg.maps.${machineId}.101`, sc.encode('not even a JWS'));
    nc.publish('aegis.license.prod', sc.encode('{"v":1,"alg":"A256GCM","fleet":"prod","seq":99999999999999,"iv":"AAAAAAAAAAAAAAAA","ct":"AAAAAAAAAAAAAAAAAAAAAAAA"}'));
    await nc.flush();
    await agent.waitFor(() => agent.logs.filter((l) => l.includes('rejected a snapshot message')).length >= 2, 5000, 'rejections');
    await agent.waitFor(() => agent.logs.some((l) => l.includes('rejected a fleet license envelope')), 5000, 'envelope rejection');
    await nc.close();
    t.equal((await agent.api('GET', '/v1/snapshots')).body.services[0].revision, before, 'policy unchanged');
    t.same(await probeTcp(cgroup, [pA, pB]), [true, false], 'kernel unchanged');
    t.equal((await agent.api('GET', '/v1/status')).body.edition, 'licensed', 'license unchanged');
  });

  await t.test('an envelope signed long ago is refused even with a newer sequence number', async (t) => {
    const before = (await agent.api('GET', '/v1/status')).body.fleet_license.seq as number;
    s.clock.offsetMs = -20 * 60_000; // sealed now, signed as of 20 minutes ago: a recording's age
    try {
      await s.app.fleet!.publishFleet('prod');
    } finally {
      s.clock.offsetMs = 0;
    }
    await agent.waitFor(() => agent.logs.some((l) => l.includes('rejected a fleet license envelope') && l.includes('replay refused')), 5000, 'old envelope rejected');
    t.equal((await agent.api('GET', '/v1/status')).body.fleet_license.seq, before, 'the held envelope is kept');
  });

  await t.test('replayed fleet envelope rejected; revocation reaches the agent within one publish (fleet) and one refresh (machine)', async (t) => {
    const nc = await natsConnect({ servers: nats.url });
    const captured: string[] = [];
    const sub = nc.subscribe('aegis.license.prod', { callback: (_e, m) => captured.push(sc.decode(m.data)) });
    await nc.flush();
    await s.app.fleet!.publishFleet('prod'); // a current envelope, captured by the "attacker"
    await eventually('captured', async () => captured.length > 0, 5000);
    await s.req('DELETE', `/api/v1/licenses/${lic.body.id}/revoke`, { reason: 'fleet revocation test' });
    await eventually('fleet envelope revoked', async () => (await agent.api('GET', '/v1/status')).body.fleet_license.status === 'revoked', 5000);
    // The host is also a machine of that license: its next refresh hears LICENSE_REVOKED.
    await agent.api('POST', '/v1/refresh');
    await eventually('community after revocation', async () => (await agent.api('GET', '/v1/status')).body.edition === 'community', 5000);
    t.pass('revoked: community edition after one publish and one refresh');
    t.equal((await agent.api('GET', '/v1/status')).body.fleet_license.status, 'revoked');
    // The machine ended with its license, so the agent reconnects NATS without one; the
    // replay below must reach that connection to be refused by it.
    await eventually('back on NATS without a machine', async () => (await agent.api('GET', '/v1/status')).body.nats.connected === true, 10_000);
    nc.publish('aegis.license.prod', sc.encode(captured[0]!)); // replay the older, still-valid envelope
    await nc.flush();
    await agent.waitFor(() => agent.logs.some((l) => l.includes('replay or rollback')), 5000, 'replay rejected');
    t.equal((await agent.api('GET', '/v1/status')).body.edition, 'community', 'replay did not re-license');
    sub.unsubscribe();
    await nc.close();
    // Back to licensed for what follows: a machine license of its own.
    const lic2 = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
    t.equal((await agent.api('POST', '/v1/activate', { license_key: lic2.body.license_key })).status, 200);
    const renewed = (await agent.api('GET', '/v1/status')).body.machine_id as string;
    t.not(renewed, machineId, 'a new machine');
    machineId = renewed;
  });

  await t.test('nats-server killed mid-run: enforcement continues, the agent catches up', async (t) => {
    await nats.kill();
    t.same(await probeTcp(cgroup, [pA, pB]), [true, false], 'still enforcing without NATS');
    const r = await post(`?target_host=${host}&stage=enforce`, snapshot(pB)); // stored; NATS down
    t.equal(r.published, false, 'server says it could not publish');
    await nats.restart();
    await eventually('caught up after NATS returned', async () => same(await probeTcp(cgroup, [pA, pB]), [false, true]), 30_000);
    t.pass('new revision enforced after NATS came back');
  });

  await t.test('an agent started after the snapshot was posted still gets it (JetStream last value)', async (t) => {
    // For every host: the fresh agent below is not activated, so it has no machine of its own.
    await post('?stage=enforce', snapshot(pB));
    await agent.stop();
    await purgePins(pinRoot);
    const agentDir2 = agentDir();
    t.teardown(() => cleanupDir(agentDir2));
    const fresh = await startAgent({ ...agentOpts, dir: agentDir2, hardwareFacts: { machine_id: `${host}-2` } });
    await fresh.waitReady();
    agent = fresh;
    await eventually('fresh agent applied the last value', async () => (await fresh.api('GET', '/v1/snapshots')).body.services[0].revision !== null);
    const view = (await fresh.api('GET', '/v1/snapshots')).body.services[0];
    const current = (await s.req('GET', '/seg/maps/101')).body.revisions[0];
    t.equal(view.revision, current.revision, 'newest revision, not an older one');
    t.equal(view.stage, 'enforce');
  });
});

t.test('HTTP fallback: an agent without NATS gets the same state from the server', async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const s = await startTestServer();
  t.teardown(() => s.close());
  const cgroup = makeCgroup('seg-http');
  const pinRoot = testPinRoot('seg-http');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });
  const host = `http-host-${process.pid}`;
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const agent = await startAgent({
    serverUrl: s.url,
    dir,
    pinRoot,
    services: { '7': cgroup },
    hardwareFacts: { machine_id: host },
    extraConfig: { hostname: host, fallback_interval_seconds: 1 },
  });
  await agent.waitReady();
  t.teardown(() => agent.stop());
  const cust = await s.req('POST', '/api/v1/customers', { name: 'HTTP' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
  t.equal((await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key })).status, 200);
  const r = await s.req('POST', `/seg/maps?target_host=${host}`, { version: 1, service_id: 7, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'any', port: 0 }], ttl_seconds: 600 });
  await eventually('fallback delivered', async () => (await agent.api('GET', '/v1/snapshots')).body.services[0].revision === r.body.revision);
  const st = (await agent.api('GET', '/v1/status')).body;
  t.equal(st.snapshot_source, 'http', 'came over the HTTP fallback');
  t.equal(st.nats.connected, false);
});

t.test('TTL: a snapshot that is not renewed is withdrawn', async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const s = await startTestServer();
  let up = true;
  t.teardown(async () => {
    if (up) await s.close();
  });
  const srv = await tcpListener('127.0.0.1');
  t.teardown(() => srv.close());
  const port = srv.port;
  const cgroup = makeCgroup('seg-ttl');
  const pinRoot = testPinRoot('seg-ttl');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });
  const host = `ttl-host-${process.pid}`;
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const agent = await startAgent({ serverUrl: s.url, dir, pinRoot, services: { '9': cgroup }, hardwareFacts: { machine_id: host }, extraConfig: { hostname: host, fallback_interval_seconds: 1 } });
  await agent.waitReady();
  t.teardown(() => agent.stop());
  const cust = await s.req('POST', '/api/v1/customers', { name: 'TTL' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
  await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key });
  await s.req('POST', `/seg/maps?target_host=${host}&stage=enforce`, { version: 1, service_id: 9, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }], ttl_seconds: 60 });
  await eventually('enforced', async () => same(await probeTcp(cgroup, [port]), [false]));
  t.pass('enforced: loopback not in the allowed edges');
  await s.close(); // no more renewals
  up = false;
  await eventually('withdrawn after the TTL', async () => same(await probeTcp(cgroup, [port]), [true]), 75_000);
  t.ok(agent.logs.some((l) => l.includes('snapshot TTL expired')), 'withdrawal logged');
  t.equal((await agent.api('GET', '/v1/snapshots')).body.services[0].revision, null);
});
