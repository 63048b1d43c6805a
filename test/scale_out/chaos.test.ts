/**
 * Chaos: two aegis-server PROCESSES on one real PostgreSQL and a real 3-node JetStream
 * cluster (the snapshot stream R3). During an activation storm spread over both replicas
 * and a rollout to simulated agents (the agent's own bus code, spread over the three
 * nodes), the replica holding the singleton lease is killed with -9, then the node leading
 * the snapshot stream. Afterwards: no acknowledged activation lost, no seat counted twice,
 * no license over its seats, every agent at the latest revision without ever applying an
 * older one, and the fleet license still being published (sealed, signed, later
 * sequence) by the replica that took the lease over, within a bound derived from the
 * lease length.
 *
 * The client side is what a client with two server URLs does: a connection error or a
 * 5xx sends the same activation (same host key and hardware id, a fresh proof) to the
 * other URL; a 4xx is an answer. So an activation that committed on the killed replica
 * but whose answer was lost is acknowledged by the other one as the same machine.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { compactVerify, createLocalJWKSet, decodeJwt, type JSONWebKeySet } from 'jose';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { AUD_FLEET_LICENSE, AUD_SEG_MAP, SEG_MAPS_STREAM, deriveFleetKey, openEnvelope } from '../../protocol/src/index.js';
import { AgentBus } from '../../agent/src/nats/agent_bus.js';
import { compareFloor, type FloorEntry } from '../../agent/src/seg_floor.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres } from '../harness/postgres.js';
import { startNatsCluster, waitFor } from '../harness/nats.js';
import { startReplica, type Replica } from '../harness/replica.js';
import { TestHost } from '../harness/server.js';

const LEASE_SECONDS = 2;
const REPUBLISH_SECONDS = 2;
const FLEET = `chaos-${process.pid}`;
const FLEET_KEY = randomBytes(32);
const SERVICE = 77;
const AGENTS = 60;
/** Seat limits of the storm's licenses; every license gets MACHINES_PER_LICENSE hosts, so the last three race for their last seats. */
const SEATS = [60, 60, 50, 30, 15, 5];
const MACHINES_PER_LICENSE = 40;
/** Customers the licenses belong to (two licenses each): an activation locks its license and its customer. */
const CUSTOMERS = 3;
/** Hosts whose activation is sent twice at once (to both replicas): still one seat. */
const DOUBLED = 24;
/** Activations in flight at once (hosts starting together); the kills are placed by progress, so the storm spans both on a fast machine or a slow one. */
const CONCURRENCY = 32;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  body: any;
}

async function call(url: string, key: string | null, method: string, path: string, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (key !== null) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* kept as text */
  }
  return { status: res.status, body: parsed };
}

/** One activation request as a two-URL client sends it: every attempt counted. */
interface Request {
  host: TestHost;
  license: number;
  outcome: 'acknowledged' | 'refused' | 'unanswered';
  machineId: string | null;
  code: string | null;
  attempts: number;
  /** Attempts that ended in a connection error (reset in flight, or refused) or a 5xx, then sent to the other URL. */
  failed: number;
  answeredBy: string | null;
}

/** Why attempts failed (5xx codes, connection errors), for the table. */
const failures = new Map<string, number>();
const countFailure = (why: string) => failures.set(why, (failures.get(why) ?? 0) + 1);

t.test('chaos: kill -9 the lease holder and a NATS node during an activation storm and a rollout', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const wallStart = Date.now();
  const pgc = await startPostgres();
  t.teardown(() => pgc.stop());
  const dbUrl = await pgc.newDatabase();
  const sqlc = new pg.Client({ connectionString: dbUrl });
  const work = mkdtempSync(join(tmpdir(), 'aegis-chaos-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const keysDir = join(work, 'keys');
  KeyStore.open(keysDir).generate();
  const cluster = await startNatsCluster();
  t.teardown(() => cluster.stop());
  const env = {
    DATABASE_URL: dbUrl,
    NATS_URL: cluster.urls.join(','),
    AEGIS_NATS_STREAM_REPLICAS: '3',
    AEGIS_KEYS_DIR: keysDir,
    AEGIS_FLEET_KEY: FLEET_KEY.toString('base64'),
    AEGIS_LEASE_SECONDS: String(LEASE_SECONDS),
    AEGIS_FLEET_PUBLISH_SECONDS: '1',
    AEGIS_SEG_REPUBLISH_SECONDS: String(REPUBLISH_SECONDS),
  };
  // One after the other: the first migrates the fresh database and takes the lease.
  const a = await startReplica(env);
  const b = await startReplica(env);
  t.teardown(async () => {
    await a.stop().catch(() => undefined);
    await b.stop().catch(() => undefined);
    await sqlc.end().catch(() => undefined);
  });
  await sqlc.connect();
  const replicas = [a, b];
  const dead = new Set<Replica>();
  const alive = () => replicas.filter((r) => !dead.has(r));
  /** An admin call to whichever replica answers (a dead one refuses the connection). */
  const admin = async (method: string, path: string, body?: unknown): Promise<Answer> => {
    let last: unknown;
    for (let i = 0; i < 20; i++) {
      for (const r of alive()) {
        try {
          const res = await call(r.url, r.adminKey, method, path, body);
          if (res.status < 500) return res;
          last = new Error(`${res.status} ${JSON.stringify(res.body)}`);
        } catch (e) {
          last = e;
        }
      }
      await sleep(100);
    }
    throw last;
  };

  const customers: string[] = [];
  for (let i = 0; i < CUSTOMERS; i++) customers.push(((await admin('POST', '/api/v1/customers', { name: `Chaos ${i}` })).body as { id: string }).id);
  const newLicense = async (customer: string, extra: Record<string, unknown>) => {
    const l = await admin('POST', '/api/v1/licenses', { customer_id: customer, tier: 'server', license_type: 'perpetual', ...extra });
    if (l.status !== 201) throw new Error(JSON.stringify(l.body));
    return l.body as { id: string; license_key: string };
  };
  const licenses = [] as Array<{ id: string; license_key: string; seats: number }>;
  for (const [i, seats] of SEATS.entries()) licenses.push({ ...(await newLicense(customers[i % CUSTOMERS]!, { max_machines: seats, ...(i === 0 ? { fleet: FLEET } : {}) })), seats });
  const jwks = createLocalJWKSet((await admin('GET', '/.well-known/jwks.json')).body as JSONWebKeySet);

  // The fleet license on NATS: opened with the fleet's key, its token verified.
  const listener: NatsConnection = await natsConnect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  t.teardown(() => listener.close());
  const envelopes: Array<{ seq: number; at: number; iat: number }> = [];
  let badEnvelopes = 0;
  listener.subscribe(`aegis.license.${FLEET}`, {
    callback: (_e, m) => {
      void (async () => {
        try {
          const { seq, gen, plaintext } = openEnvelope(deriveFleetKey(FLEET_KEY, FLEET, 1), FLEET, m.data);
          const claims = JSON.parse(new TextDecoder().decode((await compactVerify(plaintext, jwks)).payload)) as { aud: string; seq: number; iat: number; fleet: string; status: string };
          if (gen !== 1 || claims.aud !== AUD_FLEET_LICENSE || claims.seq !== seq || claims.fleet !== FLEET || claims.status !== 'active') throw new Error(JSON.stringify(claims));
          envelopes.push({ seq, at: Date.now(), iat: claims.iat });
        } catch {
          badEnvelopes++;
        }
      })();
    },
  });

  // The simulated agents: the agent's bus code, each pinned to one node first (then the
  // whole list, as an agent configured with the cluster fails over), with the agent's own
  // replay floor: a message not newer than the last accepted is refused.
  interface SimAgent {
    bus: AgentBus;
    floor: FloorEntry | null;
    /** Revisions applied, in order. */
    applied: number[];
    /** Older messages that arrived after a newer one (refused by the floor), by revision. */
    olderArrivals: number;
    older: number[];
    bad: number;
  }
  const agents: SimAgent[] = [];
  for (let i = 0; i < AGENTS; i++) {
    const first = i % cluster.urls.length;
    const urls = [...cluster.urls.slice(first), ...cluster.urls.slice(0, first)];
    const bus = await AgentBus.connect({ url: urls, machine: null, reconnectWaitMs: 100, rereadAfterReconnectMs: 500, requestTimeoutMs: 2000 });
    agents.push({ bus, floor: null, applied: [], olderArrivals: 0, older: [], bad: 0 });
  }
  t.teardown(() => Promise.all(agents.map((x) => x.bus.close().catch(() => undefined))));
  const onMessage = (agent: SimAgent) => (_subject: string, data: string) => {
    void (async () => {
      try {
        await compactVerify(data, jwks);
      } catch {
        agent.bad++;
        return;
      }
      const c = decodeJwt(data) as { aud: string; service_id: number; revision: number; stage: 'canary' | 'enforce'; iat: number };
      if (c.aud !== AUD_SEG_MAP || c.service_id !== SERVICE) {
        agent.bad++;
        return;
      }
      const entry: FloorEntry = { revision: c.revision, stage: c.stage, iat: c.iat };
      const cmp = agent.floor ? compareFloor(entry, agent.floor) : 1;
      if (cmp < 0 && entry.revision < agent.floor!.revision) {
        agent.olderArrivals++;
        agent.older.push(entry.revision);
      }
      if (cmp <= 0) return;
      if (agent.floor === null || entry.revision !== agent.floor.revision) agent.applied.push(entry.revision);
      agent.floor = entry;
    })();
  };
  await Promise.all(agents.map((x) => x.bus.watchSegMaps([SERVICE], onMessage(x))));

  const snapshot = (port: number) => ({ version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.77.0.0/24', proto: 'tcp', port }], ttl_seconds: 900 });
  const revisions: number[] = [];
  const publishRevision = async (port: number) => {
    const r = await admin('POST', `/api/v1/seg/maps?stage=enforce`, snapshot(port));
    if (r.status !== 200) throw new Error(`snapshot refused: ${JSON.stringify(r.body)}`);
    revisions.push(r.body.revision as number);
  };
  await publishRevision(1001);
  await waitFor(() => agents.every((x) => x.floor?.revision === revisions[0]), 'every agent at the first revision', 15_000);
  await waitFor(() => envelopes.length >= 2, 'fleet licenses on NATS', 10_000);

  const holderNow = async () =>
    (await sqlc.query("select holder, epoch::int as epoch from leases where name = 'singleton' and expires_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint")).rows[0] as { holder: string; epoch: number } | undefined;

  // The storm: every host once, and DOUBLED of them twice at once (one copy to each
  // replica), in a fixed shuffle so the racing licenses' hosts are spread over the storm.
  const fresh = (host: TestHost, license: number): Request => ({ host, license, outcome: 'unanswered', machineId: null, code: null, attempts: 0, failed: 0, answeredBy: null });
  const primaries: Array<{ req: Request; twin: Request | null }> = [];
  let n = 0;
  for (const li of licenses.keys()) {
    for (let m = 0; m < MACHINES_PER_LICENSE; m++) {
      const host = new TestHost(`chaos-${li}-${m}-${process.pid}`);
      const twin = n++ % Math.floor((SEATS.length * MACHINES_PER_LICENSE) / DOUBLED) === 0 ? fresh(host, li) : null;
      primaries.push({ req: fresh(host, li), twin });
    }
  }
  let seed = 7;
  const rand = () => ((seed = (seed * 48271) % 2147483647) / 2147483647);
  for (let i = primaries.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [primaries[i], primaries[j]] = [primaries[j]!, primaries[i]!];
  }
  const requests: Request[] = primaries.flatMap((p) => (p.twin ? [p.req, p.twin] : [p.req]));
  const activate = async (req: Request, first: number) => {
    for (let k = 0; k < 12; k++) {
      const r = replicas[(first + k) % replicas.length]!;
      req.attempts++;
      try {
        const res = await call(r.url, null, 'POST', '/api/v1/activations', req.host.activation(licenses[req.license]!.license_key));
        if (res.status === 200 || res.status === 201) {
          req.outcome = 'acknowledged';
          req.machineId = res.body.machine_id as string;
          req.answeredBy = r.holder;
          return;
        }
        if (res.status >= 400 && res.status < 500) {
          req.outcome = 'refused';
          req.code = res.body?.error?.code ?? String(res.status);
          req.answeredBy = r.holder;
          return;
        }
        countFailure(`${res.status} ${res.body?.error?.code ?? ''}`);
      } catch (e) {
        // Connection refused or reset in flight: the other URL.
        const err = e as Error & { cause?: { code?: string } };
        countFailure(err.cause?.code ?? err.name);
      }
      req.failed++;
      await sleep(100);
    }
  };

  const stormStart = Date.now();
  let answered = 0;
  let next = 0;
  const workers = Array.from({ length: CONCURRENCY }, async () => {
    while (next < primaries.length) {
      const i = next++;
      const { req, twin } = primaries[i]!;
      await Promise.all([activate(req, i % 2), twin ? activate(twin, (i + 1) % 2) : null]);
      answered += twin ? 2 : 1;
    }
  });
  const storm = Promise.all(workers);

  // A revision as the storm starts; at a third of the storm, kill -9 the lease holder.
  await publishRevision(1002);
  await waitFor(() => answered >= requests.length / 3, 'a third of the storm answered', 60_000);
  const before = await holderNow();
  t.ok(before && [a.holder, b.holder].includes(before.holder), `one replica holds the lease (${before?.holder})`);
  const [victim, survivor] = before!.holder === a.holder ? [a, b] : [b, a];
  const seqAtKill = Math.max(...envelopes.map((e) => e.seq));
  const killedAt = Date.now();
  const answeredAtKill = answered;
  dead.add(victim);
  await victim.kill();
  await waitFor(async () => (await holderNow())?.holder === survivor.holder, 'the survivor takes the lease', (2 * LEASE_SECONDS + 10) * 1000);
  const takeoverMs = Date.now() - killedAt;
  const after = (await holderNow())!;
  t.ok(after.epoch > before!.epoch, `the lease epoch moved on (${before!.epoch} → ${after.epoch})`);
  await publishRevision(1003);

  // Then kill -9 the node leading the snapshot stream, while the storm still runs.
  const jsc = await natsConnect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  t.teardown(() => jsc.close());
  const streamLeader = (await (await jsc.jetstreamManager()).streams.info(SEG_MAPS_STREAM)).cluster?.leader as string;
  const natsVictim = cluster.node(streamLeader);
  const natsKilledAt = Date.now();
  const answeredAtNatsKill = answered;
  await natsVictim.kill();
  await publishRevision(1004);

  await storm;
  const stormMs = Date.now() - stormStart;
  // The newest revision in the database (a timed-out submission may have committed anyway).
  const latest = Number((await sqlc.query('select max(revision)::int as r from seg_revisions where service_id = $1', [SERVICE])).rows[0].r);

  // Every agent converges to the latest revision (the survivor's publish may have met the
  // stream's election: the lease holder's republication brings it then).
  await waitFor(() => agents.every((x) => x.floor?.revision === latest), 'every agent at the latest revision', 20_000).catch(() => undefined);
  const converged = agents.filter((x) => x.floor?.revision === latest).length;
  // The fleet license keeps being published by the new holder, and after the NATS node died.
  await waitFor(() => envelopes.some((e) => e.at > natsKilledAt + 500 && e.seq > seqAtKill), 'a fleet license after both kills', 10_000).catch(() => undefined);
  const afterTakeover = envelopes.filter((e) => e.at > killedAt + takeoverMs && e.seq > seqAtKill);
  const afterNatsKill = envelopes.filter((e) => e.at > natsKilledAt + 500 && e.seq > seqAtKill);

  // What the database holds.
  const active = (await sqlc.query("select id, license_id, hardware_id, host_key_thumbprint from machines where status = 'active'")).rows as Array<{ id: string; license_id: string; hardware_id: string }>;
  const activeIds = new Set(active.map((m) => m.id));
  const acked = requests.filter((r) => r.outcome === 'acknowledged');
  const lost = acked.filter((r) => !activeIds.has(r.machineId!));
  const perHw = new Map<string, number>();
  for (const m of active) perHw.set(m.hardware_id, (perHw.get(m.hardware_id) ?? 0) + 1);
  const doubleCounted = [...perHw.values()].filter((c) => c > 1).length;
  const over = licenses.filter((l) => active.filter((m) => m.license_id === l.id).length > l.seats);

  const rows: Array<[string, string | number]> = [
    ['activation requests sent', requests.length],
    ['  attempts sent (with retries to the other URL)', requests.reduce((s, r) => s + r.attempts, 0)],
    ['  acknowledged (2xx)', acked.length],
    ['  refused (definite 4xx)', requests.filter((r) => r.outcome === 'refused').length],
    ['  unanswered after every retry', requests.filter((r) => r.outcome === 'unanswered').length],
    ['  attempts failed in flight (reset, refused, 5xx), retried', requests.reduce((s, r) => s + r.failed, 0)],
    ['  lost (acknowledged, not in the database)', lost.length],
    ['seats counted twice (hardware ids active twice)', doubleCounted],
    ['licenses over their seat limit', over.length],
    [`agents at the latest revision ${latest}`, `${converged}/${AGENTS}`],
    ['  agents that applied an older revision after a newer', agents.filter((x) => x.applied.some((r, i) => i > 0 && r < x.applied[i - 1]!)).length],
    ['  older messages on the wire refused by the floor', agents.reduce((s, x) => s + x.olderArrivals, 0)],
    ['    by revision (agents)', JSON.stringify(agents.flatMap((x) => x.older).reduce<Record<number, number>>((m, r) => ({ ...m, [r]: (m[r] ?? 0) + 1 }), {}))],
    ['snapshot revisions published (via the API)', revisions.join(',')],
    ['fleet envelopes seen (after takeover / after NATS kill)', `${envelopes.length} (${afterTakeover.length} / ${afterNatsKill.length})`],
    ['  why attempts failed', JSON.stringify(Object.fromEntries(failures))],
    ['lease takeover after kill -9 (ms)', takeoverMs],
    ['storm duration (ms)', stormMs],
    ['  answered when the lease holder / the NATS node was killed', `${answeredAtKill} / ${answeredAtNatsKill}`],
  ];
  t.comment(['chaos table', ...rows.map(([k, v]) => `${k.padEnd(60)} ${v}`)].join('\n'));

  t.equal(requests.filter((r) => r.outcome === 'unanswered').length, 0, 'every request got a definite answer (the survivor answers what the dead replica did not)');
  t.ok(requests.reduce((s, r) => s + r.failed, 0) > 0, 'the kill cut requests off (attempts failed and were retried)');
  t.equal(lost.length, 0, `no acknowledged activation lost (${lost.map((r) => r.machineId).join(',')})`);
  t.equal(doubleCounted, 0, 'no hardware id holds two seats');
  t.same(over.map((l) => l.seats), [], 'no license over its seat limit');
  const refusedCodes = [...new Set(requests.filter((r) => r.outcome === 'refused').map((r) => r.code))];
  t.same(refusedCodes, ['SEAT_LIMIT'], 'the only refusal is SEAT_LIMIT');
  // One host, one machine: its requests (doubled ones included) all got the same machine id, or all were refused.
  const byHost = new Map<TestHost, Request[]>();
  for (const r of requests) byHost.set(r.host, [...(byHost.get(r.host) ?? []), r]);
  const split = [...byHost.values()].filter((rs) => new Set(rs.map((r) => `${r.outcome}/${r.machineId}`)).size > 1);
  t.equal(split.length, 0, 'a host sent twice got one machine (or two refusals), never two seats');
  for (const [li, lic] of licenses.entries()) {
    const held = active.filter((m) => m.license_id === lic.id).length;
    const ackedHosts = new Set(acked.filter((r) => r.license === li).map((r) => r.machineId)).size;
    const refused = requests.filter((r) => r.license === li && r.outcome === 'refused').length;
    t.equal(held, ackedHosts, `license ${li} (${lic.seats} seats): every seat taken is an acknowledged one (${held})`);
    if (refused > 0) t.equal(held, lic.seats, `license ${li}: refused only once full (${refused} refusals)`);
    else t.equal(held, Math.min(lic.seats, MACHINES_PER_LICENSE), `license ${li}: every host seated`);
  }
  t.ok(acked.some((r) => r.answeredBy === victim.holder) && acked.some((r) => r.answeredBy === survivor.holder), 'the storm was answered by both replicas');

  t.ok(takeoverMs <= 2 * LEASE_SECONDS * 1000 + 1000, `the survivor held the lease ${takeoverMs} ms after the kill (lease ${LEASE_SECONDS} s; bound 2 × lease + 1 s)`);
  t.ok(afterTakeover.length > 0, `the fleet license is published after the takeover (seq ${afterTakeover[0]?.seq} > ${seqAtKill})`);
  t.ok(afterNatsKill.length > 0, 'and after the NATS node died');
  t.equal(badEnvelopes, 0, 'every envelope opened with the fleet key and carried a valid signed token');
  const seqs = envelopes.map((e) => e.seq);
  t.equal(new Set(seqs).size, seqs.length, 'no fleet sequence number published twice');

  t.equal(converged, AGENTS, `every agent converged to revision ${latest}`);
  t.same(
    agents.filter((x) => x.applied.some((r, i) => i > 0 && r <= x.applied[i - 1]!)).map((x) => x.applied),
    [],
    'no agent applied a revision not newer than the one before',
  );
  t.equal(agents.reduce((s, x) => s + x.bad, 0), 0, 'every snapshot message verified');
  t.comment(`wall time ${Date.now() - wallStart} ms (NATS node killed: ${natsVictim.name}, lease victim ${victim.holder})`);
});
