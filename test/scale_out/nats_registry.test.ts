/**
 * The NATS user registry in the database (nats_users): two authorities on one database and
 * one key directory, as two replicas are. A user issued by one is found and revoked by the
 * other; the other's revocation reaches the first one's account JWT and config fragment at
 * its next sync(); two replicas revoking the same machine at once count it once; a
 * state.json of before is imported once. Both backends.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../server/src/db/database.js';
import { migrateToLatest } from '../../server/src/db/migrations.js';
import { NatsAuthority } from '../../server/src/nats/credentials.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres } from '../harness/postgres.js';

const revokedIn = (jwt: string): Record<string, number> =>
  (JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { nats: { revocations?: Record<string, number> } }).nats.revocations ?? {};

async function registry(t: Test, url: string): Promise<void> {
  const { db, dialect } = openDatabase(url);
  t.teardown(() => db.destroy());
  await migrateToLatest(db, dialect);
  const work = mkdtempSync(join(tmpdir(), 'aegis-natsreg-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const dir = join(work, 'nats');

  // A deployment of before: users in state.json, imported once when the database has none.
  const legacy = await NatsAuthority.open({ dir });
  const old = await legacy.issueAgentCredentials({ machineId: randomUUID(), fleet: 'f', ttlSeconds: 3600 });
  const oldGone = randomUUID();
  const gone = await legacy.issueAgentCredentials({ machineId: oldGone, fleet: 'f', ttlSeconds: 3600 });
  await legacy.revokeAgent(oldGone);
  t.ok(existsSync(join(dir, 'state.json')));

  const a = await NatsAuthority.open({ dir, db, configPath: join(work, 'a.conf') });
  const b = await NatsAuthority.open({ dir, db, configPath: join(work, 'b.conf') });
  t.ok(revokedIn(a.currentAccountJwt)[gone.userPublicKey], 'the imported revocation is in the account JWT');
  const rows = await db.selectFrom('nats_users').select(['user_key', 'revoked_at']).execute();
  t.same(rows.map((r) => r.user_key).sort(), [old.userPublicKey, gone.userPublicKey].sort(), 'state.json imported once, not twice');

  const machine = randomUUID();
  const issued = await a.issueAgentCredentials({ machineId: machine, fleet: 'f', ttlSeconds: 3600 });
  t.equal(await b.needsRenewal(machine), false, 'B knows the user A issued (no renewal needed)');
  const r = await b.revokeAgent(machine);
  t.same(r.revoked, [issued.userPublicKey], 'B revokes the user A issued, found by machine id');
  t.ok(revokedIn(b.currentAccountJwt)[issued.userPublicKey], "in B's account JWT at once");
  t.notOk(revokedIn(a.currentAccountJwt)[issued.userPublicKey], 'not yet in A');
  t.equal(await a.sync(), true, 'A catches up at its sync');
  t.ok(revokedIn(a.currentAccountJwt)[issued.userPublicKey], "in A's account JWT");
  t.ok(readFileSync(join(work, 'a.conf'), 'utf8').includes(a.currentAccountJwt), "and in A's config fragment");
  t.equal(await a.sync(), false, 'nothing to do the second time');
  t.equal(await a.needsRenewal(machine), true, 'a revoked machine needs new credentials on both');

  // Both revoke the same machine at once: one of them counts each key.
  const twice = randomUUID();
  const k1 = await a.issueAgentCredentials({ machineId: twice, fleet: 'f', ttlSeconds: 3600 });
  const k2 = await b.issueAgentCredentials({ machineId: twice, fleet: 'f', ttlSeconds: 3600 });
  const [ra, rb] = await Promise.all([a.revokeAgent(twice), b.revokeAgent(twice)]);
  t.same([...ra.revoked, ...rb.revoked].sort(), [k1.userPublicKey, k2.userPublicKey].sort(), 'each key revoked exactly once between them');
  await a.sync();
  await b.sync();
  t.same(Object.keys(revokedIn(a.currentAccountJwt)).sort(), Object.keys(revokedIn(b.currentAccountJwt)).sort(), 'after a sync both sign the same revocations');

  // A revocation by user key of a key never issued here is recorded too; a hostile target is a value.
  const stray = (await legacy.issueAgentCredentials({ machineId: randomUUID(), fleet: 'f' })).userPublicKey;
  t.same((await a.revokeAgent(stray)).revoked, [stray]);
  t.same((await b.revokeAgent("x' or '1'='1")).revoked, [], 'a target that is neither a key nor a machine revokes nothing');

  // Expired users leave the registry at a sync.
  await db.updateTable('nats_users').set({ expires_at: 1 }).where('user_key', '=', old.userPublicKey).execute();
  await a.sync();
  t.notOk(await db.selectFrom('nats_users').select('user_key').where('user_key', '=', old.userPublicKey).executeTakeFirst(), 'an expired user is forgotten');
}

t.test('SQLite', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-natsreg-db-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await registry(t, `sqlite:${join(dir, 'a.db')}`);
});

t.test('PostgreSQL', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  const pg = await startPostgres();
  t.teardown(() => pg.stop());
  await registry(t, await pg.newDatabase());
});
