/**
 * Attack from another machine: a client in its own network namespace, joined to the host by
 * a veth pair (IPv4 and IPv6), talks to an enforced service whose listener runs on the
 * host. The service allows one TCP port from the client's addresses. That port connects and
 * echoes data both ways; another port the service listens on gets nothing. Then the raw
 * packets that used to slip past a stateless filter arrive over the interface: a TCP ACK
 * with data and no connection to the listener on the denied port, UDP-Lite, SCTP, protocol
 * 253, an ICMP echo request, UDP behind eight IPv6 extension headers and a UDP datagram in
 * two IPv4 fragments. Raw listeners inside the service say what reached it: in enforce
 * nothing, each counted as dropped; in observe everything, each counted as would-drop.
 */
import t from 'tap';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { harnessScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, testPinRoot, waitForFile } from '../harness/datapath.js';
import { createVethNetns, missingNetns, runInNetns } from '../harness/netns.js';
import { rawListen, sendBypassFromNetns } from '../harness/raw_packets.js';
import { open } from '../../agent/src/datapath/index.js';
import type { ExchangeOutcome } from '../harness/echo_peer.js';

const CASES = ['tcp-ack', 'udplite', 'sctp', 'proto253', 'icmp-echo', 'v6-exthdr', 'frag'] as const;

t.test('ingress over a veth pair from another network namespace', { timeout: 180_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  if (!requireCapability(t, missingNetns())) return;
  if (!requireCapability(t, missingCommand('python3'))) return;
  const net = createVethNetns('ing');
  t.teardown(() => net.remove());
  const pinRoot = testPinRoot('ingress');
  const cg = makeCgroup('ingress');
  const dp = await open({ pinRoot });
  const base = join(tmpdir(), `aegis-ingress-${process.pid}`);
  const stop = `${base}.stop`;
  rmSync(stop, { force: true });
  let server: Promise<unknown> = Promise.resolve();
  t.teardown(async () => {
    writeFileSync(stop, 'stop');
    await server.catch(() => undefined);
    await dp.purge();
    removeCgroup(cg);
    rmSync(`${base}.ready`, { force: true });
    rmSync(stop, { force: true });
  });
  const svc = 621;
  await dp.bindService(svc, cg);
  // Echo listeners inside the service (dual-stack): the first port is allowed, the second not.
  const peer = harnessScript('echo_peer.js');
  server = runNodeInCgroup(cg, peer, [JSON.stringify({ op: 'serve', host: '::', ports: [0, 0], readyFile: `${base}.ready`, stopFile: stop, maxMs: 170_000 })], 175_000);
  const [allowed, denied] = JSON.parse(await waitForFile(`${base}.ready`)) as [number, number];
  const policy = {
    allow_cidrs: [
      { cidr: `${net.ns4}/32`, proto: 'tcp' as const, port: allowed },
      { cidr: `${net.ns6}/128`, proto: 'tcp' as const, port: allowed },
    ],
  };
  const future = Date.now() + 3_600_000;
  const counters = async () => (await dp.stats()).find((s) => s.serviceId === svc)!.counters!;
  await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 1 });

  await t.test('the allowed port exchanges data both ways, the denied one gets nothing', async (t) => {
    const before = await counters();
    const targets = [
      { host: net.host4, port: allowed, bytes: 256 * 1024 },
      { host: net.host6, port: allowed, bytes: 256 * 1024 },
      { host: net.host4, port: denied, timeoutMs: 1500 },
      { host: net.host6, port: denied, timeoutMs: 1500 },
    ];
    const r = await runInNetns(net.ns, [process.execPath, peer, JSON.stringify({ op: 'exchange', targets })]);
    t.equal(r.code, 0, `client in the namespace ran ${r.stderr}`);
    const out = (JSON.parse(r.stdout) as { results: ExchangeOutcome[] }).results;
    t.same(out.map((o) => o.ok), [true, true, false, false], `verdicts ${JSON.stringify(out)}`);
    t.equal(out[0]!.received, 256 * 1024, 'IPv4: 256 KiB sent and echoed back intact');
    t.equal(out[1]!.received, 256 * 1024, 'IPv6: 256 KiB sent and echoed back intact');
    t.same([out[2]!.error, out[3]!.error], ['timeout', 'timeout'], 'the denied port: no answer at all (the SYN is dropped on ingress)');
    t.same([out[2]!.received, out[3]!.received], [0, 0], 'and no byte');
    const c = await counters();
    t.equal(c.allowed - before.allowed, 2, 'two flows opened by ingress SYNs');
    t.ok(c.dropped - before.dropped >= 2, `the denied SYNs (and their retransmits) dropped (${c.dropped - before.dropped})`);
  });

  async function attack(marker: string): Promise<string[]> {
    // The raw listeners run inside the service: what the ingress program lets through reaches them.
    const { seen } = await rawListen(marker, 4, CASES, cg);
    const r = await sendBypassFromNetns(net.ns, CASES, net.host4, denied, marker, net.host6);
    if (r.code !== 0 || r.stderr.trim() !== '') throw new Error(`sender: ${r.stderr}`);
    return seen;
  }

  await t.test('enforce: none of the raw packets reaches the service, each is counted', async (t) => {
    const before = await counters();
    const arrived = await attack(`ingress-enforce-${process.pid}`);
    t.same(arrived, [], 'no ACK without SYN, UDP-Lite, SCTP, protocol 253, ICMP echo, 8-extension-header or fragmented packet arrived');
    const c = await counters();
    t.ok(c.dropped - before.dropped >= CASES.length, `each dropped on ingress (${c.dropped - before.dropped})`);
    t.ok(c.unparsed - before.unparsed >= 1, `the extension-header chain counted as unparsed (${c.unparsed - before.unparsed})`);
    t.equal(c.wouldDrop - before.wouldDrop, 0, 'nothing merely observed');
  });

  await t.test('observe: the same packets arrive and are counted as would-drop', async (t) => {
    await dp.apply(svc, policy, { mode: 'observe', expiresAt: future, generation: 2 });
    const before = await counters();
    const arrived = await attack(`ingress-observe-${process.pid}`);
    t.same(arrived, [...CASES].sort(), 'everything arrived');
    const c = await counters();
    t.ok(c.wouldDrop - before.wouldDrop >= CASES.length, `each counted as would-drop (${c.wouldDrop - before.wouldDrop})`);
    t.equal(c.dropped - before.dropped, 0, 'nothing dropped in observe');
  });
});
