/**
 * The database-backed rate limiter (rate_limit.ts SharedRateLimiter) on both backends,
 * next to the in-memory one: the same refusals at the same points (burst, refill,
 * retry_after), concurrent takes of one key never spend more than the bucket holds (the
 * upsert is atomic), two limiters on one database share one budget, a clock behind the
 * row's refills nothing, and full buckets are pruned. And the lease on PostgreSQL: one
 * holder, a takeover only after expiry, the epoch bumped, a forged row honoured only by the
 * holder it names.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../server/src/db/database.js';
import { migrateToLatest } from '../../server/src/db/migrations.js';
import { RateLimiter, SharedRateLimiter, type Limit, type Limiter } from '../../server/src/rate_limit.js';
import { Lease } from '../../server/src/lease.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres } from '../harness/postgres.js';

const LIMIT: Limit = { burst: 5, perMinute: 60 }; // one token a second

async function refusal(l: Limiter, key: string, limit = LIMIT): Promise<number | null> {
  try {
    await l.take(key, limit);
    return null;
  } catch (e) {
    const err = e as { code?: string; details?: { retry_after?: number } };
    if (err.code !== 'RATE_LIMITED') throw e;
    return err.details!.retry_after!;
  }
}

async function sameAsMemory(t: Test, make: (now: () => number) => Limiter): Promise<void> {
  let now = 1_000_000;
  const shared = make(() => now);
  const memory = new RateLimiter(() => now);
  const trace = async (l: Limiter) => {
    const out: Array<number | null> = [];
    for (let i = 0; i < 7; i++) out.push(await refusal(l, 'k'));
    now += 2500; // 2.5 tokens back
    for (let i = 0; i < 4; i++) out.push(await refusal(l, 'k'));
    now += 3_600_000; // full again
    for (let i = 0; i < 6; i++) out.push(await refusal(l, 'k'));
    return out;
  };
  const start = now;
  const a = await trace(shared);
  now = start;
  const b = await trace(memory);
  t.same(a, b, `the same refusals and retry_after as the in-memory limiter (${JSON.stringify(a)})`);
  t.same(a.slice(0, 7), [null, null, null, null, null, 1, 1], 'the burst, then RATE_LIMITED with retry_after');
}

async function backend(t: Test, url: string, dialect: 'sqlite' | 'postgres'): Promise<void> {
  const opened = openDatabase(url);
  t.equal(opened.dialect, dialect);
  const db = opened.db;
  t.teardown(() => db.destroy());
  await migrateToLatest(db, opened.dialect);

  await t.test('the refusal semantics of the in-memory limiter', (t) => sameAsMemory(t, (now) => new SharedRateLimiter(db, dialect, now)));

  await t.test('concurrent takes spend exactly the bucket, across two limiters on one database', async (t) => {
    const one = new SharedRateLimiter(db, dialect);
    const two = new SharedRateLimiter(db, dialect);
    const limit = { burst: 10, perMinute: 0.001 };
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => refusal(i % 2 ? one : two, 'race', limit)));
    t.equal(results.filter((r) => r === null).length, 10, 'ten takes of forty pass');
  });

  await t.test('a clock behind the row refills nothing; full buckets are pruned', async (t) => {
    let now = 5_000_000;
    const ahead = new SharedRateLimiter(db, dialect, () => now);
    for (let i = 0; i < 5; i++) t.equal(await refusal(ahead, 'skew'), null);
    const behind = new SharedRateLimiter(db, dialect, () => now - 60_000);
    t.ok((await refusal(behind, 'skew')) !== null, 'a replica whose clock is a minute behind gets no token back');
    await ahead.prune();
    const n0 = Number((await db.selectFrom('rate_buckets').select((eb) => eb.fn.countAll<number>().as('n')).where('key', '=', 'skew').executeTakeFirstOrThrow()).n);
    t.equal(n0, 1, 'a bucket not yet full again is kept by prune');
    now += 10_000;
    t.ok((await ahead.prune()) >= 1, 'once refilled it is pruned');
    const n1 = Number((await db.selectFrom('rate_buckets').select((eb) => eb.fn.countAll<number>().as('n')).where('key', '=', 'skew').executeTakeFirstOrThrow()).n);
    t.equal(n1, 0);
    t.equal(await refusal(ahead, 'skew'), null, 'and starts full again');
  });

  await t.test('hostile keys: long and odd keys are bounded and literal', async (t) => {
    const l = new SharedRateLimiter(db, dialect);
    const long = `validate:ip:${'x'.repeat(10_000)}`;
    for (let i = 0; i < 5; i++) t.equal(await refusal(l, long), null);
    t.ok((await refusal(l, long)) !== null, 'a 10 KB key is one bucket');
    t.equal(await refusal(l, "k'; drop table rate_buckets; --"), null, 'a key is a value, never SQL');
    t.ok(await db.selectFrom('rate_buckets').select('key').limit(1).executeTakeFirst(), 'the table is there');
  });

  if (dialect === 'postgres') {
    await t.test('the lease: one holder, takeover after expiry, forged rows', async (t) => {
      const a = new Lease(db, dialect, { seconds: 1, holder: 'replica-a' });
      const b = new Lease(db, dialect, { seconds: 1, holder: 'replica-b' });
      t.equal(await a.tryAcquire(), true, 'A takes it');
      t.equal(await b.tryAcquire(), false, 'B cannot while it is live');
      t.equal(b.held(), false);
      const epoch = a.epoch;
      t.equal(await a.tryAcquire(), true, 'A renews');
      t.equal(a.epoch, epoch, 'a renewal keeps the epoch');
      await new Promise((r) => setTimeout(r, 1100));
      t.equal(a.held(), false, 'A unrenewed stops believing it holds it');
      t.equal(await b.tryAcquire(), true, 'B takes the expired lease');
      t.ok(b.epoch > epoch, 'with a new epoch');
      t.equal(await a.tryAcquire(), false, 'A cannot take it back while B holds it');
      await db.updateTable('leases').set({ holder: 'attacker', expires_ms: Date.now() + 3_600_000 }).where('name', '=', 'singleton').execute();
      t.equal(await b.tryAcquire(), false, 'a forged row: B loses it at its next renewal');
      t.equal(await a.tryAcquire(), false, 'and nobody else takes it (work stops, nothing runs twice)');
      await db.updateTable('leases').set({ holder: 'replica-a' }).where('name', '=', 'singleton').execute();
      t.equal(await a.tryAcquire(), true, 'a row naming A is renewed by A only');
      t.equal(await b.tryAcquire(), false);
      await a.close();
      t.equal(await b.tryAcquire(), true, 'a closed holder hands it over at once');
      await b.close();
    });
  }
}

t.test('SQLite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-limiter-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await backend(t, `sqlite:${join(dir, 'a.db')}`, 'sqlite');
  const other = openDatabase(`sqlite:${join(dir, 'a.db')}`).db;
  const lease = new Lease(other, 'sqlite', { seconds: 1 });
  t.equal(lease.held(), true, 'on SQLite the lease is held from the start');
  t.equal(await lease.tryAcquire(), true);
  await other.destroy();
});

t.test('PostgreSQL', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  const pg = await startPostgres();
  t.teardown(() => pg.stop());
  await backend(t, await pg.newDatabase(), 'postgres');
});
