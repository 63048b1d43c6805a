/**
 * Attacks across tenants: an admin API key limited to customer A (with every scope) tries
 * to read and change customer B's customers, licenses, machines, audit rows, stats and
 * segmentation snapshots. Reads of B answer 404 or leave B out of lists, writes against B
 * are refused and B's rows are the same afterwards (checked with the unrestricted key),
 * and A's own operations all work. Run once per storage backend (tenancy_sqlite.test.ts,
 * tenancy_postgres.test.ts) against a real server on port 0.
 */
import type { Test } from 'tap';
import { SCOPES } from '../../server/src/api_keys.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const snap = (service_id: number) => ({
  version: 1,
  service_id,
  edges: [{ dst_cidr: '10.20.0.0/24', proto: 'tcp', port: 443 }],
  allow_cidrs: [{ cidr: '0.0.0.0/0', proto: 'tcp', port: 22 }],
  ttl_seconds: 1800,
});

interface Tenant {
  customerId: string;
  licenseId: string;
  machineId: string;
  /** A second machine, for the deactivation attempts. */
  spareMachineId: string;
  host: string;
}

export function tenancySuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;
  let keyA: string;
  let A: Tenant;
  let B: Tenant;

  async function tenant(name: string): Promise<Tenant> {
    const c = await s.req('POST', '/api/v1/customers', { name: `Tenant ${name}` });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', max_machines: 5 });
    const host = `tenant-${name}-web1`;
    const a1 = await s.req('POST', '/api/v1/activations', new TestHost(host).activation(l.body.license_key), { key: null });
    const a2 = await s.req('POST', '/api/v1/activations', new TestHost(`tenant-${name}-spare`).activation(l.body.license_key), { key: null });
    if (a1.status !== 201 || a2.status !== 201) throw new Error(`activation: ${a1.status} ${a2.status}`);
    return { customerId: c.body.id, licenseId: l.body.id, machineId: a1.body.machine_id, spareMachineId: a2.body.machine_id, host };
  }

  const asA = (method: string, path: string, body?: unknown) => s.req(method, path, body, { key: keyA });

  /** B's rows as the unrestricted key sees them, to compare before and after the attacks. */
  async function stateOfB(): Promise<unknown> {
    return {
      customer: (await s.req('GET', `/api/v1/customers/${B.customerId}`)).body,
      license: (await s.req('GET', `/api/v1/licenses/${B.licenseId}`)).body,
      machines: (await s.req('GET', `/api/v1/licenses/${B.licenseId}/machines`)).body,
      licenses: (await s.req('GET', `/api/v1/licenses?customer_id=${B.customerId}`)).body.total,
      seg: (await s.req('GET', '/seg/maps/900')).body,
    };
  }

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
    A = await tenant('a');
    B = await tenant('b');
    keyA = (await s.app.apiKeys.create('tenant-a-admin', [...SCOPES], A.customerId)).key;
    // Both hosts have reported (as their agents would over NATS).
    for (const [host, machine] of [[A.host, A.machineId], [B.host, B.machineId]] as const) {
      await s.app.ctx.db
        .insertInto('agents')
        .values({ machine_id: machine, hostname: host, status: 'null', applied: '{}', last_seen_at: new Date().toISOString() })
        .execute();
    }
    // B's segmentation service, put there by the unrestricted key.
    const sub = await s.req('POST', `/seg/maps?target_host=${B.host}`, snap(900));
    if (sub.status !== 200) throw new Error(`seg submit: ${sub.status} ${JSON.stringify(sub.body)}`);
    const sub2 = await s.req('POST', `/seg/maps?target_host=${B.host}`, snap(900));
    if (sub2.status !== 200) throw new Error(`seg submit: ${sub2.status}`);
  });
  t.teardown(() => s?.close());

  t.test("reads of B's rows answer 404 or leave them out", async (t) => {
    const unknown = await asA('GET', '/api/v1/customers/00000000-0000-0000-0000-000000000000');
    const other = await asA('GET', `/api/v1/customers/${B.customerId}`);
    t.equal(other.status, 404, "B's customer is not found");
    t.same(other.body, unknown.body, 'the same answer as an unknown id: ids cannot be probed');

    const customers = await asA('GET', '/api/v1/customers');
    t.same(customers.body.items.map((c: { id: string }) => c.id), [A.customerId], 'customer list holds only A');
    t.equal(customers.body.total, 1);

    t.equal((await asA('GET', `/api/v1/licenses/${B.licenseId}`)).status, 404, "B's license");
    t.equal((await asA('GET', `/api/v1/licenses/${B.licenseId}/machines`)).status, 404, "B's license machines");
    const licenses = await asA('GET', '/api/v1/licenses');
    t.same(licenses.body.items.map((l: { id: string }) => l.id), [A.licenseId], 'license list holds only A');
    const asked = await asA('GET', `/api/v1/licenses?customer_id=${B.customerId}`);
    t.equal(asked.body.total, 0, "filtering for B's customer finds nothing");

    const audit = await asA('GET', '/api/v1/admin/audit-logs?limit=200');
    t.equal(audit.status, 200);
    t.ok(audit.body.items.length > 0, "A's own audit rows are there");
    t.ok(
      audit.body.items.every((r: { customer_id: string | null }) => r.customer_id === A.customerId),
      'every audit row is of customer A',
    );
    t.equal((await asA('GET', `/api/v1/admin/audit-logs?customer_id=${B.customerId}`)).body.total, 0, "asking for B's audit rows finds none");

    const stats = await asA('GET', '/api/v1/admin/stats');
    t.equal(stats.body.customers.total, 1, 'stats count only customer A');
    t.equal(stats.body.licenses.total, 1);
    t.equal(stats.body.machines.active, 2, "only A's two machines");
    const all = await s.req('GET', '/api/v1/admin/stats');
    t.ok(all.body.machines.active >= 4, 'the unrestricted key counts every customer');

    const seg = await asA('GET', '/seg/maps');
    t.ok(seg.body.current.every((c: { target: string }) => c.target !== B.machineId && c.target !== '_all'), "GET /seg/maps shows none of B's targets");
    t.equal((await asA('GET', '/seg/maps/900')).status, 404, "B's service history is not found");
    t.equal((await asA('GET', `/api/v1/agents/${B.machineId}`)).status, 404, "B's agent is not found");
    const agents = await asA('GET', '/api/v1/agents');
    t.same(agents.body.items.map((a: { host: string }) => a.host), [A.host], "agent list holds only A's host");
    t.same(seg.body.hosts.map((h: { host: string }) => h.host), [A.host], "GET /seg/maps hosts hold only A's host");
    t.equal((await asA('GET', `/api/v1/agents/${A.machineId}`)).status, 200, "A's agent");
    t.equal((await asA('GET', `/api/v1/seg/flows/900`)).body.items.length, 0, "B's flows are not listed");
  });

  t.test("writes against B are refused and B's rows are unchanged", async (t) => {
    const before = await stateOfB();

    t.equal((await asA('PATCH', `/api/v1/customers/${B.customerId}`, { name: 'pwned' })).status, 404, 'patch B');
    t.equal((await asA('DELETE', `/api/v1/customers/${B.customerId}?force=true`)).status, 404, 'delete B');
    t.equal((await asA('DELETE', `/api/v1/licenses/${B.licenseId}/revoke`, { reason: 'pwned' })).status, 404, "revoke B's license");
    t.equal((await asA('DELETE', `/api/v1/machines/${B.spareMachineId}`)).status, 404, "deactivate B's machine");
    const issue = await asA('POST', '/api/v1/licenses', { customer_id: B.customerId, tier: 'server', license_type: 'perpetual' });
    t.equal(issue.status, 404, 'issue a license for B: B is not found');
    const create = await asA('POST', '/api/v1/customers', { name: 'Shadow tenant' });
    t.equal(create.status, 403, 'a restricted key cannot create customers');

    const toB = await asA('POST', `/seg/maps?target_host=${B.host}`, snap(901));
    t.equal(toB.status, 404, "a snapshot targeting B's host");
    t.match(toB.body.error?.message ?? '', B.host, 'the refusal names the host');
    const mixed = await asA('POST', `/seg/maps?target_host=${A.host},${B.host}`, snap(902));
    t.equal(mixed.status, 404, "A's host and B's host together");
    const byId = await asA('POST', `/seg/maps?target_machine=${B.machineId}`, snap(902));
    t.equal(byId.status, 404, "B's machine by id");
    t.equal((await asA('POST', '/seg/maps', snap(903))).status, 403, 'no target (every host, _all) is refused');
    t.equal((await asA('POST', '/seg/maps?target_host=nobody-host', snap(904))).status, 404, 'a host of no machine');
    t.equal((await asA('POST', '/seg/maps/promote', { service_id: 900 })).status, 404, "promote B's service");
    t.equal((await asA('POST', '/seg/maps/rollback', { service_id: 900 })).status, 404, "roll back B's service");
    for (const id of [901, 902, 903, 904]) t.equal((await s.req('GET', `/seg/maps/${id}`)).status, 404, `nothing stored for service ${id}`);

    // A service targeting _all (the unrestricted key's) is not A's to promote either.
    await s.req('POST', '/seg/maps', snap(905));
    t.equal((await asA('POST', '/seg/maps/promote', { service_id: 905 })).status, 404, 'promote an _all service');

    t.same(await stateOfB(), before, "B's customer, license, machines and snapshots are unchanged");
    const b = await s.req('GET', `/api/v1/licenses/${B.licenseId}/machines`);
    t.ok(b.body.items.every((m: { status: string }) => m.status === 'active'), "B's machines are still active");

    // B activates a machine under A's hostname. A's key resolves the name among A's own
    // machines, so its snapshot reaches A's machine only; the unrestricted key, which sees
    // both, is told the name is ambiguous.
    const lB = await s.req('POST', '/api/v1/licenses', { customer_id: B.customerId, tier: 'server', license_type: 'perpetual' });
    const clash = await s.req('POST', '/api/v1/activations', new TestHost(A.host).activation(lB.body.license_key), { key: null });
    t.equal(clash.status, 201);
    const shared = await asA('POST', `/seg/maps?target_host=${A.host}`, snap(906));
    t.equal(shared.status, 200, JSON.stringify(shared.body));
    t.same(shared.body.target_machines, [A.machineId], "A's snapshot is for A's machine only, not B's namesake");
    t.equal((await asA('GET', `/api/v1/agents/${A.machineId}`)).status, 200, "A's agent stays visible");
    const ambiguous = await s.req('POST', `/seg/maps?target_host=${A.host}`, snap(907));
    t.equal(ambiguous.status, 409, 'the unrestricted key must pick a machine');
    t.same(ambiguous.body.error.details.ambiguous[A.host].map((c: { machine_id: string }) => c.machine_id).sort(), [A.machineId, clash.body.machine_id].sort());
    t.equal((await s.req('DELETE', `/api/v1/machines/${clash.body.machine_id}`)).status, 200);
    t.equal((await s.req('DELETE', `/api/v1/licenses/${lB.body.id}/revoke`, { reason: 'test' })).status, 200);
  });

  t.test('there is no HTTP route for API keys', async (t) => {
    for (const [method, path] of [
      ['GET', '/api/v1/api-keys'],
      ['POST', '/api/v1/api-keys'],
      ['GET', '/api/v1/admin/api-keys'],
      ['POST', '/api/v1/admin/api-keys'],
      ['GET', '/api/v1/admin/keys'],
      ['POST', '/api/v1/admin/keys'],
    ] as const) {
      const r = await asA(method, path, method === 'POST' ? { name: 'x', scopes: [...SCOPES] } : undefined);
      t.equal(r.status, 404, `${method} ${path}`);
    }
    const keys = await s.app.apiKeys.list();
    t.equal(keys.length, 2, 'no key was created');
  });

  t.test("A's own operations all work", async (t) => {
    t.equal((await asA('GET', `/api/v1/customers/${A.customerId}`)).status, 200);
    t.equal((await asA('PATCH', `/api/v1/customers/${A.customerId}`, { company: 'A Corp' })).status, 200);
    t.equal((await asA('GET', `/api/v1/licenses/${A.licenseId}`)).status, 200);
    t.equal((await asA('GET', `/api/v1/licenses/${A.licenseId}/machines`)).body.items.length, 2);
    const issued = await asA('POST', '/api/v1/licenses', { customer_id: A.customerId, tier: 'server', license_type: 'perpetual' });
    t.equal(issued.status, 201, 'issue for A');
    t.equal((await asA('DELETE', `/api/v1/licenses/${issued.body.id}/revoke`, { reason: 'test' })).status, 200, "revoke A's license");
    t.equal((await asA('DELETE', `/api/v1/machines/${A.spareMachineId}`)).status, 200, "deactivate A's machine");

    const sub = await asA('POST', `/seg/maps?target_host=${A.host}`, snap(910));
    t.equal(sub.status, 200, "a snapshot for A's host");
    t.same(sub.body.target_hosts, [A.host]);
    t.same(sub.body.target_machines, [A.machineId]);
    t.equal((await asA('POST', `/seg/maps?target_host=tenant-a-spare`, snap(911))).status, 404, "A's deactivated machine is no target");
    t.equal((await asA('POST', `/seg/maps?target_host=${A.host}`, snap(910))).status, 200);
    t.equal((await asA('POST', '/seg/maps/promote', { service_id: 910 })).status, 200, "promote A's service");
    t.equal((await asA('POST', '/seg/maps/rollback', { service_id: 910 })).status, 200, "roll back A's service");
    t.equal((await asA('GET', '/seg/maps/910')).status, 200, "A's service history");
    const seg = await asA('GET', '/seg/maps');
    t.ok(seg.body.current.some((c: { target: string; service_id: number }) => c.service_id === 910 && c.target === A.machineId), "A's target is listed");

    t.equal((await asA('DELETE', `/api/v1/customers/${A.customerId}?force=true`)).status, 204, 'A may delete itself');
    t.equal((await s.req('GET', `/api/v1/customers/${B.customerId}`)).status, 200, 'B is still there');
  });
}
