/**
 * bench/rollout: how fast policy reaches the kernel.
 *
 *   1. baseline: a bare NATS publish → receive round trip (one connection each side)
 *   2. POST /seg/maps → the agent's ack (sent after the datapath swapped the policy in),
 *      through aegis-server, JetStream, a real aegis-agent and the kernel
 *   3. fan-out: one signed snapshot on aegis.seg.maps._all to 1,000 simulated agents
 *      (1,000 connections in this process), time to the last receiver and to each one
 *   4. bare fan-out (the like-for-like baseline of 3): the same bytes each round of 3
 *      delivered, published by a bare connection on a plain subject the same 1,000
 *      connections subscribe to; time to the last receiver. Rounds of 3 and 4 alternate.
 *
 * All measured in the same run, p50/p99, with ratios to the baseline.
 *   npm run bench:rollout [-- --rounds 50 --agents 1000]
 */
import { randomBytes } from 'node:crypto';
import { connect, StringCodec, type NatsConnection } from 'nats';
import { ALL_HOSTS, subjects } from '../../protocol/src/index.js';
import { startNats } from '../../test/harness/nats.js';
import { startTestServer } from '../../test/harness/server.js';
import { agentDir, cleanupDir, startAgent } from '../../test/harness/agent.js';
import { makeCgroup, missingDatapath, removeCgroup, testPinRoot } from '../../test/harness/datapath.js';
import { purgePins } from '../../agent/src/datapath/index.js';

const argv = process.argv.slice(2);
const opt = (n: string, d: number) => (argv.includes(`--${n}`) ? Number(argv[argv.indexOf(`--${n}`) + 1]) : d);
const ROUNDS = opt('rounds', 50);
const AGENTS = opt('agents', 1000);
const sc = StringCodec();

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const fmt = (name: string, xs: number[]) => `${name.padEnd(44)} p50 ${pct(xs, 50).toFixed(2).padStart(8)} ms   p99 ${pct(xs, 99).toFixed(2).padStart(8)} ms   (n=${xs.length})`;

async function baseline(url: string): Promise<number[]> {
  const pub = await connect({ servers: url });
  const sub = await connect({ servers: url });
  const out: number[] = [];
  let resolve: (() => void) | null = null;
  sub.subscribe('bench.rtt', { callback: () => resolve?.() });
  await sub.flush();
  for (let i = 0; i < ROUNDS * 4; i++) {
    const t0 = performance.now();
    await new Promise<void>((r) => {
      resolve = r;
      pub.publish('bench.rtt', sc.encode('x'.repeat(512)));
    });
    out.push(performance.now() - t0);
  }
  await pub.close();
  await sub.close();
  return out;
}

async function main(): Promise<void> {
  const why = await missingDatapath();
  if (why) throw new Error(`bench/rollout needs the BPF datapath: ${why}`);
  const nats = await startNats();
  const fleetKey = randomBytes(32).toString('base64');
  const server = await startTestServer({ natsUrl: nats.url, fleetKey, republishSeconds: 3600 });
  const cgroup = makeCgroup('bench-rollout');
  const pinRoot = testPinRoot('bench-rollout');
  const dir = agentDir();
  const host = `bench-${process.pid}`;
  const conns: NatsConnection[] = [];
  try {
    process.stdout.write(`aegis bench/rollout: ${ROUNDS} rounds, ${AGENTS} simulated agents, nats-server ${nats.url}\n`);
    const rtt = await baseline(nats.url);

    const agent = await startAgent({
      serverUrl: server.url,
      dir,
      pinRoot,
      services: { '500': cgroup },
      hardwareFacts: { machine_id: host },
      extraConfig: { hostname: host, nats_url: nats.url, log_level: 'warn', status_interval_seconds: 3600 },
    });
    await agent.waitReady();
    const cust = await server.req('POST', '/api/v1/customers', { name: 'bench' });
    const lic = await server.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
    await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key });
    // Agents report on subjects named by their machine id (the server's, never a hostname they choose).
    const machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;
    const watcher = await connect({ servers: nats.url });
    const acks = new Map<number, () => void>();
    watcher.subscribe(subjects.agentAck(machineId), {
      callback: (_e, m) => {
        const a = JSON.parse(sc.decode(m.data)) as { revision: number };
        acks.get(a.revision)?.();
      },
    });
    await watcher.flush();
    // Wait for the agent's NATS subscriptions before timing.
    for (let i = 0; i < 100 && !(await agent.api('GET', '/v1/status')).body.nats.connected; i++) await new Promise((r) => setTimeout(r, 100));
    const rollout: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const edges = Array.from({ length: 100 }, (_, k) => ({ dst_cidr: `10.${i % 200}.${k}.0/24`, proto: 'tcp', port: 443 }));
      const t0 = performance.now();
      let rev = -1;
      const acked = new Promise<void>((r) => {
        // The ack can race the POST's answer: register for the next revision first.
        const expected = i + 1;
        acks.set(expected, r);
        rev = expected;
      });
      const res = await server.req('POST', `/seg/maps?target_host=${host}&stage=enforce`, { version: 1, service_id: 500, edges, ttl_seconds: 3600 });
      if (res.body.revision !== rev) throw new Error(`unexpected revision ${res.body.revision} (wanted ${rev})`);
      await acked;
      rollout.push(performance.now() - t0);
    }
    await watcher.close();
    await agent.stop();

    // Fan-out: AGENTS connections subscribed to _all, one signed message each round.
    for (let i = 0; i < AGENTS; i++) conns.push(await connect({ servers: nats.url, noEcho: true }));
    const perReceiver: number[] = [];
    const toLast: number[] = [];
    const bareToLast: number[] = [];
    const fanRounds = Math.max(5, Math.floor(ROUNDS / 5));
    const BARE = `bench.fanout.bare.${process.pid}`;
    let t0 = 0;
    let got = 0;
    let bareGot = 0;
    let delivered: Uint8Array | null = null;
    let done: (() => void) | null = null;
    let bareDone: (() => void) | null = null;
    for (const c of conns) {
      c.subscribe(subjects.segMapsOf(ALL_HOSTS), {
        callback: (_e, m) => {
          perReceiver.push(performance.now() - t0);
          delivered ??= m.data;
          if (++got === AGENTS) done?.();
        },
      });
      c.subscribe(BARE, {
        callback: () => {
          if (++bareGot === AGENTS) bareDone?.();
        },
      });
    }
    await Promise.all(conns.map((c) => c.flush()));
    const barePub = await connect({ servers: nats.url });
    conns.push(barePub);
    for (let r = 0; r < fanRounds; r++) {
      got = 0;
      delivered = null;
      const all = new Promise<void>((res) => (done = res));
      t0 = performance.now();
      await server.req('POST', '/seg/maps', { version: 1, service_id: 600 + r, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 80 }], ttl_seconds: 3600 });
      await all;
      toLast.push(performance.now() - t0);
      // The same message, bare: the bytes this round delivered, to the same 1,000 subscribers.
      bareGot = 0;
      const bareAll = new Promise<void>((res) => (bareDone = res));
      const b0 = performance.now();
      barePub.publish(BARE, delivered!);
      await bareAll;
      bareToLast.push(performance.now() - b0);
    }

    process.stdout.write(fmt('NATS publish → receive (baseline)', rtt) + '\n');
    process.stdout.write(fmt('POST /seg/maps → enforced in kernel (ack)', rollout) + '\n');
    process.stdout.write(fmt(`POST → each of ${AGENTS} agents received`, perReceiver) + '\n');
    process.stdout.write(fmt(`POST → last of ${AGENTS} agents received`, toLast) + '\n');
    process.stdout.write(fmt(`bare publish → last of ${AGENTS} (same bytes)`, bareToLast) + '\n');
    process.stdout.write(`ratio rollout p50 / NATS round trip p50:     ${(pct(rollout, 50) / pct(rtt, 50)).toFixed(1)}\n`);
    process.stdout.write(`ratio fan-out-to-last p50 / NATS round trip: ${(pct(toLast, 50) / pct(rtt, 50)).toFixed(1)}\n`);
    process.stdout.write(`ratio fan-out-to-last p50 / bare fan-out p50: ${(pct(toLast, 50) / pct(bareToLast, 50)).toFixed(2)} (aim ≤ 1.5; message ${delivered === null ? '?' : (delivered as Uint8Array).length} bytes)\n`);
  } finally {
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    await server.close();
    await nats.stop();
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
    cleanupDir(dir);
  }
}

await main();
process.exit(0);
