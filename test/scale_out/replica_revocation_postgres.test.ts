/**
 * Scale-out: what one replica changes, the other's very next validation sees. Two
 * aegis-server processes on one PostgreSQL with the database keyring (AEGIS_KEK_FILE)
 * polled only every ten minutes, so no poll and no TTL can be what refuses: a license
 * revoked, a machine deactivated, or a signing key retired through replica A (or the CLI)
 * is refused by the next `POST /validate` on replica B, each checked once, no retry.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres } from '../harness/postgres.js';
import { startReplica, type Replica } from '../harness/replica.js';
import { TestHost } from '../harness/server.js';

const CLI = resolve('dist/server/src/cli.js');

async function call(r: Replica, method: string, path: string, body?: unknown, key: string | null = r.adminKey): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (key !== null) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(r.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const kidOf = (token: string): string => (JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;

t.test('a revocation, deactivation or key retirement on one replica refuses the next validation on the other', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  const pgc = await startPostgres();
  t.teardown(() => pgc.stop());
  const dbUrl = await pgc.newDatabase();
  const work = mkdtempSync(join(tmpdir(), 'aegis-replica-revocation-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const kek = join(work, 'kek');
  writeFileSync(kek, randomBytes(32), { mode: 0o600 });
  chmodSync(kek, 0o600);
  const env = { DATABASE_URL: dbUrl, AEGIS_KEK_FILE: kek, AEGIS_KEYS_DIR: join(work, 'unused-keys'), AEGIS_KEYRING_POLL_MS: '600000' };
  const a = await startReplica(env); // migrates and makes the first key
  const b = await startReplica(env);
  t.teardown(async () => {
    await a.stop().catch(() => undefined);
    await b.stop().catch(() => undefined);
  });
  const validateOnB = async (token: string) => (await call(b, 'POST', '/api/v1/licenses/validate', { token }, null)).body as { valid: boolean; code: string };

  const customer = (await call(a, 'POST', '/api/v1/customers', { name: 'Replicas' })).body;
  const issue = async () => {
    const l = await call(a, 'POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual', max_machines: 10 });
    t.equal(l.status, 201, JSON.stringify(l.body));
    return l.body as { id: string; license_key: string };
  };
  const seat = async (licenseKey: string) => {
    const r = await call(a, 'POST', '/api/v1/activations', new TestHost(`h-${randomBytes(3).toString('hex')}`).activation(licenseKey), null);
    t.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { machine_id: string; license_token: string };
  };
  const [l1, l2] = [await issue(), await issue()];
  const [m1, m2, m3] = [await seat(l1.license_key), await seat(l1.license_key), await seat(l2.license_key)];
  for (const m of [m1, m2, m3]) t.match(await validateOnB(m.license_token), { valid: true, code: 'VALID' }, 'B validates what A issued (and has read it once)');

  const revoked = await call(a, 'DELETE', `/api/v1/licenses/${l2.id}/revoke`, { reason: 'test' });
  t.equal(revoked.status, 200, JSON.stringify(revoked.body));
  t.match(await validateOnB(m3.license_token), { valid: false, code: 'REVOKED' }, 'revoked on A: the next validation on B is refused');

  const gone = await call(a, 'DELETE', `/api/v1/machines/${m1.machine_id}`);
  t.equal(gone.status, 200, JSON.stringify(gone.body));
  t.match(await validateOnB(m1.license_token), { valid: false, code: 'MACHINE_DEACTIVATED' }, 'deactivated on A: the next validation on B is refused');
  t.match(await validateOnB(m2.license_token), { valid: true }, 'the other seat still validates');

  const oldKid = kidOf(m2.license_token);
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, ...env, LOG_LEVEL: 'error' }, encoding: 'utf8' });
  const rotated = cli(['keys', 'rotate']);
  t.equal(rotated.status, 0, `keys rotate: ${rotated.stderr}`);
  const retired = cli(['keys', 'retire', oldKid]);
  t.equal(retired.status, 0, `keys retire: ${retired.stderr}`);
  t.match(await validateOnB(m2.license_token), { valid: false, code: 'UNKNOWN_KEY' }, 'key retired: the next validation on B refuses its token, ten minutes before B polls the keyring');
  t.match((await call(a, 'POST', '/api/v1/licenses/validate', { token: m2.license_token }, null)).body, { valid: false, code: 'UNKNOWN_KEY' }, 'and on A');
});
