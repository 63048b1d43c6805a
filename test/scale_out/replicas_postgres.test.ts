/**
 * Scale-out: two aegis-server PROCESSES on one real PostgreSQL and one real
 * nats-server in operator mode, sharing a keys directory (the keyring in the database is
 * another branch's). A replica holds nothing the other needs: seats, NATS users and their
 * revocations, rate-limit budgets, console sessions; singleton work runs under a lease that
 * moves to the survivor when the holder is killed with -9, and the fleet license keeps
 * being published (observed on NATS) with sequence numbers that never go backwards, even
 * when a forged lease row makes both replicas publish at once.
 */
import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { connect as natsConnect, credsAuthenticator, type NatsConnection } from 'nats';
import { AUD_REFRESH_PROOF, deriveFleetKey, openEnvelope } from '../../protocol/src/index.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { NatsAuthority } from '../../server/src/nats/credentials.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres } from '../harness/postgres.js';
import { startNats } from '../harness/nats.js';
import { startReplica, type Replica } from '../harness/replica.js';
import { TestHost } from '../harness/server.js';

const LEASE_SECONDS = 2;
const FLEET = `fleet-${process.pid}`;
const FLEET_KEY = randomBytes(32);
/** The per-license validate budget both replicas share (the other limits are generous). */
const VALIDATE_BUDGET = 6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(r: Replica, method: string, path: string, body?: unknown, o: { key?: string | null; headers?: Record<string, string> } = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  const key = o.key === undefined ? r.adminKey : o.key;
  if (key !== null) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(r.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed as any, headers: res.headers };
}

async function natsWith(url: string, creds: string): Promise<NatsConnection> {
  return natsConnect({ servers: url, authenticator: credsAuthenticator(new TextEncoder().encode(creds)), maxReconnectAttempts: 0, timeout: 3000 });
}

async function tryNats(url: string, creds: string): Promise<string> {
  try {
    const nc = await natsWith(url, creds);
    await nc.flush();
    await nc.close();
    return 'connected';
  } catch (e) {
    return (e as Error).message;
  }
}

t.test('two replicas on one PostgreSQL', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const pgc = await startPostgres();
  t.teardown(() => pgc.stop());
  const dbUrl = await pgc.newDatabase();
  const sqlc = new pg.Client({ connectionString: dbUrl });
  const work = mkdtempSync(join(tmpdir(), 'aegis-replicas-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const keysDir = join(work, 'keys');
  KeyStore.open(keysDir).generate();
  // The NATS operator keys the replicas share; a listener on the fleet's license subject.
  const authority = await NatsAuthority.open({ dir: join(keysDir, 'nats') });
  const listenerCreds = (await authority.issueAgentCredentials({ machineId: randomUUID(), fleet: FLEET })).creds;
  const nats = await startNats({ operatorConfig: authority.renderServerConfig() });
  t.teardown(() => nats.stop());
  const env = {
    DATABASE_URL: dbUrl,
    NATS_URL: nats.url,
    AEGIS_KEYS_DIR: keysDir,
    AEGIS_NATS_OPERATOR_CONFIG: nats.operatorConfigPath,
    AEGIS_FLEET_KEY: FLEET_KEY.toString('base64'),
    AEGIS_LEASE_SECONDS: String(LEASE_SECONDS),
    AEGIS_FLEET_PUBLISH_SECONDS: '1',
    AEGIS_SEG_REPUBLISH_SECONDS: '5',
  };
  // A burst of VALIDATE_BUDGET that refills too slowly to matter within the test.
  const limits = `validate_per_license=${VALIDATE_BUDGET}/h`;
  // One after the other: the first migrates the fresh database.
  let a = await startReplica(env, limits);
  let b = await startReplica(env, limits);
  t.teardown(async () => {
    await a.stop().catch(() => undefined);
    await b.stop().catch(() => undefined);
    await sqlc.end().catch(() => undefined);
  });
  await sqlc.connect();

  const customer = (await call(a, 'POST', '/api/v1/customers', { name: 'Scale-out' })).body;
  const newLicense = async (r: Replica, extra: Record<string, unknown> = {}) => {
    const l = await call(r, 'POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual', max_machines: 5, ...extra });
    if (l.status !== 201) throw new Error(JSON.stringify(l.body));
    return l.body as { id: string; license_key: string };
  };

  await t.test('activate through A; validate, refresh and deactivate through B; NATS user issued by A revoked by B', async (t) => {
    const lic = await newLicense(a);
    const host = new TestHost(`ha-${process.pid}`);
    const act = await call(a, 'POST', '/api/v1/activations', host.activation(lic.license_key), { key: null });
    t.equal(act.status, 201, JSON.stringify(act.body));
    t.ok(act.body.nats?.creds, 'A issued NATS credentials');
    t.equal(await tryNats(nats.url, act.body.nats.creds), 'connected', 'they work');
    const v = await call(b, 'POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null });
    t.equal(v.body.valid, true, `B validates what A issued (${JSON.stringify(v.body)})`);
    const ref = await call(b, 'POST', `/api/v1/machines/${act.body.machine_id}/refresh`, { proof: host.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(ref.status, 200, `B refreshes A's machine (${JSON.stringify(ref.body)})`);
    t.equal((await call(a, 'POST', '/api/v1/licenses/validate', { token: ref.body.license_token }, { key: null })).body.valid, true, 'A validates what B issued');
    const del = await call(b, 'DELETE', `/api/v1/machines/${act.body.machine_id}`);
    t.equal(del.status, 200, `B deactivates (${JSON.stringify(del.body)})`);
    const after = await call(a, 'POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null });
    t.same([after.body.valid, after.body.code], [false, 'MACHINE_DEACTIVATED'], 'refused on A at once');
    t.match(await tryNats(nats.url, act.body.nats.creds), /authoriz|authentic|revoked/i, 'the NATS user A issued, revoked by B, is refused by nats-server');
    const rows = await sqlc.query('select count(*)::int as n from nats_users where machine_id = $1 and revoked_at is not null', [act.body.machine_id]);
    t.ok(rows.rows[0].n >= 1, 'the revocation is in the shared registry');
  });

  await t.test('a license revoked on A is refused at once on B', async (t) => {
    const lic = await newLicense(a);
    const act = await call(b, 'POST', '/api/v1/activations', new TestHost(`hr-${process.pid}`).activation(lic.license_key), { key: null });
    t.equal(act.status, 201);
    t.equal((await call(b, 'POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null })).body.valid, true);
    t.equal((await call(a, 'DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'scale-out test' })).status, 200);
    const v = await call(b, 'POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null });
    t.same([v.body.valid, v.body.code], [false, 'REVOKED'], 'refused on B at once');
  });

  await t.test('one rate-limit budget for both replicas', async (t) => {
    const lic = await newLicense(a);
    const act = await call(a, 'POST', '/api/v1/activations', new TestHost(`hl-${process.pid}`).activation(lic.license_key), { key: null });
    const token = act.body.license_token;
    const answers: Array<{ status: number; code: string }> = [];
    for (let i = 0; i < VALIDATE_BUDGET + 2; i++) {
      const r = await call(i % 2 === 0 ? a : b, 'POST', '/api/v1/licenses/validate', { token }, { key: null });
      answers.push({ status: r.status, code: r.body.code ?? r.body.error?.code });
      if (r.status === 429) t.ok(r.body.error.details.retry_after >= 1, 'retry_after is said');
    }
    t.equal(answers.filter((x) => x.status === 200).length, VALIDATE_BUDGET, `exactly the budget passes across both (${JSON.stringify(answers)})`);
    t.same(answers.slice(VALIDATE_BUDGET).map((x) => x.code), ['RATE_LIMITED', 'RATE_LIMITED'], 'then both replicas refuse');
  });

  await t.test('12 machines race for one seat across both replicas: exactly one wins', async (t) => {
    const lic = await newLicense(b, { max_machines: 1 });
    const hosts = Array.from({ length: 12 }, (_, i) => new TestHost(`race-${i}-${process.pid}`));
    const results = await Promise.all(hosts.map((h, i) => call(i % 2 === 0 ? a : b, 'POST', '/api/v1/activations', h.activation(lic.license_key), { key: null })));
    const statuses = results.map((r) => r.status);
    t.equal(statuses.filter((s) => s === 201).length, 1, `one seat taken (${statuses.join(',')})`);
    t.equal(results.filter((r) => r.body.error?.code === 'SEAT_LIMIT').length, 11, 'eleven refused SEAT_LIMIT');
    const n = await sqlc.query("select count(*)::int as n from machines where license_id = $1 and status = 'active'", [lic.id]);
    t.equal(n.rows[0].n, 1, 'one active machine in the database');
  });

  let keptCookie = '';
  await t.test('a console session opened on A works on B; signed out on B, refused on A', async (t) => {
    const signIn = async (r: Replica) => {
      const s = await call(r, 'POST', '/console/api/session', { api_key: a.adminKey }, { key: null, headers: { origin: r.url } });
      t.equal(s.status, 201, JSON.stringify(s.body));
      return { cookie: (s.headers.get('set-cookie') ?? '').split(';')[0]!, csrf: s.body.csrf_token as string };
    };
    const s = await signIn(a);
    const onB = await call(b, 'GET', '/console/api/session', undefined, { key: null, headers: { cookie: s.cookie } });
    t.equal(onB.status, 200, 'the session works on B');
    t.equal(onB.body.csrf_token, s.csrf, 'with the same CSRF token');
    const write = await call(b, 'POST', '/api/v1/customers', { name: 'via session on B' }, { key: null, headers: { cookie: s.cookie, origin: b.url, 'x-csrf-token': s.csrf } });
    t.equal(write.status, 201, 'a write through it on B (CSRF checked against the shared state)');
    const forged = await call(b, 'POST', '/api/v1/customers', { name: 'no csrf' }, { key: null, headers: { cookie: s.cookie, origin: b.url, 'x-csrf-token': 'x'.repeat(43) } });
    t.equal(forged.status, 403, 'a wrong CSRF token is refused on B too');
    t.equal((await call(b, 'DELETE', '/console/api/session', undefined, { key: null, headers: { cookie: s.cookie, origin: b.url, 'x-csrf-token': s.csrf } })).status, 204, 'signed out on B');
    t.equal((await call(a, 'GET', '/console/api/session', undefined, { key: null, headers: { cookie: s.cookie } })).status, 401, 'refused on A');
    keptCookie = (await signIn(a)).cookie;
  });

  await t.test('lease: kill -9 the holder, the other takes over within the bound; the fleet license keeps being published', async (t) => {
    await newLicense(a, { fleet: FLEET });
    const seen: Array<{ seq: number; at: number }> = [];
    const listener = await natsWith(nats.url, listenerCreds);
    t.teardown(() => listener.close());
    const sub = listener.subscribe(`aegis.license.${FLEET}`);
    void (async () => {
      for await (const m of sub) {
        const { seq } = openEnvelope(deriveFleetKey(FLEET_KEY, FLEET, 1), FLEET, m.data);
        seen.push({ seq, at: Date.now() });
      }
    })();
    const holderNow = async () => (await sqlc.query("select holder, expires_ms::text as expires_ms, epoch::int as epoch from leases where name = 'singleton'")).rows[0] as { holder: string; epoch: number } | undefined;
    const waitUntil = async (cond: () => boolean | Promise<boolean>, what: string, ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (await cond()) return;
        await sleep(50);
      }
      throw new Error(`timed out: ${what}`);
    };
    await waitUntil(() => seen.length >= 2, 'fleet licenses on NATS', 10_000);
    const before = await holderNow();
    t.ok(before && [a.holder, b.holder].includes(before.holder), `one replica holds the lease (${before?.holder})`);
    const [victim, survivor] = before!.holder === a.holder ? [a, b] : [b, a];
    const killedAt = Date.now();
    await victim.kill();
    const seqAtKill = Math.max(...seen.map((s) => s.seq));
    await waitUntil(async () => (await holderNow())?.holder === survivor.holder, 'takeover', (LEASE_SECONDS + 3) * 1000);
    const tookMs = Date.now() - killedAt;
    t.ok(tookMs <= (LEASE_SECONDS + 1) * 1000 + 1000, `taken over in ${tookMs} ms (lease ${LEASE_SECONDS} s)`);
    t.ok((await holderNow())!.epoch > before!.epoch, 'the epoch moved on');
    await waitUntil(() => seen.some((s) => s.at > killedAt + tookMs && s.seq > seqAtKill), 'a fleet license from the new holder', 5000);
    t.pass(`fleet license published after the takeover (seq ${Math.max(...seen.map((s) => s.seq))} > ${seqAtKill})`);
    const seqs = seen.map((s) => s.seq);
    t.equal(new Set(seqs).size, seqs.length, 'no sequence number published twice');

    // The killed replica comes back; a console session made before survives its restart.
    const back = await startReplica(env, limits);
    if (victim === a) a = back;
    else b = back;
    t.equal((await call(back, 'GET', '/console/api/session', undefined, { key: null, headers: { cookie: keptCookie } })).status, 200, 'a console session survives a restart');

    // Attack: a forged lease row naming the other replica while one holds it: for a while both
    // publish, and still no agent is moved backwards.
    const holder = (await holderNow())!.holder;
    const other = holder === back.holder ? survivor.holder : back.holder;
    const mark = seen.length;
    await sqlc.query("update leases set holder = $1, expires_ms = expires_ms + 60000 where name = 'singleton'", [other]);
    await sleep(LEASE_SECONDS * 1000 + 1500);
    const during = seen.slice(mark).map((s) => s.seq);
    t.ok(during.length >= 2, `fleet licenses published meanwhile (${during.length})`);
    t.equal(new Set(during).size, during.length, 'every envelope has its own sequence number');
    // What an agent does: take an envelope only when newer than the one it holds.
    const last = Number((await sqlc.query('select seq::text as seq from fleet_sequence where fleet = $1', [FLEET])).rows[0].seq);
    await waitUntil(() => seen.some((s) => s.seq >= last), 'the newest envelope on NATS', 5000);
    let held = 0;
    let refusedOlder = 0;
    for (const s of seen.map((x) => x.seq)) {
      if (s > held) held = s;
      else refusedOlder++;
    }
    t.ok(held >= last, `an agent following the stream holds the newest sequence number the database gave out (${held} >= ${last}; ${refusedOlder} older arrivals it would refuse)`);
    t.equal((await holderNow())!.holder, other, 'the forged holder renews: one holder again, the other stopped believing');
  });
});
