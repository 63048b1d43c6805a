/**
 * Restart continuity: a process applies a policy and exits; enforcement stays (pinned
 * links and maps), a fresh process reopens the pins, sees the policy and its counters,
 * and takes over (re-binding moves the links to its programs) with no gap: a connection
 * loop running across the whole hand-over never fails to the allowed edge and never gets
 * through to the denied one.
 */
import t from 'tap';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCapability } from '../../../test/harness/capabilities.js';
import { open } from './index.js';
import { helperScript, makeCgroup, missingDatapath, removeCgroup, runNodeInCgroup, testPinRoot } from '../../../test/harness/datapath.js';

async function listener(): Promise<{ port: number; server: Server }> {
  const server = createServer((c) => c.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as AddressInfo).port, server };
}

t.test('enforcement survives the process that set it up', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const client = helperScript('traffic_client.js');
  const child = helperScript('restart_child.js');
  const pinRoot = testPinRoot('restart');
  const cg = makeCgroup('restart');
  const allowed = await listener();
  const denied = await listener();
  const base = join(tmpdir(), `aegis-restart-${process.pid}`);
  t.teardown(async () => {
    allowed.server.close();
    denied.server.close();
    const dp = await open({ pinRoot });
    await dp.purge();
    removeCgroup(cg);
    rmSync(`${base}.ready`, { force: true });
    rmSync(`${base}.stop`, { force: true });
  });
  const svc = 401;
  const policy = { edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp' as const, port: allowed.port }] };

  // 1. Another process applies the policy and exits without closing.
  const a = await runNodeInCgroup(null, child, [JSON.stringify({ pinRoot, serviceId: svc, cgroup: cg, policy, generation: 7 })]);
  t.equal(a.code, 0, `first process applied and exited ${a.stderr}`);
  t.match(JSON.parse(a.stdout), { rules: 1 });

  // 2. Its enforcement is still in place: start a loop that runs through the hand-over.
  const loop = runNodeInCgroup(cg, client, [
    JSON.stringify({
      op: 'loop',
      targets: [
        { proto: 'tcp', host: '127.0.0.1', port: allowed.port, timeoutMs: 3000 },
        { proto: 'tcp', host: '127.0.0.1', port: denied.port, timeoutMs: 30 },
      ],
      readyFile: `${base}.ready`,
      stopFile: `${base}.stop`,
      maxMs: 60_000,
    }),
  ]);
  for (let i = 0; i < 1000 && !existsSync(`${base}.ready`); i++) await new Promise((r) => setTimeout(r, 10));

  // 3. This process (fresh: it never opened this pin root) reopens the pins.
  const dp = await open({ pinRoot });
  const st = (await dp.stats()).find((s) => s.serviceId === svc);
  t.ok(st, 'the service is known after reopening');
  t.equal(st?.policy?.generation, 7, 'the policy applied by the exited process is in force');
  t.equal(st?.policy?.mode, 'enforce');
  t.equal(st?.cgroupIds.length, 1, 'the cgroup binding survived');
  const rebound = await dp.bindService(svc, cg);
  t.equal(rebound.cgroupId.toString(), (JSON.parse(a.stdout) as { cgroupId: string }).cgroupId, 'same cgroup');
  await dp.apply(svc, policy, { mode: 'enforce', expiresAt: Date.now() + 3_600_000, generation: 8 });
  await new Promise((r) => setTimeout(r, 300));
  await dp.close();
  // 4. Closed again (pins stay): still enforcing.
  await new Promise((r) => setTimeout(r, 300));
  writeFileSync(`${base}.stop`, 'stop');
  const res = await loop;
  const out = JSON.parse(res.stdout) as { rounds: number; counts: Array<{ ok: number; failed: number }> };
  t.ok(out.rounds > 5, `connection loop ran across the hand-over (${out.rounds} rounds)`);
  t.equal(out.counts[0]!.failed, 0, 'allowed edge never failed');
  t.equal(out.counts[1]!.ok, 0, 'denied target never connected: no gap in enforcement');
  const again = await open({ pinRoot });
  const st2 = (await again.stats()).find((s) => s.serviceId === svc)!;
  t.equal(st2.policy?.generation, 8, 'the new process\'s policy persisted after it closed');
  t.ok(st2.counters!.allowed >= out.counts[0]!.ok, 'counters continued across processes');
  await again.close();
});
