/**
 * bench/cluster, rollout fan-out through a 3-node JetStream cluster:
 *
 *   1. bare: one message published on a plain subject, received by N subscribers spread
 *      over the three nodes (plain NATS connections): time to the last receiver
 *   2. rollout: the same message as a snapshot through ServerBus (JetStream, the R3
 *      AEGIS_SEG_MAPS stream, acked by a quorum) on aegis.seg.maps._all, received by N
 *      AgentBus connections (the agent's bus code) spread over the same nodes
 *
 * Both in the same run against the same cluster, p50/p99, and the ratio rollout/bare.
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { subjects } from '../../protocol/src/index.js';
import { ServerBus } from '../../server/src/nats/server_bus.js';
import { AgentBus } from '../../agent/src/nats/agent_bus.js';
import { startNatsCluster } from '../../test/harness/nats.js';
import { line, opt, pct, ratio } from './common.js';

const SERVICE = 42;

const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(2).padStart(8)} ms   p99 ${pct(xs, 99).toFixed(2).padStart(8)} ms   (n=${xs.length})`;

/** Waits until `count()` reaches `n`; resolves with the elapsed ms since `t0`. */
function until(count: () => number, n: number, t0: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 30_000;
    const tick = () => {
      if (count() >= n) return resolve(performance.now() - t0);
      if (Date.now() > deadline) return reject(new Error(`${what}: ${count()} of ${n} after 30 s`));
      setImmediate(tick);
    };
    tick();
  });
}

export async function fanoutPhase(): Promise<void> {
  const ROUNDS = opt('rounds', 20);
  const AGENTS = opt('agents', 1000);
  const cluster = await startNatsCluster();
  const payload = `bench.${randomBytes(600).toString('base64url')}.sig`; // about a signed snapshot's size
  try {
    // 1. bare fan-out
    const subs: NatsConnection[] = [];
    let got = 0;
    for (let i = 0; i < AGENTS; i++) {
      const nc = await connect({ servers: cluster.urls[i % cluster.urls.length] });
      nc.subscribe('bench.fanout', { callback: () => void got++ });
      subs.push(nc);
    }
    await Promise.all(subs.map((s) => s.flush()));
    const pub = await connect({ servers: cluster.urls[0] });
    const bare: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      got = 0;
      const t0 = performance.now();
      pub.publish('bench.fanout', new TextEncoder().encode(payload));
      bare.push(await until(() => got, AGENTS, t0, 'bare fan-out'));
    }
    await pub.close();
    await Promise.all(subs.map((s) => s.close()));

    // 2. rollout through the R3 stream to AgentBus subscribers
    const server = await ServerBus.connect({ url: cluster.urls, streamReplicas: 3 });
    await server.ensureStream();
    const agents: AgentBus[] = [];
    let received = 0;
    for (let i = 0; i < AGENTS; i++) {
      const a = await AgentBus.connect({ url: cluster.urls[i % cluster.urls.length] as string, machine: null });
      agents.push(a);
    }
    await Promise.all(agents.map((a) => a.watchSegMaps([SERVICE], () => void received++)));
    const rollout: number[] = [];
    const acked: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      received = 0;
      const t0 = performance.now();
      await server.publishSegMap('_all', SERVICE, `${payload}.${r}`);
      acked.push(performance.now() - t0);
      rollout.push(await until(() => received, AGENTS, t0, 'rollout fan-out'));
    }
    await Promise.all(agents.map((a) => a.close()));
    await server.close();

    process.stdout.write(
      [
        `bench/cluster fan-out: 3-node JetStream cluster, ${AGENTS} subscribers over 3 nodes, ${ROUNDS} rounds, ${payload.length}-byte message`,
        line('baseline', 'bare NATS fan-out (publish → last receiver)', fmt(bare)),
        line('measured', `rollout ${subjects.segMapAll(SERVICE)} (publish → R3 ack)`, fmt(acked)),
        line('measured', 'rollout fan-out (publish → last AgentBus)', fmt(rollout)),
        line('ratio', 'rollout / bare', `p50 ${ratio(pct(rollout, 50), pct(bare, 50))}   p99 ${ratio(pct(rollout, 99), pct(bare, 99))}`),
      ].join('\n') + '\n',
    );
  } finally {
    await cluster.stop();
  }
}
