/**
 * Two replicas publish the same snapshot subject: the lease holder's periodic
 * republication reads revision N, and before its publication is stored another replica
 * commits and publishes N+1 (both were held up, by a stream election in the chaos test).
 * The stale N must not stay the subject's last value (what a starting or reconnecting
 * agent reads) until the next republication: the republisher follows it at once with the
 * revision current now. Real nats-server (JetStream), real ServerBus and AgentBus, one
 * database shared by two orchestrators; the republisher's publication is held at a gate
 * (the bus below it is the real one) so the interleaving is the bad one every time.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { ALL_HOSTS } from '../../protocol/src/index.js';
import { AgentBus } from '../../agent/src/nats/agent_bus.js';
import { openDatabase } from '../../server/src/db/database.js';
import { migrateToLatest } from '../../server/src/db/migrations.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { ServerBus } from '../../server/src/nats/server_bus.js';
import { Orchestrator, type SegPublisher } from '../../server/src/rollout/orchestrator.js';
import { systemClock } from '../../server/src/clock.js';
import { TokenService } from '../../server/src/tokens.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { startNats, waitFor } from '../harness/nats.js';

const SERVICE = 31;
const snapshot = (port: number) => ({ version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.31.0.0/24', proto: 'tcp', port }], ttl_seconds: 900 });
const revisionOf = (jws: string) => (decodeJwt(jws) as { revision: number }).revision;

t.test('a republication stored after a newer revision is followed by the newer one', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const dir = mkdtempSync(join(tmpdir(), 'aegis-republish-race-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nats = await startNats();
  t.teardown(() => nats.stop());
  const { db, dialect } = openDatabase(`sqlite:${join(dir, 'a.db')}`);
  t.teardown(() => db.destroy());
  await migrateToLatest(db, dialect);
  const keys = KeyStore.open(join(dir, 'keys'));
  keys.generate();
  const tokens = new TokenService(keys);
  const bus = await ServerBus.connect({ url: nats.url });
  t.teardown(() => bus.close());
  await bus.ensureStream();

  // The republisher's publications wait at a gate when one is armed.
  let gate: Promise<void> | null = null;
  let release = () => {};
  let entered = false;
  const gated: SegPublisher = {
    isConnected: () => bus.isConnected(),
    async publishSegMap(target, service, jws) {
      if (gate) {
        const g = gate;
        gate = null;
        entered = true;
        await g;
      }
      return bus.publishSegMap(target, service, jws);
    },
  };
  const onError = (m: string, meta: object) => t.fail(`${m} ${JSON.stringify(meta)}`);
  const holder = new Orchestrator(db, systemClock, tokens, gated, onError);
  const other = new Orchestrator(db, systemClock, tokens, bus, onError);

  // What a subscriber sees live.
  const live: number[] = [];
  const watcher = await AgentBus.connect({ url: nats.url, machine: null });
  t.teardown(() => watcher.close());
  await watcher.watchSegMaps([SERVICE], (_s, d) => void live.push(revisionOf(d)));

  const r1 = await other.submit(snapshot(1), { targets: [ALL_HOSTS], actor: 'test' });
  t.equal(r1.published, true);
  gate = new Promise<void>((r) => (release = r));
  const republished = holder.republishAll();
  await waitFor(() => entered, 'the republication of revision 1 held at the gate');
  const r2 = await other.submit(snapshot(2), { targets: [ALL_HOSTS], actor: 'test' });
  t.equal(r2.revision, r1.revision + 1, 'the other replica commits and publishes revision 2 meanwhile');
  release();
  t.equal(await republished, 1);
  await waitFor(() => live.at(-1) === r2.revision && live.includes(r1.revision), 'live deliveries');
  t.same(live, [r1.revision, r2.revision, r1.revision, r2.revision], 'live: 1, 2, the stale 1, then 2 again at once');

  // What an agent starting now reads: the subject's last value.
  const late = await AgentBus.connect({ url: nats.url, machine: null });
  t.teardown(() => late.close());
  const read: number[] = [];
  await late.watchSegMaps([SERVICE], (_s, d) => void read.push(revisionOf(d)));
  t.same(read, [r2.revision], 'the last value is revision 2, not the stale republication');
});
