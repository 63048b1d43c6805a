/**
 * Attack: from a process in an enforced service whose only edge is one TCP port, send what
 * the datapath used to let through (raw sockets, as root inside the cgroup): a TCP ACK with
 * data and no connection, UDP-Lite, SCTP and protocol 253 packets, an ICMP echo over an
 * unprivileged ping socket, and UDP over IPv6 behind eight extension headers. A raw
 * listener outside the cgroup says what arrived. In enforce nothing arrives and each is
 * counted; in observe everything arrives and is counted as would-drop. Real kernel, real
 * packets on loopback.
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { requireCapability, missingCommand } from '../harness/capabilities.js';
import { makeCgroup, missingDatapath, removeCgroup, testPinRoot } from '../harness/datapath.js';
import { rawListen, sendBypass } from '../harness/raw_packets.js';
import { open } from '../../agent/src/datapath/index.js';

const CASES = ['tcp-ack', 'udplite', 'sctp', 'proto253', 'v6-exthdr'] as const;
const PING_RANGE = '/proc/sys/net/ipv4/ping_group_range';

t.test('what the datapath used to let through is refused in enforce and counted in observe', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  if (!requireCapability(t, missingCommand('python3'))) return;
  const oldRange = readFileSync(PING_RANGE, 'utf8').trim();
  writeFileSync(PING_RANGE, '0 2147483647'); // ping sockets for every group, as distributions enable them
  t.teardown(() => writeFileSync(PING_RANGE, oldRange));
  const pinRoot = testPinRoot('bypass');
  const cg = makeCgroup('bypass');
  const dp = await open({ pinRoot });
  t.teardown(async () => {
    await dp.purge();
    removeCgroup(cg);
  });
  const svc = 611;
  await dp.bindService(svc, cg);
  const policy = { edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp' as const, port: 9 }] };
  const future = Date.now() + 3_600_000;
  const counters = async () => (await dp.stats()).find((s) => s.serviceId === svc)!.counters!;

  async function attack(marker: string): Promise<{ arrived: string[]; ping: string }> {
    const { seen } = await rawListen(marker, 5);
    const r = await sendBypass(cg, CASES, '127.0.0.1', 5555, marker);
    if (r.code !== 0) throw new Error(`sender: ${r.stderr}`);
    const ping = await sendBypass(cg, ['ping'], '127.0.0.1', 0, marker);
    return { arrived: await seen, ping: ping.stdout.trim() || ping.stderr.trim() };
  }

  await t.test('enforce: none of them leaves the service', async (t) => {
    await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 1 });
    const before = await counters();
    const r = await attack(`enforce-${process.pid}`);
    t.same(r.arrived, [], 'no raw TCP ACK, UDP-Lite, SCTP, protocol 253 or 8-extension-header packet arrived');
    t.not(r.ping, 'reply', `no ICMP echo reply (${r.ping})`);
    const after = await counters();
    t.ok(after.dropped - before.dropped >= CASES.length + 1, `each was dropped (${after.dropped - before.dropped})`);
    t.ok(after.unparsed - before.unparsed >= 1, `the extension-header chain counted as unparsed (${after.unparsed - before.unparsed})`);
  });

  await t.test('observe: all of them pass and are counted as would-drop', async (t) => {
    await dp.apply(svc, policy, { mode: 'observe', expiresAt: future, generation: 2 });
    const before = await counters();
    const r = await attack(`observe-${process.pid}`);
    t.same(r.arrived, [...CASES].sort(), 'everything arrived');
    t.equal(r.ping, 'reply', 'the echo was answered');
    const after = await counters();
    t.ok(after.wouldDrop - before.wouldDrop >= CASES.length + 1, `each counted as would-drop (${after.wouldDrop - before.wouldDrop})`);
    t.equal(after.dropped - before.dropped, 0, 'nothing dropped in observe');
  });

  await t.test('enforce with icmp allowed: the echo is answered', async (t) => {
    await dp.apply(svc, { edges: [...policy.edges, { dst_cidr: '127.0.0.1/32', proto: 'icmp' as const, port: 8 }], allow_cidrs: [] }, { mode: 'enforce', expiresAt: future, generation: 3 });
    const r = await sendBypass(cg, ['ping'], '127.0.0.1', 0, `icmp-${process.pid}`);
    t.equal(r.stdout.trim(), 'reply', `ping works when icmp echo is an edge (${r.stderr.trim()})`);
  });
});
