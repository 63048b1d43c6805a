/**
 * Flow events and per-rule counters with real traffic: a service in a test cgroup serves a
 * TCP echo; a connection from outside is allowed by allow_cidrs[2] (its event and counter
 * name that entry), a swap to a generation without that entry cuts the live connection (a
 * `cut` event, no rule), and the per-rule counts of the old generation are gone.
 */
import t from 'tap';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, testPinRoot } from '../../../test/harness/datapath.js';
import { open, type FlowEvent } from './index.js';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Writes `text` and resolves with the echo, or null when nothing comes back in time. */
function roundTrip(s: Socket, text: string, ms = 500): Promise<string | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.off('data', onData);
      resolve(null);
    }, ms);
    const onData = (d: Buffer) => {
      clearTimeout(timer);
      s.off('data', onData);
      resolve(d.toString());
    };
    s.on('data', onData);
    s.write(text);
  });
}

async function waitFor<T>(pick: () => T | undefined, ms = 2000): Promise<T | undefined> {
  for (let i = 0; i < ms / 20; i++) {
    const v = pick();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  return pick();
}

t.test('allowed, cut and per-rule counters over a live TCP connection', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const dp = await open({ pinRoot: testPinRoot('flowev') });
  const cg = makeCgroup('flowev');
  t.teardown(async () => {
    await dp.purge();
    removeCgroup(cg);
  });
  const svc = 311;
  await dp.bindService(svc, cg);
  const port = await freePort();
  const future = Date.now() + 3_600_000;
  const events: FlowEvent[] = [];
  const off = dp.onFlow((e) => {
    if (e.serviceId === svc) events.push(e);
  });
  t.teardown(off);
  await dp.apply(
    svc,
    {
      edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }],
      allow_cidrs: [
        { cidr: '10.0.0.0/8', proto: 'tcp', port },
        { cidr: '192.168.0.0/16', proto: 'tcp', port },
        { cidr: '127.0.0.0/8', proto: 'tcp', port },
      ],
    },
    { mode: 'enforce', expiresAt: future, generation: 41 },
  );

  const base = join(tmpdir(), `aegis-flowev-${process.pid}`);
  const ready = `${base}.ready`;
  const stop = `${base}.stop`;
  rmSync(ready, { force: true });
  rmSync(stop, { force: true });
  const server = runNodeInCgroup(cg, helperScript('traffic_client.js'), [
    JSON.stringify({ op: 'serve', ports: [port], host: '127.0.0.1', readyFile: ready, stopFile: stop, maxMs: 60_000, echo: true }),
  ]);
  t.teardown(async () => {
    writeFileSync(stop, 'stop');
    await server;
    rmSync(ready, { force: true });
    rmSync(stop, { force: true });
  });
  for (let i = 0; i < 500 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 20));

  const s = connect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  await new Promise<void>((r) => s.once('connect', () => r()));
  t.equal(await roundTrip(s, 'one'), 'one', 'the live connection works under generation 41');

  const allowed = await waitFor(() => events.find((e) => e.verdict === 'allowed' && e.direction === 'ingress' && e.dport === port));
  t.match(allowed, { direction: 'ingress', verdict: 'allowed', rule: 2, reason: 'policy', generation: 41, proto: 'tcp', src: '127.0.0.1' }, 'the inbound SYN names allow_cidrs[2]');
  const c41 = await dp.ruleCounters(svc);
  t.same(c41, { serviceId: svc, generation: 41, rules: [{ direction: 'ingress', index: 2, count: 1 }], noRule: 0 }, 'counted under allow_cidrs[2]');

  // Generation 42 keeps only the first two entries: index 2 no longer exists.
  await dp.apply(
    svc,
    { allow_cidrs: [{ cidr: '10.0.0.0/8', proto: 'tcp', port }, { cidr: '192.168.0.0/16', proto: 'tcp', port }] },
    { mode: 'enforce', expiresAt: future, generation: 42 },
  );
  t.same(await dp.ruleCounters(svc), { serviceId: svc, generation: 42, rules: [], noRule: 0 }, "generation 41's counts are gone: index 2 means nothing now");
  t.equal(await roundTrip(s, 'two'), null, 'the live connection is cut');
  const cut = await waitFor(() => events.find((e) => e.reason === 'cut'));
  t.match(cut, { direction: 'ingress', verdict: 'dropped', rule: null, reason: 'cut', generation: 42, proto: 'tcp', dport: port }, 'a cut event under the new generation, no rule');
  const st = (await dp.stats()).find((x) => x.serviceId === svc)!;
  t.ok(st.counters!.cut >= 1, `counted in cut (${st.counters!.cut})`);
  t.equal(st.counters!.ruleCountsLost, 0, 'no count was lost');

  t.equal(await dp.withdraw(svc), true);
  t.same(await dp.ruleCounters(svc), { serviceId: svc, generation: null, rules: [], noRule: 0 }, 'withdrawn: no counts');
});
