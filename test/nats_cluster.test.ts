/**
 * A 3-node JetStream cluster rendered by scripts/nats-config (static users: the same
 * permission model on every node), the snapshot stream replicated (R3), and the real
 * ServerBus and AgentBus on it: a node dies (kill -9), publishes keep being acked, an
 * agent on another node still gets the snapshot, an agent whose node dies fails over and
 * converges to the latest revision, a restarted node serves the latest value.
 */
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { connect, type NatsConnection } from 'nats';
import { SEG_MAPS_STREAM, subjects } from '../protocol/src/index.js';
import { ServerBus } from '../server/src/nats/server_bus.js';
import { AgentBus } from '../agent/src/nats/agent_bus.js';
import { missingCommand, requireCapability } from './harness/capabilities.js';
import { memoryLog, startNatsCluster, waitFor, type TestNatsCluster } from './harness/nats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts/nats-config');
const SERVER_PASS = 'cluster-server-password';
const ROUTE_PASS = 'cluster-route/pass+word=';
const FLEET = 'clusterfleet';
const machines = { a: randomUUID(), b: randomUUID(), c: randomUUID(), late: randomUUID() };
const agentPass = (m: string) => `agent-pass-${m.slice(0, 8)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function render(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8' });
}

/** Publishes, retrying while the cluster elects a new leader; counts the failed attempts. */
async function publishAcked(bus: ServerBus, target: string, service: number, jws: string, failures: { n: number }): Promise<number> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return (await bus.publishSegMap(target, service, jws)).seq;
    } catch (err) {
      failures.n++;
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

t.test('scripts/nats-config renders a cluster', async (t) => {
  const base = ['--fleet', FLEET, '--server-pass', SERVER_PASS, '--machine', `${machines.a}:${agentPass(machines.a)}`];
  const single = render(base);
  t.equal(single.status, 0, single.stderr);
  t.match(single.stdout, 'server_name: "aegis-nats"');
  t.notMatch(single.stdout, 'cluster {', 'no cluster block by default');
  const nodes = ['--cluster', 'aegis', '--node', 'n1@10.0.0.1', '--node', 'n2@10.0.0.2:4333:6333', '--node', 'n3@nats-3.example:4222:6222:8333'];
  const dir = mkdtempSync(join(tmpdir(), 'aegis-nats-cluster-conf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = render([...base, ...nodes, '--cluster-pass', ROUTE_PASS, '--output-dir', dir]);
  t.equal(r.status, 0, r.stderr);
  const one = render([...base, ...nodes, '--cluster-pass', ROUTE_PASS, '--only', 'n2']);
  t.equal(one.status, 0, one.stderr);
  t.match(one.stdout, 'server_name: "n2"');
  t.match(one.stdout, 'listen: "0.0.0.0:4333"');
  t.match(one.stdout, 'listen: "0.0.0.0:6333"');
  t.match(one.stdout, 'store_dir: "/var/lib/aegis-nats/n2"');
  t.match(one.stdout, `nats-route://aegis-route:${encodeURIComponent(ROUTE_PASS)}@10.0.0.1:6222`);
  t.match(one.stdout, `@nats-3.example:6222`);
  t.notMatch(one.stdout, '@10.0.0.2:', 'no route to itself');
  t.equal(one.stdout.slice(one.stdout.indexOf('\nauthorization {')), single.stdout.slice(single.stdout.indexOf('\nauthorization {')), 'the same permission model on every node');
  const cases: Array<[string[], RegExp]> = [
    [[...base, '--cluster', 'aegis', '--node', 'n1@h1', '--node', 'n2@h2', '--cluster-pass', ROUTE_PASS, '--only', 'n1'], /at least three nodes/],
    [[...base, ...nodes, '--only', 'n1'], /--cluster-pass or AEGIS_NATS_CLUSTER_PASS is required/],
    [[...base, ...nodes, '--cluster-pass', ROUTE_PASS], /--output-dir DIR, or --only NAME/],
    [[...base, '--cluster', 'aegis', '--node', 'n1@h1', '--node', 'n1@h2', '--node', 'n3@h3', '--cluster-pass', ROUTE_PASS, '--only', 'n1'], /listed twice/],
    [[...base, '--cluster', 'aegis', '--node', 'n1@h1', '--node', 'n2@h1', '--node', 'n3@h3', '--cluster-pass', ROUTE_PASS, '--only', 'n1'], /share the cluster address h1:6222/],
  ];
  for (const [args, re] of cases) {
    const b = render(args);
    t.equal(b.status, 2, `exit 2 for ${args.slice(base.length).join(' ')}`);
    t.match(b.stderr, re);
  }
});

t.test('3-node JetStream cluster: R3 snapshot stream, node loss, agent failover', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const store = mkdtempSync(join(tmpdir(), 'aegis-nats-cluster-store-'));
  t.teardown(() => rmSync(store, { recursive: true, force: true }));
  const machineArgs = Object.values(machines).flatMap((m) => ['--machine', `${m}:${agentPass(m)}`]);
  let cluster: TestNatsCluster | undefined;
  cluster = await startNatsCluster({
    render: ({ index, port, monitorPort, clusterPorts }) => {
      const nodeArgs = clusterPorts.flatMap((c, i) => ['--node', `node${i + 1}@127.0.0.1:${i === index ? port : 1}:${c}:${i === index ? monitorPort : 1}`]);
      const r = render(['--fleet', FLEET, '--server-pass', SERVER_PASS, ...machineArgs, '--listen', '127.0.0.1:4222', '--http', '127.0.0.1:8222', '--store-dir', store, '--cluster', 'aegis-test', ...nodeArgs, '--cluster-pass', ROUTE_PASS, '--only', `node${index + 1}`]);
      if (r.status !== 0) throw new Error(r.stderr);
      return r.stdout;
    },
  });
  const c = cluster;
  t.teardown(() => c.stop());
  t.same(c.nodes.map((n) => n.name), ['node1', 'node2', 'node3']);
  const byPort = (server: string) => {
    const n = c.nodes.find((x) => server.endsWith(`:${x.port}`));
    if (!n) throw new Error(`connected to ${server}, not a node`);
    return n;
  };
  const admin: NatsConnection = await connect({ servers: c.urls, user: 'aegis-server', pass: SERVER_PASS, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  t.teardown(() => admin.close());
  const jsm = await admin.jetstreamManager();
  const streamInfo = () => jsm.streams.info(SEG_MAPS_STREAM);

  // First with the default (one replica), then the setting changes to 3: the stream is updated.
  const r1 = await ServerBus.connect({ url: c.urls, user: 'aegis-server', pass: SERVER_PASS, reconnectWaitMs: 100 });
  await r1.ensureStream();
  await r1.close();
  t.equal((await streamInfo()).config.num_replicas, 1, 'default: one replica');
  const log = memoryLog();
  const server = await ServerBus.connect({ url: c.urls, user: 'aegis-server', pass: SERVER_PASS, reconnectWaitMs: 100, streamReplicas: 3, publishTimeoutMs: 2000, log });
  t.teardown(() => server.close());
  await server.ensureStream();
  t.ok(log.lines.some((l) => /updated JetStream stream/.test(l.msg) && JSON.stringify(l.meta).includes('num_replicas')), 'replicas changed on the existing stream');
  let info = await streamInfo();
  t.equal(info.config.num_replicas, 3, 'R3 once AEGIS_NATS_STREAM_REPLICAS=3');
  const deadline = Date.now() + 15_000;
  while (!((info.cluster?.replicas ?? []).length === 2 && info.cluster?.replicas?.every((r) => r.current))) {
    if (Date.now() > deadline) throw new Error(`replicas not current: ${JSON.stringify(info.cluster)}`);
    await sleep(100);
    info = await streamInfo();
  }
  t.ok(info.cluster?.leader, `leader ${info.cluster?.leader}, replicas ${info.cluster?.replicas?.map((r) => r.name).join(',')}`);

  const failures = { n: 0 };
  const subjA = subjects.segMap(machines.a, 7);
  await publishAcked(server, machines.a, 7, 'a/7/r1', failures);

  t.test('the stream leader dies: publishes keep being acked, agents on other nodes get them', async (t) => {
    const leader = c.node((await streamInfo()).cluster?.leader as string);
    const other = c.nodes.find((n) => n !== leader) as (typeof c.nodes)[number];
    // An agent pinned to a surviving node, watching live.
    const agent = await AgentBus.connect({ url: other.url, machine: machines.b, user: `agent-${machines.b}`, pass: agentPass(machines.b), reconnectWaitMs: 100 });
    t.teardown(() => agent.close());
    const got: string[] = [];
    await agent.watchSegMaps([7], (_s, d) => void got.push(d));
    await leader.kill();
    const before = failures.n;
    const seqs: number[] = [];
    for (let rev = 1; rev <= 10; rev++) seqs.push(await publishAcked(server, machines.b, 7, `b/7/r${rev}`, failures));
    t.equal(seqs.length, 10, `10 of 10 publishes acked with the leader down (${failures.n - before} attempts failed during the election and were retried)`);
    t.same([...seqs].sort((x, y) => x - y), seqs, 'sequence numbers keep growing');
    await waitFor(() => got.at(-1) === 'b/7/r10', 'live delivery on a surviving node');
    const newLeader = (await streamInfo()).cluster?.leader;
    t.not(newLeader, leader.name, `a new leader (${newLeader})`);
    // A late agent on another surviving node reads the last value (Direct Get) with the node down.
    const third = c.nodes.find((n) => n !== leader && n !== other) as (typeof c.nodes)[number];
    const late = await AgentBus.connect({ url: third.url, machine: machines.b, user: `agent-${machines.b}`, pass: agentPass(machines.b) });
    t.teardown(() => late.close());
    const lateGot: string[] = [];
    await late.watchSegMaps([7], (_s, d) => void lateGot.push(d));
    t.same(lateGot, ['b/7/r10'], 'the latest value from a surviving replica');
    // The dead node comes back and catches up; an agent pinned to it reads the latest value.
    // A node just back may still answer an older value for a moment (Direct Get is served
    // from the local replica, a known gap: the agent keeps the highest revision it verified
    // and reads again after a reconnect), so the read is retried until the node caught up.
    await leader.restart();
    let backGot: string[] = [];
    const readsBeforeLatest: string[] = [];
    await waitFor(async () => {
      const back = await AgentBus.connect({ url: leader.url, machine: machines.b, user: `agent-${machines.b}`, pass: agentPass(machines.b) }).catch(() => null);
      if (!back) return false;
      try {
        backGot = [];
        await back.watchSegMaps([7], (_s, d) => void backGot.push(d));
      } finally {
        await back.close();
      }
      if (backGot.at(-1) === 'b/7/r10') return true;
      readsBeforeLatest.push(...backGot);
      await new Promise((r) => setTimeout(r, 200));
      return false;
    }, 'the restarted node serves the latest value', 20_000);
    t.same(backGot, ['b/7/r10'], `the restarted node serves what was published while it was down (${readsBeforeLatest.length} reads before it caught up)`);
    t.ok(readsBeforeLatest.every((d) => /^b\/7\/r\d+$/.test(d)), 'what it answered before were earlier revisions of the same subject, never another machine\'s');
  });

  t.test('kill -9 the node an agent is connected to: it fails over and converges', async (t) => {
    const alog = memoryLog();
    const agent = await AgentBus.connect({ url: c.urls, machine: machines.c, user: `agent-${machines.c}`, pass: agentPass(machines.c), reconnectWaitMs: 100, rereadAfterReconnectMs: 500, log: alog });
    t.teardown(() => agent.close());
    const got: string[] = [];
    await publishAcked(server, machines.c, 9, 'c/9/r1', failures);
    await agent.watchSegMaps([9], (_s, d) => void got.push(d));
    t.same(got, ['c/9/r1']);
    const victim = byPort(agent.server());
    await victim.kill();
    // Published while the agent has no connection: only the read after the reconnect brings it.
    for (let rev = 2; rev <= 4; rev++) await publishAcked(server, machines.c, 9, `c/9/r${rev}`, failures);
    await waitFor(() => agent.isConnected(), 'agent reconnects to another node', 15_000);
    t.not(byPort(agent.server()), victim, `failed over from ${victim.name} to ${byPort(agent.server()).name}`);
    await waitFor(() => got.at(-1) === 'c/9/r4', 'agent converges to the latest revision', 15_000);
    await publishAcked(server, machines.c, 9, 'c/9/r5', failures);
    await waitFor(() => got.at(-1) === 'c/9/r5', 'live updates after the failover');
    t.ok(alog.lines.some((l) => /reconnected to nats-server/.test(l.msg)), 'the reconnect is logged');
    await victim.restart();
  });

  t.test('kill -9 the node the server bus is connected to: it reconnects elsewhere, publishes are acked again', async (t) => {
    const victim = byPort(server.server());
    const agent = await AgentBus.connect({ url: c.nodes.filter((n) => n !== victim).map((n) => n.url), machine: machines.a, user: `agent-${machines.a}`, pass: agentPass(machines.a), reconnectWaitMs: 100 });
    t.teardown(() => agent.close());
    const got: string[] = [];
    await agent.watchSegMaps([7], (_s, d) => void got.push(d));
    await victim.kill();
    const before = failures.n;
    await publishAcked(server, machines.a, 7, 'a/7/r2', failures);
    t.not(byPort(server.server()), victim, `server bus moved from ${victim.name} to ${byPort(server.server()).name} (${failures.n - before} attempts failed meanwhile)`);
    await waitFor(() => got.at(-1) === 'a/7/r2', 'the agent gets the snapshot published after the failover');
    await victim.restart();
  });

  t.test('per-node permissions: another machine\'s snapshot cannot be read through any node', async (t) => {
    for (const n of c.nodes) {
      const nc = await connect({ servers: n.url, user: `agent-${machines.late}`, pass: agentPass(machines.late), inboxPrefix: subjects.inboxPrefix(machines.late) });
      const denied = await nc.request(subjects.segMapDirectGet(subjA), undefined, { timeout: 1500 }).then(
        () => false,
        () => true,
      );
      t.ok(denied, `node ${n.name} refuses machine ${machines.late} reading ${subjA}`);
      await nc.close();
    }
  });
});
