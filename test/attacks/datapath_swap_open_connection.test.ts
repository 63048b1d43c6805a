/**
 * Attack: keep talking over a connection opened while its edge was allowed, after the
 * policy that allowed it is gone. A process in an enforced service holds TCP connections
 * exchanging data on two edges; a swap to a generation without one of them must cut that
 * open connection (no exchange started after the swap completes, counted once as `cut`)
 * while the other keeps working. And the converse, what the cut must not cost: 1,000 swaps
 * that keep an edge (rules added and removed around it, other generations) under a
 * connect/send/recv loop and a long-lived streaming connection: no failed connection,
 * no stall, nothing cut.
 */
import t, { type Test } from 'tap';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCapability } from '../harness/capabilities.js';
import { harnessScript, helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, tcpEcho, testPinRoot, waitForFile } from '../harness/datapath.js';
import type { Listener } from '../harness/datapath.js';
import type { HoldOutcome } from '../harness/echo_peer.js';
import { open } from '../../agent/src/datapath/index.js';
import type { Datapath, PolicyRules } from '../../agent/src/datapath/index.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const edge = (port: number) => ({ dst_cidr: '127.0.0.1/32', proto: 'tcp' as const, port });

interface Setup {
  dp: Datapath;
  cg: string;
  svc: number;
  base: string;
  counters(): Promise<{ cut: number; dropped: number; allowed: number }>;
}

async function setup(t: Test, tag: string, svc: number, listeners: Listener[]): Promise<Setup> {
  const pinRoot = testPinRoot(tag);
  const cg = makeCgroup(tag);
  const dp = await open({ pinRoot });
  const base = join(tmpdir(), `aegis-${tag}-${process.pid}`);
  t.teardown(async () => {
    for (const l of listeners) await l.close();
    await dp.purge();
    removeCgroup(cg);
    for (const f of ['ready', 'stop', 'mark', 'loop-ready']) rmSync(`${base}.${f}`, { force: true });
  });
  await dp.bindService(svc, cg);
  const counters = async () => (await dp.stats()).find((s) => s.serviceId === svc)!.counters!;
  return { dp, cg, svc, base, counters };
}

function hold(s: Setup, ports: number[], extra: Record<string, unknown>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runNodeInCgroup(s.cg, harnessScript('echo_peer.js'), [
    JSON.stringify({
      op: 'hold',
      targets: ports.map((port) => ({ host: '127.0.0.1', port })),
      readyFile: `${s.base}.ready`,
      stopFile: `${s.base}.stop`,
      markFile: `${s.base}.mark`,
      maxMs: 240_000,
      ...extra,
    }),
  ]);
}

function holdResults(r: { code: number | null; stdout: string; stderr: string }): HoldOutcome[] {
  if (r.code !== 0) throw new Error(`hold child failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { results: HoldOutcome[] }).results;
}

t.test('a swap that removes an edge cuts the open connection on it', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const a = await tcpEcho('127.0.0.1');
  const b = await tcpEcho('127.0.0.1');
  const s = await setup(t, 'cutopen', 631, [a, b]);
  const future = Date.now() + 3_600_000;
  await s.dp.apply(s.svc, { edges: [edge(a.port), edge(b.port)] }, { mode: 'enforce', expiresAt: future, generation: 1 });
  const child = hold(s, [a.port, b.port], { chunk: 1024, intervalMs: 10, stallMs: 300 });
  await waitForFile(`${s.base}.ready`);
  await sleep(300); // both connections exchanging
  const before = await s.counters();
  await s.dp.apply(s.svc, { edges: [edge(b.port)] }, { mode: 'enforce', expiresAt: future, generation: 2 });
  // apply() returns after the swap is visible to every CPU: exchanges begun after this are judged by generation 2.
  writeFileSync(`${s.base}.mark`, 'swapped');
  await sleep(1500);
  writeFileSync(`${s.base}.stop`, 'stop');
  const [ra, rb] = holdResults(await child);
  t.comment(`edge removed: ${JSON.stringify(ra)}; edge kept: ${JSON.stringify(rb)}`);
  t.ok(ra!.ok > 5, `the connection worked before the swap (${ra!.ok} exchanges)`);
  t.equal(ra!.okAfterMark, 0, 'no exchange started after the swap completed on the removed edge');
  t.ok(ra!.stalls >= 1, `its sends stall (${ra!.stalls} stalled exchanges)`);
  t.ok(rb!.okAfterMark > 5, `the kept edge kept working (${rb!.okAfterMark} exchanges after the swap)`);
  t.equal(rb!.stalls, 0, 'without a stall');
  t.equal(rb!.error, undefined, 'nor an error');
  const c = await s.counters();
  t.equal(c.cut - before.cut, 1, 'the open connection counted once as cut');
  t.ok(c.dropped - before.dropped >= 1, `its packets dropped (${c.dropped - before.dropped})`);
  const probe = await runNodeInCgroup(s.cg, helperScript('traffic_client.js'), [JSON.stringify({ op: 'probe', targets: [{ proto: 'tcp', host: '127.0.0.1', port: a.port }] })]);
  t.equal((JSON.parse(probe.stdout) as { results: Array<{ error?: string }> }).results[0]!.error, 'EPERM', 'a new connection to the removed edge is refused');
});

/** Swap i: the kept edge among 0 to 149 other rules, which come and go from one swap to the next. */
function variant(i: number, keep: number[]): PolicyRules {
  const edges: NonNullable<PolicyRules['edges']> = [];
  const extra = (i * 53) % 150;
  for (let k = 0; k < extra; k++) edges.push({ dst_cidr: `10.${(i + k) % 256}.${k % 256}.0/24`, proto: k % 4 === 0 ? 'udp' : 'tcp', port: 1 + ((i * 7 + k) % 65535) });
  for (const port of keep) edges.splice(i % (edges.length + 1), 0, edge(port));
  return { edges, allow_cidrs: i % 2 === 0 ? [{ cidr: '192.0.2.0/24', proto: 'tcp', port: 22 }] : [] };
}

t.test('1,000 swaps that keep the edge, under load: nothing fails, nothing is cut', { timeout: 300_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const looped = await tcpEcho('127.0.0.1');
  const streamed = await tcpEcho('127.0.0.1');
  const s = await setup(t, 'swapkeep', 632, [looped, streamed]);
  const future = Date.now() + 3_600_000;
  const keep = [looped.port, streamed.port];
  await s.dp.apply(s.svc, variant(0, keep), { mode: 'enforce', expiresAt: future, generation: 1 });
  // A long-lived connection streaming 16 KiB round trips back to back...
  const stream = hold(s, [streamed.port], { chunk: 16 * 1024, intervalMs: 0, stallMs: 1000 });
  // ...and a loop of fresh connections that each send 1 KiB and read it back.
  const loop = runNodeInCgroup(s.cg, harnessScript('echo_peer.js'), [
    JSON.stringify({
      op: 'loop',
      targets: [{ host: '127.0.0.1', port: looped.port, bytes: 1024, timeoutMs: 3000 }],
      readyFile: `${s.base}.loop-ready`,
      stopFile: `${s.base}.stop`,
      maxMs: 240_000,
    }),
  ]);
  await waitForFile(`${s.base}.ready`);
  await waitForFile(`${s.base}.loop-ready`);
  const before = await s.counters();
  const started = Date.now();
  for (let i = 1; i <= 1000; i++) await s.dp.apply(s.svc, variant(i, keep), { mode: 'enforce', expiresAt: future, generation: 1 + i });
  const elapsed = Date.now() - started;
  await sleep(200);
  writeFileSync(`${s.base}.stop`, 'stop');
  const [st] = holdResults(await stream);
  const l = await loop;
  t.equal(l.code, 0, `loop child exited cleanly ${l.stderr}`);
  const counts = (JSON.parse(l.stdout) as { counts: Array<{ ok: number; failed: number; errors: Record<string, number> }> }).counts[0]!;
  t.comment(`1000 swaps in ${elapsed} ms; loop: ${counts.ok} connect/send/recv ok, ${counts.failed} failed; stream: ${st!.ok} round trips, ${(st!.bytes / 1048576).toFixed(1)} MiB each way, ${st!.stalls} stalls`);
  t.ok(counts.ok > 50, `connections ran during the swaps (${counts.ok})`);
  t.equal(counts.failed, 0, `zero failed connections ${JSON.stringify(counts.errors)}`);
  t.ok(st!.ok > 50, `the long-lived connection streamed during the swaps (${st!.ok} round trips)`);
  t.equal(st!.stalls, 0, 'it never stalled');
  t.equal(st!.error, undefined, 'and was never broken');
  const c = await s.counters();
  t.equal(c.cut - before.cut, 0, 'nothing cut');
  t.equal(c.dropped - before.dropped, 0, 'nothing dropped');
  t.equal((await s.dp.stats()).find((x) => x.serviceId === s.svc)!.policy!.generation, 1001, 'the last generation is in force');
});
