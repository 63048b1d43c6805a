/**
 * Attacks on hardware ids across customers: an attacker holding a cheap license of
 * customer A, who knows the hardware id of a host of customer B, activates first with that
 * hardware id and a host key of its own. B's genuine host must still activate with its own
 * key; the attacker's machine learns nothing of B's, and its proofs neither refresh nor
 * deactivate B's machine. Within one customer a hardware id stays bound to one host key
 * (`HOST_KEY_MISMATCH`). Run once per storage backend (hwid_squatting_sqlite.test.ts,
 * hwid_squatting_postgres.test.ts) against a real server on port 0.
 */
import type { Test } from 'tap';
import { AUD_DEACTIVATION_PROOF, AUD_REFRESH_PROOF } from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

/** A host with its own key that claims the hardware id `hwid` (proofs included). */
function impostor(name: string, hwid: string): TestHost {
  return Object.assign(new TestHost(name), { hardwareId: hwid });
}

export function hwidSquattingSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(async () => {
    await s?.close();
  });

  async function customer(name: string): Promise<string> {
    const c = await s.req('POST', '/api/v1/customers', { name: `${name} ${Math.random().toString(36).slice(2, 8)}` });
    if (c.status !== 201) throw new Error(`customer: ${c.status} ${JSON.stringify(c.body)}`);
    return c.body.id;
  }

  async function license(customerId: string, body: Record<string, unknown> = {}): Promise<{ id: string; key: string }> {
    const r = await s.req('POST', '/api/v1/licenses', { customer_id: customerId, tier: 'server', license_type: 'perpetual', max_machines: 3, ...body });
    if (r.status !== 201) throw new Error(`license issue: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id, key: r.body.license_key };
  }

  const activate = (h: TestHost, key: string) => s.req('POST', '/api/v1/activations', h.activation(key), { key: null });
  const validate = (token: string, extra: Record<string, unknown> = {}) =>
    s.req('POST', '/api/v1/licenses/validate', { token, ...extra }, { key: null });
  const refresh = (machineId: string, h: TestHost) =>
    s.req('POST', `/api/v1/machines/${machineId}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null });
  const deactivate = (machineId: string, h: TestHost) =>
    s.req('DELETE', `/api/v1/machines/${machineId}`, { proof: h.proof(AUD_DEACTIVATION_PROOF) }, { key: null });
  const machineOf = async (licenseId: string, machineId: string) =>
    (await s.req('GET', `/api/v1/licenses/${licenseId}/machines`)).body.items.find((m: { id: string }) => m.id === machineId);

  t.test("a hardware id claimed first by another customer's machine does not lock out the real host", async (t) => {
    const A = await customer('Attacker');
    const B = await customer('Victim');
    const cheap = await license(A, { tier: 'basic', max_machines: 1 });
    const real = await license(B);
    const victim = new TestHost('victim-db1');
    const squatter = impostor('squatter', victim.hardwareId);

    const squat = await activate(squatter, cheap.key);
    t.equal(squat.status, 201, "the attacker's own seat on its own license (a hardware id is only a claim)");

    const genuine = await activate(victim, real.key);
    t.equal(genuine.status, 201, `the real host activates with its own key: ${JSON.stringify(genuine.body)}`);
    t.not(genuine.body.machine_id, squat.body.machine_id, 'a machine of its own');
    t.notMatch(JSON.stringify(genuine.body), squat.body.machine_id, "the answer names nothing of the attacker's machine");
    t.notMatch(JSON.stringify(squat.body), genuine.body.machine_id);

    const vB = await validate(genuine.body.license_token, { hardware_id: victim.hardwareId });
    t.match(vB.body, { valid: true, code: 'VALID', claims: { license_id: real.id, sub: genuine.body.machine_id } }, "B's token is B's");
    const vA = await validate(squat.body.license_token);
    t.match(vA.body, { valid: true, claims: { license_id: cheap.id, sub: squat.body.machine_id } }, "A's token names only A's license and machine");

    // The attacker's key and the victim's hardware id: still not the victim's machine.
    const r = await refresh(genuine.body.machine_id, squatter);
    t.equal(r.status, 401, "the attacker's proof does not refresh B's machine");
    t.equal(r.body.error.code, 'PROOF_INVALID');
    t.notOk(r.body.license_token, 'and gets no token');
    const d = await deactivate(genuine.body.machine_id, squatter);
    t.equal(d.status, 401, "the attacker's proof does not deactivate B's machine");
    t.equal(d.body.error.code, 'PROOF_INVALID');
    t.equal((await machineOf(real.id, genuine.body.machine_id)).status, 'active', "B's machine is still active");

    // A limited admin key of A sees nothing of B's machine either.
    const keyA = (await s.app.apiKeys.create(`squatter-admin-${A.slice(0, 8)}`, [...SCOPES], A)).key;
    t.equal((await s.req('GET', `/api/v1/licenses/${real.id}/machines`, undefined, { key: keyA })).status, 404);
    t.equal((await s.req('DELETE', `/api/v1/machines/${genuine.body.machine_id}`, undefined, { key: keyA })).status, 404);

    // The attacker leaving takes nothing of B's with it.
    t.equal((await deactivate(squat.body.machine_id, squatter)).status, 200, 'the attacker deactivates its own machine');
    t.match((await validate(genuine.body.license_token)).body, { valid: true, code: 'VALID' }, "B's token still validates");
    const rb = await refresh(genuine.body.machine_id, victim);
    t.equal(rb.status, 200, "B's own proof still refreshes B's machine");
    t.equal((await activate(victim, real.key)).status, 200, 'and re-activation is idempotent');
  });

  t.test("activation answers reveal nothing about another customer's hardware ids", async (t) => {
    const A = await customer('Prober');
    const B = await customer('Target');
    const cheap = await license(A, { tier: 'basic', max_machines: 2 });
    const real = await license(B);
    const victim = new TestHost('target-web1');
    const genuine = await activate(victim, real.key);
    t.equal(genuine.status, 201);

    // Whether B's hardware id is in use or not, the prober gets the same answer.
    const probe = await activate(impostor('prober-1', victim.hardwareId), cheap.key);
    const control = await activate(new TestHost('prober-2'), cheap.key);
    t.equal(probe.status, 201, 'a hardware id active at another customer does not refuse');
    t.equal(control.status, 201);
    t.same(Object.keys(probe.body).sort(), Object.keys(control.body).sort(), 'the same shape of answer');

    const rows = await s.req('GET', `/api/v1/admin/audit-logs?license_id=${cheap.id}&limit=200`);
    t.ok(rows.body.items.length >= 2, "A's activations are audited");
    t.ok(
      rows.body.items.every((row: { outcome: string; machine_id: string | null }) => row.outcome !== 'refused' && row.machine_id !== genuine.body.machine_id),
      "A's audit rows never name B's machine",
    );
    t.equal((await machineOf(real.id, genuine.body.machine_id)).status, 'active');
    t.equal((await refresh(genuine.body.machine_id, victim)).status, 200, 'B refreshes as before');
  });

  t.test('within one customer a hardware id stays bound to its host key', async (t) => {
    const C = await customer('Single');
    const first = await license(C);
    const second = await license(C);
    const host = new TestHost('single-app1');
    const a = await activate(host, first.key);
    t.equal(a.status, 201);
    // Another customer's machine on the same hardware id does not change the rule.
    const X = await customer('Elsewhere');
    t.equal((await activate(impostor('elsewhere', host.hardwareId), (await license(X)).key)).status, 201);

    const thief = impostor('single-thief', host.hardwareId);
    for (const [name, key] of [['the same license', first.key], ['another license of the same customer', second.key]] as const) {
      const r = await activate(thief, key);
      t.equal(r.status, 409, name);
      t.equal(r.body.error.code, 'HOST_KEY_MISMATCH', name);
    }
    t.equal((await machineOf(first.id, a.body.machine_id)).status, 'active', 'the machine keeps its seat');
    t.equal((await s.req('GET', `/api/v1/licenses/${second.id}/machines`)).body.items.length, 0, 'the thief got no seat');

    // The same host (same key) may hold the hardware id under a second license of its customer.
    t.equal((await activate(host, second.key)).status, 201, 'the same host key on another license of the customer');
    t.equal((await activate(host, first.key)).status, 200, 're-activation stays idempotent');
  });
}
