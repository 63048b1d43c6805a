/**
 * License keys a person pastes into a shell: a key issued by the server must hold only
 * [A-Z0-9-] (a `*`, `~`, `$` or `=` check character is expanded or split by the shell, and
 * the pasted key silently becomes another), while a key issued before, whose check
 * character may be one of those, must still activate against the row that stored its
 * hash. Run on SQLite and PostgreSQL.
 */
import t, { type Test } from 'tap';
import { AUD_REFRESH_PROOF, LICENSE_KEY_ALPHABET, SHELL_SAFE_LICENSE_KEY_PATTERN } from '../../protocol/src/index.js';
import { hashLicenseKey } from '../../server/src/licenses.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';

/** A key as issued before: Crockford mod-37 check character, here forced to `symbol`. */
function legacyKeyEndingIn(symbol: string): string {
  const checks = LICENSE_KEY_ALPHABET + '*~$=U';
  for (;;) {
    let body = '';
    for (let i = 0; i < 19; i++) body += LICENSE_KEY_ALPHABET[Math.floor(Math.random() * 32)];
    let mod = 0;
    for (const ch of body) mod = (mod * 32 + LICENSE_KEY_ALPHABET.indexOf(ch)) % 37;
    if (checks[mod] === symbol) {
      const chars = body + symbol;
      return `AEGIS-${chars.match(/.{5}/g)!.join('-')}`;
    }
  }
}

function suite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let s: TestServer;
  let customerId = '';
  t.before(async () => {
    const databaseUrl = await newDatabase();
    s = await startTestServer(databaseUrl ? { databaseUrl } : {});
    customerId = (await s.req('POST', '/api/v1/customers', { name: 'Shell Paste Ltd' })).body.id;
  });
  t.teardown(() => s?.close());

  const issue = async (): Promise<{ id: string; key: string }> => {
    const r = await s.req('POST', '/api/v1/licenses', { customer_id: customerId, tier: 'server', license_type: 'perpetual', max_machines: 5 });
    return { id: r.body.id, key: r.body.license_key };
  };

  t.test('200 keys issued by the server hold only [A-Z0-9-]', async (t) => {
    const bad: string[] = [];
    for (let i = 0; i < 200; i++) {
      const { key } = await issue();
      if (!SHELL_SAFE_LICENSE_KEY_PATTERN.test(key) || !/^[A-Z0-9-]+$/.test(key)) bad.push(key);
    }
    t.same(bad, [], 'no issued key has a shell metacharacter');
  });

  for (const symbol of ['*', '~', '$', '=', 'U']) {
    t.test(`a key issued before with check character ${symbol} still activates and refreshes`, async (t) => {
      const lic = await issue();
      const old = legacyKeyEndingIn(symbol);
      // The row as it was stored when that key was issued: the hash of the canonical key.
      await s.app.ctx.db.updateTable('licenses').set({ key_hash: hashLicenseKey(old), key_suffix: old.slice(-5) }).where('id', '=', lic.id).execute();
      const host = new TestHost(`legacy-${symbol.charCodeAt(0)}`);
      const a = await s.req('POST', '/api/v1/activations', host.activation(old.toLowerCase()), { key: null });
      t.equal(a.status, 201, `activation with the old key (typed in lower case): ${JSON.stringify(a.body).slice(0, 200)}`);
      const r = await s.req('POST', `/api/v1/machines/${a.body.machine_id}/refresh`, { proof: host.proof(AUD_REFRESH_PROOF) }, { key: null });
      t.equal(r.status, 200, 'and its machine refreshes');
      const replaced = `${old.slice(0, -1)}${symbol === 'U' ? '*' : 'U'}`;
      const other = await s.req('POST', '/api/v1/activations', new TestHost('other').activation(replaced), { key: null });
      t.equal(other.status, 404, 'the same key with another check character is no key');
      t.equal((await s.req('POST', '/api/v1/activations', new TestHost('new').activation(lic.key), { key: null })).status, 404, 'the key first issued for the row is not it');
    });
  }
}

t.test('SQLite', async (t) => suite(t, async () => undefined));

t.test('PostgreSQL', async (t) => {
  if (!requireCapability(t, missingPostgres())) return;
  let pg: TestPostgres | undefined;
  t.before(async () => {
    pg = await startPostgres();
  });
  t.teardown(async () => {
    await pg?.stop();
  });
  t.test('server', async (t) => suite(t, () => pg!.newDatabase()));
});
