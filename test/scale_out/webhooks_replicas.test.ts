/**
 * The webhook dispatcher on two aegis-server PROCESSES over one PostgreSQL: both run it
 * over the one outbox (webhook_deliveries), so each delivery must be claimed by exactly
 * one of them. A real local receiver counts what arrives by event id (the id a receiver
 * dedupes on, one delivery per endpoint and event):
 *   - N events made through both replicas: each arrives exactly once;
 *   - kill -9 one replica while its attempts are in flight (the receiver holds its
 *     answers): every event still arrives, the cut ones again with the same event id and
 *     signature, within a bound derived from the attempt timeout; nothing stays pending.
 */
import t from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { WEBHOOK_EVENT_ID_HEADER, WEBHOOK_KEY_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, verifyWebhook } from '../../protocol/src/index.js';
import { KeyStore } from '../../server/src/keys/keystore.js';
import { CLAIM_MARGIN_MS } from '../../server/src/webhooks/webhooks.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres } from '../harness/postgres.js';
import { waitFor } from '../harness/nats.js';
import { startReplica, type Replica } from '../harness/replica.js';

const TIMEOUT_MS = 1500;
const FIRST = 60;
const SECOND = 40;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function call(r: Replica, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(r.url + path, { method, headers: { 'x-api-key': r.adminKey, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

interface Receiver {
  url: string;
  /** Answered requests per event id. */
  answered: Map<string, number>;
  /** Requests per event id whose connection closed before the answer (the sender died). */
  cut: Map<string, number>;
  /** Requests waiting for their answer now. */
  waiting(): number;
  /** How long an answer is held back (ms). */
  holdMs: number;
  badSignatures: number;
  close(): Promise<void>;
}

async function startReceiver(jwks: Parameters<typeof verifyWebhook>[2]): Promise<Receiver> {
  const answered = new Map<string, number>();
  const cut = new Map<string, number>();
  let waiting = 0;
  const rec: Receiver = {
    url: '',
    answered,
    cut,
    waiting: () => waiting,
    holdMs: 0,
    badSignatures: 0,
    close: async () => undefined,
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const id = String(req.headers[WEBHOOK_EVENT_ID_HEADER.toLowerCase()] ?? '');
      const kid = String(req.headers[WEBHOOK_KEY_ID_HEADER.toLowerCase()] ?? '');
      const sig = String(req.headers[WEBHOOK_SIGNATURE_HEADER.toLowerCase()] ?? '');
      if (!verifyWebhook(body, sig, jwks, { kid }).ok || (JSON.parse(body) as { id: string }).id !== id) rec.badSignatures++;
      waiting++;
      let done = false;
      res.on('close', () => {
        if (!done) {
          done = true;
          waiting--;
          cut.set(id, (cut.get(id) ?? 0) + 1);
        }
      });
      setTimeout(() => {
        if (done) return;
        done = true;
        waiting--;
        answered.set(id, (answered.get(id) ?? 0) + 1);
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok');
      }, rec.holdMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  rec.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  rec.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return rec;
}

t.test('webhook dispatcher on two replicas: once each, and at-least-once with the same id when one dies mid-flight', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  const pgc = await startPostgres();
  t.teardown(() => pgc.stop());
  const dbUrl = await pgc.newDatabase();
  const sqlc = new pg.Client({ connectionString: dbUrl });
  const work = mkdtempSync(join(tmpdir(), 'aegis-hooks-replicas-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const keysDir = join(work, 'keys');
  const keys = KeyStore.open(keysDir);
  keys.generate();
  const receiver = await startReceiver(JSON.parse(JSON.stringify(keys.jwks())) as Parameters<typeof verifyWebhook>[2]);
  t.teardown(() => receiver.close());
  const env = {
    DATABASE_URL: dbUrl,
    AEGIS_KEYS_DIR: keysDir,
    AEGIS_LEASE_SECONDS: '2',
    AEGIS_WEBHOOK_ALLOW_HTTP: '1',
    AEGIS_WEBHOOK_ALLOW_LOOPBACK: '1',
    AEGIS_WEBHOOK_POLL_MS: '50',
    AEGIS_WEBHOOK_TIMEOUT_MS: String(TIMEOUT_MS),
    AEGIS_WEBHOOK_BACKOFF_BASE_MS: '100',
    AEGIS_WEBHOOK_BACKOFF_CAP_MS: '300',
  };
  const a = await startReplica(env);
  const b = await startReplica(env);
  t.teardown(async () => {
    await a.stop().catch(() => undefined);
    await b.stop().catch(() => undefined);
    await sqlc.end().catch(() => undefined);
  });
  await sqlc.connect();
  const customer = (await call(a, 'POST', '/api/v1/customers', { name: 'Hooks' })).body as { id: string };
  const ep = await call(b, 'POST', '/api/v1/webhook-endpoints', { url: receiver.url, events: ['license.created'] });
  t.equal(ep.status, 201, JSON.stringify(ep.body));
  const newLicenses = async (n: number, via: Replica[]) =>
    Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const r = await call(via[i % via.length]!, 'POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual', max_machines: 1 });
        if (r.status !== 201) throw new Error(JSON.stringify(r.body));
        return r.body.id as string;
      }),
    );
  const pending = async () => Number((await sqlc.query("select count(*)::int as n from webhook_deliveries where status <> 'delivered'")).rows[0].n);
  const eventIds = async () => (await sqlc.query('select event_id from webhook_deliveries')).rows.map((r: { event_id: string }) => r.event_id) as string[];

  await t.test(`${FIRST} events through both replicas: each delivered exactly once`, async (t) => {
    await newLicenses(FIRST, [a, b]);
    const ids = await eventIds();
    t.equal(ids.length, FIRST, 'one delivery row per event');
    await waitFor(async () => (await pending()) === 0 && ids.every((id) => receiver.answered.has(id)), 'every delivery made', 20_000);
    await sleep(500); // a second sender would have sent by now (polls every 50 ms)
    const twice = ids.filter((id) => (receiver.answered.get(id) ?? 0) + (receiver.cut.get(id) ?? 0) !== 1);
    t.same(twice, [], `each of ${FIRST} events arrived once (${[...receiver.answered.values()].reduce((s, n) => s + n, 0)} requests)`);
    t.equal(receiver.badSignatures, 0, 'every request verified');
  });

  await t.test('kill -9 a replica with attempts in flight: every event still delivered, the cut ones again with the same event id', async (t) => {
    receiver.holdMs = 600; // answers held back: attempts are in flight when the kill comes
    const before = new Set(await eventIds());
    await newLicenses(SECOND, [a, b]);
    const ids = (await eventIds()).filter((id) => !before.has(id));
    t.equal(ids.length, SECOND);
    // Both replicas dispatch; wait until several attempts are held open, then kill one.
    await waitFor(() => receiver.waiting() >= 4, 'attempts in flight', 10_000);
    const killedAt = Date.now();
    await a.kill();
    await waitFor(() => receiver.cut.size > 0, 'the receiver sees attempts cut off', 5000).catch(() => undefined);
    const cut = [...receiver.cut.keys()].filter((id) => ids.includes(id));
    t.ok(cut.length > 0, `attempts of the killed replica were cut mid-flight (${cut.length})`);
    // Its claims come due again once they lapse: the attempt timeout plus a margin.
    const bound = TIMEOUT_MS + CLAIM_MARGIN_MS + 5000;
    await waitFor(async () => (await pending()) === 0 && ids.every((id) => receiver.answered.has(id)), 'every event delivered after the kill', bound);
    const tookMs = Date.now() - killedAt;
    t.ok(tookMs <= bound, `every event delivered ${tookMs} ms after the kill (bound ${bound} ms)`);
    t.same(ids.filter((id) => !receiver.answered.has(id)), [], `all ${SECOND} events answered`);
    t.same(cut.filter((id) => !receiver.answered.has(id)), [], 'each cut delivery was sent again under the same event id, and answered');
    const extra = ids.filter((id) => (receiver.answered.get(id) ?? 0) > 1);
    t.same(extra, [], 'no event answered twice (only a cut attempt is repeated)');
    t.equal(receiver.badSignatures, 0, 'every request verified, the repeated ones too');
    const rows = (await sqlc.query("select attempts::int as n from webhook_deliveries where event_id = any($1)", [cut])).rows as Array<{ n: number }>;
    t.ok(rows.every((r) => r.n >= 1), 'the repeated deliveries are recorded delivered');
    t.comment(`webhooks: ${FIRST} + ${SECOND} events, ${cut.length} cut by the kill, all delivered ${tookMs} ms after it`);
  });
});
