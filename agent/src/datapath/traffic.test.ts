/**
 * Real traffic: a child process placed in a test cgroup bound to a service makes TCP and
 * UDP connections over loopback (IPv4 and IPv6) to listeners in this process. Allowed
 * edges connect, the rest are refused, and the counters match what was sent.
 */
import t from 'tap';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { open } from './index.js';
import type { FlowEvent } from './index.js';
import { helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, testPinRoot } from '../../../test/harness/datapath.js';

interface Listener {
  port: number;
  accepted: number;
  close(): Promise<void>;
}

async function tcpListener(host: string): Promise<Listener> {
  const l = { port: 0, accepted: 0, close: async () => {} };
  const srv: Server = createServer((c) => {
    l.accepted++;
    c.end();
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  l.port = (srv.address() as AddressInfo).port;
  l.close = () => new Promise<void>((r) => srv.close(() => r()));
  return l;
}

async function udpEcho(host: string): Promise<Listener> {
  const l = { port: 0, accepted: 0, close: async () => {} };
  const s: Socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, rinfo) => {
    l.accepted++;
    s.send(m, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  l.port = s.address().port;
  l.close = () => new Promise<void>((r) => s.close(() => r()));
  return l;
}

async function freePort(): Promise<number> {
  const l = await tcpListener('127.0.0.1');
  await l.close();
  return l.port;
}

function tcpFromHere(host: string, port: number, timeoutMs = 400): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

t.test('real traffic through a bound cgroup', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const client = helperScript('traffic_client.js');
  const pinRoot = testPinRoot('traffic');
  const cg = makeCgroup('traffic');
  const dp = await open({ pinRoot });
  t.teardown(async () => {
    await dp.purge();
    removeCgroup(cg);
  });
  const svc = 201;
  const bound = await dp.bindService(svc, cg);
  t.ok(bound.cgroupId > 0n, `bound to cgroup id ${bound.cgroupId}`);

  const allowed4 = await tcpListener('127.0.0.1');
  const denied4 = await tcpListener('127.0.0.1');
  const allowed6 = await tcpListener('::1');
  const denied6 = await tcpListener('::1');
  const udpAllowed = await udpEcho('127.0.0.1');
  const udpDenied = await udpEcho('127.0.0.1');
  t.teardown(async () => {
    for (const l of [allowed4, denied4, allowed6, denied6, udpAllowed, udpDenied]) await l.close();
  });
  const future = Date.now() + 3_600_000;
  const policy = {
    edges: [
      { dst_cidr: '127.0.0.1/32', proto: 'tcp' as const, port: allowed4.port },
      { dst_cidr: '::1/128', proto: 'tcp' as const, port: allowed6.port },
      { dst_cidr: '127.0.0.0/8', proto: 'udp' as const, port: udpAllowed.port },
    ],
  };
  const targets = [
    { proto: 'tcp', host: '127.0.0.1', port: allowed4.port },
    { proto: 'tcp', host: '127.0.0.1', port: denied4.port },
    { proto: 'tcp', host: '::1', port: allowed6.port },
    { proto: 'tcp', host: '::1', port: denied6.port },
    { proto: 'udp', host: '127.0.0.1', port: udpAllowed.port },
    { proto: 'udp', host: '127.0.0.1', port: udpDenied.port },
  ];
  const probeFromCgroup = async (): Promise<boolean[]> => {
    const r = await runNodeInCgroup(cg, client, [JSON.stringify({ op: 'probe', targets })]);
    if (r.code !== 0) throw new Error(`traffic client failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { results: Array<{ ok: boolean }> }).results.map((x) => x.ok);
  };
  const counters = async () => (await dp.stats()).find((s) => s.serviceId === svc)!.counters!;

  await t.test('bound but no policy: everything connects, nothing counted', async (t) => {
    t.same(await probeFromCgroup(), [true, true, true, true, true, true]);
    t.match(await counters(), { allowed: 0, dropped: 0, wouldDrop: 0 });
  });

  await t.test('enforce: allowed edges connect, others are refused; counters match', async (t) => {
    const flows: FlowEvent[] = [];
    const off = dp.onFlow((e) => {
      if (e.serviceId === svc) flows.push(e);
    });
    await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 1 });
    const before = { a4: allowed4.accepted, d4: denied4.accepted, a6: allowed6.accepted, d6: denied6.accepted };
    t.same(await probeFromCgroup(), [true, false, true, false, true, false], 'tcp4, tcp6 and udp verdicts');
    t.equal(allowed4.accepted - before.a4, 1, 'allowed v4 listener accepted the connection');
    t.equal(denied4.accepted - before.d4, 0, 'denied v4 listener saw nothing');
    t.equal(allowed6.accepted - before.a6, 1, 'allowed v6 listener accepted the connection');
    t.equal(denied6.accepted - before.d6, 0, 'denied v6 listener saw nothing');
    const c = await counters();
    t.equal(c.allowed, 3, 'allowed: 2 TCP SYNs + 1 UDP datagram');
    t.equal(c.dropped, 3, 'dropped: 2 TCP SYNs + 1 UDP datagram');
    t.ok(c.replies >= 3, `replies: the UDP echo and at least the SYN-ACK of each allowed TCP connection (${c.replies})`);
    t.equal(c.wouldDrop, 0);
    for (let i = 0; i < 50 && flows.length < 6; i++) await new Promise((r) => setTimeout(r, 20));
    off();
    const seen = flows.map((f) => `${f.direction} ${f.proto} ${f.dst} ${f.dport} ${f.verdict} ${f.rule ?? '-'} ${f.reason} ${f.generation}`).sort();
    t.same(
      seen,
      [
        `egress tcp 127.0.0.1 ${denied4.port} dropped - policy 1`,
        `egress tcp ::1 ${denied6.port} dropped - policy 1`,
        `egress udp 127.0.0.1 ${udpDenied.port} dropped - policy 1`,
        `egress tcp 127.0.0.1 ${allowed4.port} allowed 0 policy 1`,
        `egress tcp ::1 ${allowed6.port} allowed 1 policy 1`,
        `egress udp 127.0.0.1 ${udpAllowed.port} allowed 2 policy 1`,
      ].sort(),
      'one flow event per new flow: allowed ones name their edge, refused ones no rule',
    );
    t.same(
      await dp.ruleCounters(svc),
      {
        serviceId: svc,
        generation: 1,
        rules: [
          { direction: 'egress', index: 0, count: 1 },
          { direction: 'egress', index: 1, count: 1 },
          { direction: 'egress', index: 2, count: 1 },
        ],
        noRule: 3,
      },
      'per-rule counters: one new flow per allowed edge, the refused ones under no rule',
    );
    // This process is not in the cgroup: its own traffic is untouched.
    t.equal(await tcpFromHere('127.0.0.1', denied4.port), true, 'unbound cgroup (this process) passes untouched');
  });

  await t.test('observe: everything connects, would-drops counted', async (t) => {
    const before = await counters();
    await dp.apply(svc, policy, { mode: 'observe', expiresAt: future, generation: 2 });
    t.same(await dp.ruleCounters(svc), { serviceId: svc, generation: 2, rules: [], noRule: 0 }, 'a new generation starts its rule counts from nothing');
    t.same(await probeFromCgroup(), [true, true, true, true, true, true]);
    const c = await counters();
    t.equal(c.allowed - before.allowed, 3);
    t.equal(c.wouldDrop - before.wouldDrop, 3);
    t.equal(c.dropped - before.dropped, 0);
  });

  await t.test('ingress: allow_cidrs admit connections to local ports', async (t) => {
    const open1 = await freePort();
    const closed1 = await freePort();
    await dp.apply(
      svc,
      { allow_cidrs: [{ cidr: '10.0.0.0/8', proto: 'tcp', port: open1 }, { cidr: '127.0.0.0/8', proto: 'tcp', port: open1 }] },
      { mode: 'enforce', expiresAt: future, generation: 3 },
    );
    const dir = join(tmpdir(), `aegis-traffic-${process.pid}`);
    const ready = `${dir}.ready`;
    const stop = `${dir}.stop`;
    rmSync(ready, { force: true });
    rmSync(stop, { force: true });
    const server = runNodeInCgroup(cg, client, [
      JSON.stringify({ op: 'serve', ports: [open1, closed1], host: '127.0.0.1', readyFile: ready, stopFile: stop, maxMs: 60_000 }),
    ]);
    for (let i = 0; i < 500 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 20));
    const before = await counters();
    const flows: FlowEvent[] = [];
    const off = dp.onFlow((e) => {
      if (e.serviceId === svc && e.direction === 'ingress' && e.proto === 'tcp') flows.push(e);
    });
    t.equal(await tcpFromHere('127.0.0.1', open1), true, 'allowed source and local port connect');
    t.equal(await tcpFromHere('127.0.0.1', closed1), false, 'other local port refused');
    writeFileSync(stop, 'stop');
    const r = await server;
    rmSync(ready, { force: true });
    rmSync(stop, { force: true });
    t.equal((JSON.parse(r.stdout) as { accepted: number }).accepted, 1, 'the service accepted exactly one connection');
    const c = await counters();
    t.equal(c.allowed - before.allowed, 1, 'one inbound SYN allowed');
    t.equal(c.dropped - before.dropped, 1, 'one inbound SYN dropped');
    for (let i = 0; i < 50 && flows.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    off();
    t.same(
      flows.map((f) => `${f.dport} ${f.verdict} ${f.rule ?? '-'}`).sort(),
      [`${open1} allowed 1`, `${closed1} dropped -`].sort(),
      'the inbound flow names allow_cidrs[1]; the refused one no rule',
    );
    t.same((await dp.ruleCounters(svc)).rules, [{ direction: 'ingress', index: 1, count: 1 }], 'counted under allow_cidrs[1]');
  });

  await t.test('a child cgroup of the bound one is enforced too', async (t) => {
    await dp.apply(svc, policy, { mode: 'enforce', expiresAt: future, generation: 4 });
    const child = join(cg, 'worker');
    mkdirSync(child, { recursive: true });
    t.teardown(() => removeCgroup(child));
    const r = await runNodeInCgroup(child, client, [JSON.stringify({ op: 'probe', targets })]);
    t.same((JSON.parse(r.stdout) as { results: Array<{ ok: boolean }> }).results.map((x) => x.ok), [true, false, true, false, true, false]);
  });

  await t.test('rebinding moves enforcement to the new cgroup', async (t) => {
    const other = makeCgroup('traffic-other');
    t.teardown(() => removeCgroup(other));
    const r = await dp.bindService(svc, other);
    t.not(r.cgroupId, bound.cgroupId, 'a different cgroup');
    const st = (await dp.stats()).find((s) => s.serviceId === svc)!;
    t.same(st.cgroupIds, [r.cgroupId], 'only the new cgroup is bound');
    const inOther = await runNodeInCgroup(other, client, [JSON.stringify({ op: 'probe', targets })]);
    t.same((JSON.parse(inOther.stdout) as { results: Array<{ ok: boolean }> }).results.map((x) => x.ok), [true, false, true, false, true, false], 'new cgroup enforced');
    t.same(await probeFromCgroup(), [true, true, true, true, true, true], 'old cgroup released');
    await dp.bindService(svc, cg);
    t.same(await probeFromCgroup(), [true, false, true, false, true, false], 'moved back');
  });

  await t.test('withdraw: traffic passes untouched again', async (t) => {
    t.equal(await dp.withdraw(svc), true);
    t.same(await probeFromCgroup(), [true, true, true, true, true, true]);
  });
});
