/**
 * Attack: hostile text in ids, filters and body strings (NUL bytes, other control
 * characters, invalid percent-encoding, overlong ids). PostgreSQL refuses NUL in text
 * (22021) and would turn such input into a 500; SQLite would store it. Every such request
 * must be refused at the edge on both databases: 400 VALIDATION_FAILED naming the field,
 * in the error envelope, never a 500, and nothing written.
 */
import t, { type Test } from 'tap';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';
import { requireCapability } from '../harness/capabilities.js';
import { missingPostgres, startPostgres, type TestPostgres } from '../harness/postgres.js';

interface Case {
  method: string;
  path: string;
  body?: unknown;
  /** The field the refusal must name: a path parameter, a query parameter or a JSON pointer. */
  field: string;
}

function suite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let s: TestServer;
  let customerId = '';
  let licenseId = '';
  let licenseKey = '';
  t.before(async () => {
    const databaseUrl = await newDatabase();
    s = await startTestServer(databaseUrl ? { databaseUrl } : {});
    customerId = (await s.req('POST', '/api/v1/customers', { name: 'Hostile Input Ltd' })).body.id;
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: customerId, tier: 'server', license_type: 'perpetual', max_machines: 3 });
    licenseId = l.body.id;
    licenseKey = l.body.license_key;
  });
  t.teardown(() => s?.close());

  async function counts(): Promise<number[]> {
    const paths = ['/api/v1/customers?limit=1', '/api/v1/licenses?limit=1', '/api/v1/admin/audit-logs?limit=1'];
    const totals = [];
    for (const p of paths) totals.push((await s.req('GET', p)).body.total as number);
    totals.push((await s.req('GET', `/api/v1/licenses/${licenseId}/machines`)).body.items.length as number);
    return totals;
  }

  function cases(): Case[] {
    const nul = 'a%00b';
    const long = 'a'.repeat(5000);
    const host = new TestHost('hostile-host');
    return [
      // Path parameters.
      { method: 'GET', path: `/api/v1/customers/${nul}`, field: 'id' },
      { method: 'PATCH', path: `/api/v1/customers/${nul}`, body: { name: 'x' }, field: 'id' },
      { method: 'DELETE', path: `/api/v1/customers/${nul}`, field: 'id' },
      { method: 'GET', path: `/api/v1/licenses/${nul}`, field: 'id' },
      { method: 'GET', path: `/api/v1/licenses/${nul}/machines`, field: 'id' },
      { method: 'DELETE', path: `/api/v1/licenses/${nul}/revoke`, body: { reason: 'x' }, field: 'id' },
      { method: 'POST', path: `/api/v1/machines/${nul}/refresh`, body: { proof: 'x' }, field: 'id' },
      { method: 'DELETE', path: `/api/v1/machines/${nul}`, field: 'id' },
      { method: 'GET', path: `/api/v1/agents/${nul}`, field: 'machine_id' },
      { method: 'GET', path: `/api/v1/machines/${nul}/snapshots`, field: 'id' },
      { method: 'GET', path: `/seg/maps/${nul}`, field: 'service_id' },
      { method: 'GET', path: '/api/v1/customers/a%01b', field: 'id' },
      { method: 'GET', path: '/api/v1/customers/a%0Ab', field: 'id' },
      { method: 'GET', path: '/api/v1/customers/%ff', field: 'id' },
      { method: 'GET', path: '/api/v1/licenses/%E0%A4%A', field: 'id' },
      { method: 'GET', path: `/api/v1/customers/${long}`, field: 'id' },
      { method: 'GET', path: `/api/v1/agents/${long}`, field: 'machine_id' },
      // Query filters.
      { method: 'GET', path: `/api/v1/customers?q=${nul}`, field: 'q' },
      { method: 'GET', path: `/api/v1/customers?email=${nul}`, field: 'email' },
      { method: 'GET', path: '/api/v1/customers?q=%ff', field: 'q' },
      { method: 'GET', path: `/api/v1/customers?q=${'x'.repeat(5000)}`, field: 'q' },
      { method: 'GET', path: `/api/v1/licenses?customer_id=${nul}`, field: 'customer_id' },
      { method: 'GET', path: `/api/v1/licenses?tier=${nul}`, field: 'tier' },
      { method: 'GET', path: `/api/v1/licenses?license_type=${nul}`, field: 'license_type' },
      { method: 'GET', path: `/api/v1/admin/audit-logs?event_type=${nul}`, field: 'event_type' },
      { method: 'GET', path: `/api/v1/admin/audit-logs?license_id=${nul}`, field: 'license_id' },
      { method: 'GET', path: `/api/v1/admin/audit-logs?customer_id=${nul}`, field: 'customer_id' },
      { method: 'GET', path: `/api/v1/admin/audit-logs?since=2020-01-01${'%00'}`, field: 'since' },
      { method: 'GET', path: `/api/v1/agents?x${'%00'}=1`, field: 'x\u0000' },
      { method: 'POST', path: `/seg/maps?target_host=${nul}`, body: { service_id: 101, version: 1, mode: 'observe', edges: [] }, field: 'target_host' },
      { method: 'POST', path: `/seg/maps?target_machine=${nul}`, body: { service_id: 101, version: 1, mode: 'observe', edges: [] }, field: 'target_machine' },
      // JSON body strings.
      { method: 'POST', path: '/api/v1/customers', body: { name: 'a\u0000b' }, field: '/name' },
      { method: 'POST', path: '/api/v1/customers', body: { name: 'ok', email: 'a\u0000b@example.com' }, field: '/email' },
      { method: 'POST', path: '/api/v1/customers', body: { name: 'ok', company: 'a\u0000b' }, field: '/company' },
      { method: 'POST', path: '/api/v1/customers', body: { ['na\u0000me']: 'x' }, field: '/na\u0000me' },
      { method: 'PATCH', path: `/api/v1/customers/${customerId}`, body: { name: 'a\u0000b' }, field: '/name' },
      { method: 'POST', path: '/api/v1/licenses', body: { customer_id: 'a\u0000b', tier: 'server', license_type: 'perpetual' }, field: '/customer_id' },
      { method: 'POST', path: '/api/v1/licenses', body: { customer_id: customerId, tier: 'server', license_type: 'perpetual', fleet: 'f\u0000' }, field: '/fleet' },
      { method: 'DELETE', path: `/api/v1/licenses/${licenseId}/revoke`, body: { reason: 'a\u0000b' }, field: '/reason' },
      { method: 'POST', path: '/api/v1/licenses/validate', body: { token: 'a\u0000b' }, field: '/token' },
      { method: 'POST', path: '/api/v1/activations', body: host.activation(licenseKey, { hostname: 'a\u0000b' }), field: '/hostname' },
      { method: 'POST', path: '/api/v1/activations', body: host.activation(licenseKey, { agent_version: '1\u0000' }), field: '/agent_version' },
      { method: 'POST', path: '/api/v1/activations', body: host.activation(`${licenseKey}\u0000`), field: '/license_key' },
      { method: 'POST', path: '/api/v1/activations', body: host.activation(licenseKey, { hardware_id: 'a\u0000b' }), field: '/hardware_id' },
      { method: 'POST', path: '/api/v1/agent/token', body: { machine_id: 'a\u0000b', proof: 'x' }, field: '/machine_id' },
      { method: 'POST', path: '/api/v1/agent/status', body: { hostname: 'h', nested: [{ deep: ['a\u0000b'] }] }, field: '/nested/0/deep/0' },
    ];
  }

  t.test('every hostile input is 400 VALIDATION_FAILED naming the field, and nothing is written', async (t) => {
    const before = await counts();
    for (const c of cases()) {
      const r = await s.req(c.method, c.path, c.body);
      const what = `${c.method} ${c.path.slice(0, 80)}${c.body === undefined ? '' : ` ${JSON.stringify(c.body).slice(0, 80)}`}`;
      t.equal(r.status, 400, `${what}: 400 (got ${r.status} ${JSON.stringify(r.body).slice(0, 160)})`);
      t.equal(r.body?.error?.code, 'VALIDATION_FAILED', `${what}: VALIDATION_FAILED in the error envelope`);
      const fields = Array.isArray(r.body?.error?.details) ? r.body.error.details.map((p: { path: string }) => p.path) : [];
      t.ok(fields.includes(c.field), `${what}: names ${JSON.stringify(c.field)} (named ${JSON.stringify(fields)})`);
    }
    t.same(await counts(), before, 'no customer, license, machine or audit record was written');
  });

  t.test('honest input with text beyond ASCII still works', async (t) => {
    const r = await s.req('POST', '/api/v1/customers', { name: 'Zürich Ünïcode 株式会社', company: 'line one\nline two\ttab' });
    t.equal(r.status, 201);
    const q = await s.req('GET', `/api/v1/customers?q=${encodeURIComponent('Zürich')}`);
    t.equal(q.status, 200);
    t.equal(q.body.total, 1);
  });
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
