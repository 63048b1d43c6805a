/**
 * Attack: replay a recorded, genuinely signed snapshot message to demote or roll back a
 * host's policy. A middlebox on plain http (a node:http proxy in front of the real
 * aegis-server, which the agent reaches as server_url) records the HTTP fallback's answers
 * and later answers that route with what it recorded. The agent must keep what it last
 * accepted from the server across restarts (the canary message of a revision since promoted
 * does not bring observe back), refuse a message past its exp, and not let local snapshots
 * (control socket) move the floor server messages are ordered against. No datapath needed:
 * the agent records what it would apply. Run once per storage backend
 * (snapshot_replay_sqlite.test.ts, snapshot_replay_postgres.test.ts).
 */
import type { Test } from 'tap';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../harness/server.js';
import { startAgent, agentDir, cleanupDir, type AgentOptions, type TestAgent } from '../harness/agent.js';
import { Middlebox, eventually } from '../harness/middlebox.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const SERVICE = 101;
const FALLBACK = /^\/api\/v1\/machines\/[^/]+\/snapshots$/;

interface Claims {
  revision: number;
  stage: string;
  iat: number;
  exp?: number;
}
const claimsOf = (jws: string): Claims => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as Claims;

/** A middlebox that keeps every snapshot message the fallback answers with, and can answer that route itself. */
class Recorder {
  readonly recorded: string[] = [];
  /** Served as the host's snapshots instead of the server's answer (null: forward). */
  replay: string[] | null = null;
  box!: Middlebox;

  static async start(upstream: string): Promise<Recorder> {
    const r = new Recorder();
    r.box = await Middlebox.start(upstream, {
      answer: ({ method, path }) =>
        method === 'GET' && FALLBACK.test(path) && r.replay
          ? { status: 200, contentType: 'application/json', body: JSON.stringify({ machine_id: decodeURIComponent(path.split('/')[4]!), messages: r.replay }) }
          : null,
      rewrite: ({ method, path, status, body }) => {
        if (method !== 'GET' || !FALLBACK.test(path) || status !== 200) return undefined;
        try {
          const v = JSON.parse(body.toString('utf8')) as { messages?: unknown[] };
          for (const m of v.messages ?? []) if (typeof m === 'string') r.recorded.push(m);
        } catch {
          // not JSON: nothing to record
        }
        return undefined;
      },
    });
    return r;
  }

  get url(): string {
    return this.box.url;
  }

  close(): Promise<void> {
    return this.box.close();
  }
}

/** Waits for a log line; on timeout the agent's last lines say what it did instead. */
async function eventuallyLogged(agent: TestAgent, what: string, line: (l: string) => boolean): Promise<void> {
  try {
    await eventually(what, () => agent.logs.some(line));
  } catch (e) {
    throw new Error(`${(e as Error).message}; agent logs:\n${agent.logs.slice(-40).join('\n')}`);
  }
}

async function view(agent: TestAgent): Promise<{ revision: number | null; stage: string | null }> {
  const services = (await agent.api('GET', '/v1/snapshots')).body.services as Array<{ service_id: number; revision: number | null; stage: string | null }>;
  const v = services.find((x) => x.service_id === SERVICE);
  return { revision: v?.revision ?? null, stage: v?.stage ?? null };
}

export function snapshotReplaySuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('recorded signed snapshot messages cannot demote or roll back a host, before or after a restart', async (t) => {
    const url = await newDatabase();
    const s: TestServer = await startTestServer(url === undefined ? {} : { databaseUrl: url });
    t.teardown(() => s.close());
    const box = await Recorder.start(s.url);
    t.teardown(() => box.close());
    const host = `replay-host-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const opts: AgentOptions = {
      serverUrl: box.url,
      dir,
      services: { [String(SERVICE)]: join(dir, 'no-cgroup') },
      hardwareFacts: { machine_id: host, macs: ['52:54:00:aa:dd:01'] },
      extraConfig: { hostname: host, fallback_interval_seconds: 1 },
    };
    let agent = await startAgent(opts);
    t.teardown(() => agent.stop());
    await agent.waitReady();
    const c = await s.req('POST', '/api/v1/customers', { name: 'Replay' });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
    t.equal((await agent.api('POST', '/v1/activate', { license_key: l.body.license_key })).status, 200, 'activated');

    const snapshot = (port: number) => ({ version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port }], ttl_seconds: 600 });
    const r1 = await s.req('POST', `/seg/maps?target_host=${host}`, snapshot(443));
    t.equal(r1.body.stage, 'canary');
    await eventually('canary applied', async () => (await view(agent)).stage === 'canary');
    const canary = box.recorded.find((m) => claimsOf(m).revision === r1.body.revision && claimsOf(m).stage === 'canary');
    t.ok(canary, 'the middlebox recorded the signed canary message');
    const cc = claimsOf(canary!);
    t.equal(cc.exp, cc.iat + 600, 'exp is iat + the snapshot TTL');

    t.equal((await s.req('POST', '/seg/maps/promote', { service_id: SERVICE })).status, 200, 'promoted');
    await eventually('enforce applied', async () => (await view(agent)).stage === 'enforce');
    t.equal(statSync(join(agent.stateDir, 'seg_floor.json')).mode & 0o777, 0o600, 'the floor is saved 0600');

    // Restart, then the middlebox answers the fallback with the recorded canary message.
    box.replay = [canary!];
    await agent.stop();
    agent = await startAgent(opts);
    await agent.waitReady();
    await eventuallyLogged(agent, 'replayed canary refused', (x) => x.includes('rejected a snapshot message') && x.includes('replay or rollback refused'));
    t.same(await view(agent), { revision: r1.body.revision, stage: 'enforce' }, 'after a restart the replayed canary message does not demote enforce');

    // A message signed while the server clock stood two hours back is past its exp.
    const r2 = await s.req('POST', `/seg/maps?target_host=${host}`, snapshot(8443));
    s.clock.offsetMs = -2 * 3600_000;
    const stale = await s.app.orchestrator.messagesFor(r2.body.target_machines[0]);
    s.clock.offsetMs = 0;
    t.equal(claimsOf(stale[0]!).revision, r2.body.revision, 'a newer revision, but signed long ago');
    box.replay = stale;
    await eventuallyLogged(agent, 'expired message refused', (x) => x.includes('rejected a snapshot message') && x.includes('expired at'));
    t.same(await view(agent), { revision: r1.body.revision, stage: 'enforce' }, 'the expired message is not obeyed');

    // The floor outlives the snapshot: withdrawn locally, restarted, the replay still fails.
    t.equal((await agent.api('DELETE', `/v1/snapshots/${SERVICE}`)).status, 200, 'withdrawn through the control socket');
    box.replay = [canary!];
    await agent.stop();
    agent = await startAgent(opts);
    await agent.waitReady();
    await eventuallyLogged(agent, 'replay refused without a running snapshot', (x) => x.includes('replay or rollback refused'));
    t.same(await view(agent), { revision: null, stage: null }, 'nothing older comes back after withdrawal and restart');

    // Local snapshots live apart: three PUTs (local revision numbers above the server's) and a
    // restart do not raise the floor, and the server's newer revision is still accepted.
    const local = { version: 1, service_id: SERVICE, edges: [], ttl_seconds: 600 };
    for (let i = 0; i < 3; i++) t.equal((await agent.api('PUT', `/v1/snapshots/${SERVICE}`, local)).status, 200, 'local snapshot installed');
    t.ok(((await view(agent)).revision ?? 0) > r2.body.revision, 'the local revision number is above the server one');
    await agent.stop();
    box.replay = null;
    agent = await startAgent(opts);
    await agent.waitReady();
    await eventually('server revision applied after local snapshots', async () => (await view(agent)).revision === r2.body.revision);
    t.same(await view(agent), { revision: r2.body.revision, stage: 'canary' }, 'a fresh server message is obeyed; local snapshots did not poison the floor');
  });

  t.test('a host with no floor yet refuses a recorded message older than the message lifetime, whatever its TTL', async (t) => {
    const url = await newDatabase();
    const s: TestServer = await startTestServer(url === undefined ? {} : { databaseUrl: url });
    t.teardown(() => s.close());
    const box = await Recorder.start(s.url);
    t.teardown(() => box.close());
    const host = `fresh-host-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const agent = await startAgent({
      serverUrl: box.url,
      dir,
      services: { [String(SERVICE)]: join(dir, 'no-cgroup') },
      hardwareFacts: { machine_id: host, macs: ['52:54:00:aa:dd:02'] },
      extraConfig: { hostname: host, fallback_interval_seconds: 1 },
    });
    t.teardown(() => agent.stop());
    await agent.waitReady();
    const c = await s.req('POST', '/api/v1/customers', { name: 'Fresh' });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
    // The recording is made before the host exists: the middlebox serves it as the host's
    // very first fallback answer, so no floor can stop it.
    box.replay = [];
    t.equal((await agent.api('POST', '/v1/activate', { license_key: l.body.license_key })).status, 200, 'activated');
    const machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;
    const day = { version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }], ttl_seconds: 86_400 };
    const posted = await s.req('POST', `/seg/maps?target_machine=${machineId}`, day);
    t.equal(posted.status, 200, JSON.stringify(posted.body));
    s.clock.offsetMs = -20 * 60_000;
    const recorded = await s.app.orchestrator.messagesFor(machineId);
    s.clock.offsetMs = 0;
    const rc = claimsOf(recorded[0]!);
    t.equal((rc.exp ?? 0) - rc.iat, 900, 'exp is iat + the message lifetime, not the 24 h TTL');
    box.replay = recorded;
    await eventuallyLogged(agent, 'a 20-minute-old message refused', (x) => x.includes('rejected a snapshot message') && x.includes('expired at'));
    t.same(await view(agent), { revision: null, stage: null }, 'the recorded message is not obeyed, floor or no floor');
    box.replay = null;
    await eventually('the fresh message is obeyed', async () => (await view(agent)).revision === posted.body.revision);
    t.pass('a freshly signed message of the same revision is accepted');
  });
}
