/**
 * Fingerprints that survive real hardware, VM clones and containers, and entitlements,
 * against a real aegis-server once per storage backend (fingerprint_entitlements_sqlite.test.ts,
 * fingerprint_entitlements_postgres.test.ts).
 *
 * Attacks and failure cases: a host whose NIC was replaced must keep its seat under
 * `majority`, but a host that changed most of its components is another machine (a seat);
 * `all` allows no change; a VM clone (same machine-id and product UUID, its own host key)
 * must never slip in as, or share the identity of, the machine it was cloned from; a
 * container must not activate where containers are refused; entitlements must be in the
 * tokens, detachable at once, and unforgeable; hostile codes and component payloads are 400.
 */
import type { Test } from 'tap';
import { AUD_REFRESH_PROOF, KERNEL_ENTITLEMENT_BITS, type HardwareFacts } from '../../protocol/src/index.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const claimsOf = (token: string): Record<string, any> => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8'));

const HOST_FACTS: HardwareFacts = {
  machine_id: '4c4c4544004a3510804bc4c04f4e3232',
  system_uuid: '4c4c4544-004a-3510-804b-c4c04f4e3232',
  board_serial: 'CN7475158R0123',
  macs: ['52:54:00:12:34:01'],
};

export function fingerprintEntitlementsSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;
  let customerId: string;
  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
    customerId = (await s.req('POST', '/api/v1/customers', { name: 'Fingerprint customer' })).body.id;
  });
  t.teardown(() => s?.close());

  async function license(extra: Record<string, unknown> = {}): Promise<{ id: string; key: string; body: any }> {
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: customerId, tier: 'server', license_type: 'perpetual', max_machines: 1, ...extra });
    if (l.status !== 201) throw new Error(`license: ${l.status} ${JSON.stringify(l.body)}`);
    return { id: l.body.id, key: l.body.license_key, body: l.body };
  }
  const activate = (host: TestHost, key: string, extra: Record<string, unknown> = {}) => s.req('POST', '/api/v1/activations', host.fingerprintedActivation(key, extra), { key: null });
  const machines = async (licenseId: string) => (await s.req('GET', `/api/v1/licenses/${licenseId}/machines`)).body.items as any[];
  const refresh = (host: TestHost, machineId: string, key: string) =>
    s.req('POST', `/api/v1/machines/${machineId}/refresh`, { proof: host.proof(AUD_REFRESH_PROOF), hardware_id: host.hardwareId, components: host.components(key) }, { key: null });

  t.test('majority: a replaced NIC keeps the machine and its seat, on re-activation and on refresh', async (t) => {
    const l = await license({ fingerprint_match: 'majority' });
    t.equal(l.body.fingerprint_match, 'majority');
    const host = new TestHost('nic-swap', { ...HOST_FACTS, macs: ['52:54:00:aa:00:01'] });
    const first = await activate(host, l.key);
    t.equal(first.status, 201);
    const before = host.hardwareId;
    host.setFacts({ ...host.facts, macs: ['52:54:00:aa:00:02'] });
    t.not(host.hardwareId, before, 'the whole-host hardware id changed with the NIC');
    const again = await activate(host, l.key);
    t.equal(again.status, 200, 'the same machine, not a new seat (max_machines is 1)');
    t.equal(again.body.machine_id, first.body.machine_id);
    t.equal(claimsOf(again.body.license_token).hwid, host.hardwareId, 'tokens bind the host\'s hardware id now');
    t.equal(claimsOf(again.body.kernel_token).hwid, host.hardwareId);
    const [m] = await machines(l.id);
    t.equal(m.hardware_id, host.hardwareId);
    t.same(m.fingerprint_components, ['machine_id', 'product_uuid', 'board_serial', 'macs'], 'names only: no digest, no raw serial');
    t.notOk(JSON.stringify(m).includes('CN7475158R0123'));
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?event_type=machine.fingerprint_updated`);
    const rec = (audit.body.items as any[]).find((e) => e.event_type === 'machine.fingerprint_updated' && e.machine_id === m.id);
    t.ok(rec, 'the change is audited');
    t.same(rec?.event_data?.changed, ['macs']);

    // The disk is replaced next, and the host only refreshes.
    host.setFacts({ ...host.facts, disk_serials: ['WD-NEW-0001'] });
    const r = await refresh(host, m.id, l.key);
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.equal(claimsOf(r.body.license_token).hwid, host.hardwareId);
    t.equal((await machines(l.id))[0].hardware_id, host.hardwareId);
  });

  t.test('majority: two of three components changed is a new machine (a seat), and refresh refuses it', async (t) => {
    const l = await license({ fingerprint_match: 'majority' });
    const host = new TestHost('two-of-three', { machine_id: 'a1'.repeat(16), system_uuid: '11111111-2222-3333-4444-555555555555', macs: ['52:54:00:bb:00:01'] });
    const first = await activate(host, l.key);
    t.equal(first.status, 201);
    host.setFacts({ machine_id: 'b2'.repeat(16), system_uuid: host.facts.system_uuid, macs: ['52:54:00:bb:00:99'] });
    const r = await refresh(host, first.body.machine_id, l.key);
    t.equal(r.status, 409);
    t.equal(r.body.error.code, 'FINGERPRINT_MISMATCH');
    t.same(r.body.error.details.changed, ['machine_id', 'macs']);
    const again = await activate(host, l.key);
    t.equal(again.status, 409);
    t.equal(again.body.error.code, 'SEAT_LIMIT', 'a new machine needs a seat, and the only one is taken');
    t.equal((await machines(l.id)).length, 1);
  });

  t.test('all: any changed component is another machine', async (t) => {
    const l = await license({ fingerprint_match: 'all' });
    const host = new TestHost('strict', { ...HOST_FACTS, machine_id: 'c3'.repeat(16), system_uuid: '21111111-2222-3333-4444-555555555555' });
    const first = await activate(host, l.key);
    t.equal(first.status, 201);
    t.equal((await activate(host, l.key)).status, 200, 'unchanged hardware: the same machine');
    host.setFacts({ ...host.facts, macs: ['52:54:00:cc:00:02'] });
    const r = await refresh(host, first.body.machine_id, l.key);
    t.equal(r.body.error?.code, 'FINGERPRINT_MISMATCH');
    const again = await activate(host, l.key);
    t.equal(again.body.error?.code, 'SEAT_LIMIT');
  });

  t.test('a VM clone (same components, another host key) is refused under clone_policy refuse', async (t) => {
    const l = await license({ max_machines: 5 });
    t.equal(l.body.clone_policy, 'refuse', 'refuse is the default');
    const facts = { ...HOST_FACTS, machine_id: 'd4'.repeat(16), system_uuid: '31111111-2222-3333-4444-555555555555' };
    const original = await activate(new TestHost('vm-original', facts), l.key);
    t.equal(original.status, 201);
    const clone = await activate(new TestHost('vm-clone', facts), l.key);
    t.equal(clone.status, 409);
    t.equal(clone.body.error.code, 'MACHINE_CLONE_DETECTED');
    t.equal(clone.body.error.details.clone_policy, 'refuse');
    // A hypervisor gives the clone a new MAC: the whole-host hardware id differs, the
    // disk image's machine-id and the firmware UUID do not.
    const remac = await activate(new TestHost('vm-clone-2', { ...facts, macs: ['52:54:00:dd:00:77'] }), l.key);
    t.equal(remac.body.error?.code, 'MACHINE_CLONE_DETECTED');
    t.equal((await machines(l.id)).length, 1, 'no seat was taken');
  });

  t.test('a VM clone under clone_policy new_machine gets a machine and seat of its own', async (t) => {
    const l = await license({ max_machines: 2, clone_policy: 'new_machine' });
    const facts = { ...HOST_FACTS, machine_id: 'e5'.repeat(16), system_uuid: '41111111-2222-3333-4444-555555555555' };
    const originalHost = new TestHost('nm-original', facts);
    const original = await activate(originalHost, l.key);
    const cloneHost = new TestHost('nm-clone', facts);
    const clone = await activate(cloneHost, l.key);
    t.equal(clone.status, 201);
    t.not(clone.body.machine_id, original.body.machine_id, 'never the original\'s identity');
    t.equal(claimsOf(clone.body.license_token).cnf.jkt, claimsOf(clone.body.license_token).cnf.jkt);
    t.not(claimsOf(clone.body.license_token).cnf.jkt, claimsOf(original.body.license_token).cnf.jkt, 'bound to the clone\'s own host key');
    const ms = await machines(l.id);
    t.equal(ms.find((m) => m.id === clone.body.machine_id)?.clone_of, original.body.machine_id);
    const third = await activate(new TestHost('nm-clone-3', facts), l.key);
    t.equal(third.body.error?.code, 'SEAT_LIMIT', 'each clone takes a seat');
    t.equal((await activate(originalHost, l.key)).body.machine_id, original.body.machine_id, 'the original is still itself');
  });

  t.test('a container host is refused when allow_containers is false', async (t) => {
    const l = await license({ allow_containers: false, max_machines: 3 });
    t.equal(l.body.allow_containers, false);
    const c = await activate(new TestHost('in-docker'), l.key, { environment: 'container' });
    t.equal(c.status, 403);
    t.equal(c.body.error.code, 'CONTAINER_NOT_ALLOWED');
    const h = await activate(new TestHost('on-metal'), l.key, { environment: 'host' });
    t.equal(h.status, 201);
    t.equal((await machines(l.id))[0].environment, 'host');
    const allowed = await license({ max_machines: 3 });
    t.equal((await activate(new TestHost('in-docker-ok'), allowed.key, { environment: 'container' })).status, 201, 'allowed by default');
  });

  t.test('entitlements are in the tokens, in validate, in fmask, and follow attach/detach at once', async (t) => {
    const l = await license({ entitlements: ['reports.export', 'kernel.usb_guard'], max_machines: 2 });
    t.same(l.body.entitlements, ['kernel.usb_guard', 'reports.export']);
    const a = await activate(new TestHost('entitled'), l.key);
    t.same(claimsOf(a.body.license_token).entitlements, ['kernel.usb_guard', 'reports.export']);
    const k = claimsOf(a.body.kernel_token);
    t.ok(k.fmask & (1 << KERNEL_ENTITLEMENT_BITS['kernel.usb_guard']!), 'kernel.usb_guard sets its fmask bit');
    t.ok(k.fmask & (1 << 12), 'tier features keep their bits');
    t.notOk('entitlements' in k, 'the kernel token keeps its flat claim set');
    const token = a.body.license_token as string;
    const v = (entitlements?: string[]) => s.req('POST', '/api/v1/licenses/validate', { token, ...(entitlements ? { entitlements } : {}) }, { key: null });
    const ok = await v(['reports.export']);
    t.equal(ok.body.code, 'VALID');
    t.same(ok.body.entitlements, ['kernel.usb_guard', 'reports.export']);
    const missing = await v(['reports.export', 'sso']);
    t.equal(missing.body.code, 'ENTITLEMENT_MISSING');
    t.equal(missing.body.valid, false);
    t.match(missing.body.message, /sso/);
    const att = await s.req('POST', `/api/v1/licenses/${l.id}/entitlements`, { entitlements: ['sso'] });
    t.equal(att.status, 200);
    t.same(att.body.entitlements, ['kernel.usb_guard', 'reports.export', 'sso']);
    t.equal((await v(['sso'])).body.code, 'VALID', 'attached: valid at once');
    const det = await s.req('DELETE', `/api/v1/licenses/${l.id}/entitlements`, { entitlements: ['reports.export'] });
    t.same(det.body.entitlements, ['kernel.usb_guard', 'sso']);
    t.equal((await v(['reports.export'])).body.code, 'ENTITLEMENT_MISSING', 'detached: missing at once, whatever the token says');
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?license_id=${l.id}`);
    const types = (audit.body.items as any[]).map((e) => e.event_type);
    t.ok(types.includes('license.entitlements_attached') && types.includes('license.entitlements_detached'), 'both audited');

    // A module license's token carries them too, and is re-signed when they change.
    const mod = await license({ module_name: 'biz4a_payroll', entitlements: ['payroll.multi_company'] });
    t.same(claimsOf(mod.body.token).entitlements, ['payroll.multi_company']);
    await s.req('POST', `/api/v1/licenses/${mod.id}/entitlements`, { entitlements: ['payroll.audit'] });
    const got = await s.req('GET', `/api/v1/licenses/${mod.id}`);
    t.same(claimsOf(got.body.token).entitlements, ['payroll.audit', 'payroll.multi_company']);
    const mv = await s.req('POST', '/api/v1/licenses/validate', { token: got.body.token, entitlements: ['payroll.audit'] }, { key: null });
    t.equal(mv.body.code, 'VALID');
  });

  t.test('a token whose entitlements were tampered with does not verify', async (t) => {
    const l = await license({ entitlements: ['basic.reports'] });
    const a = await activate(new TestHost('tamper'), l.key);
    const [h, p, sig] = (a.body.license_token as string).split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString('utf8'));
    claims.entitlements = ['basic.reports', 'everything'];
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
    const r = await s.req('POST', '/api/v1/licenses/validate', { token: forged, entitlements: ['everything'] }, { key: null });
    t.equal(r.body.code, 'SIGNATURE_INVALID');
    t.equal(r.body.valid, false);
    const k = a.body.kernel_token as string;
    const [kh, kp, ks] = k.split('.');
    const kc = JSON.parse(Buffer.from(kp!, 'base64url').toString('utf8'));
    kc.fmask = kc.fmask | (1 << 26);
    const kr = await s.req('POST', '/api/v1/licenses/validate', { token: `${kh}.${Buffer.from(JSON.stringify(kc)).toString('base64url')}.${ks}` }, { key: null });
    t.equal(kr.body.code, 'SIGNATURE_INVALID', 'a raised fmask bit breaks the kernel token\'s signature');
  });

  t.test('hostile entitlement codes and component payloads are 400 naming the field', async (t) => {
    const l = await license({ max_machines: 3 });
    const bad: unknown[] = [['UPPER'], ['has space'], [''], ['x'.repeat(65)], ['ok', 'ok'], [42], ['a;rm -rf'], Array.from({ length: 65 }, (_, i) => `e${i}`), [], 'sso'];
    for (const entitlements of bad) {
      const r = await s.req('POST', `/api/v1/licenses/${l.id}/entitlements`, { entitlements });
      t.equal(r.status, 400, `attach ${JSON.stringify(entitlements).slice(0, 40)}`);
      t.equal(r.body.error.code, 'VALIDATION_FAILED');
    }
    const issue = await s.req('POST', '/api/v1/licenses', { customer_id: customerId, tier: 'server', license_type: 'perpetual', entitlements: ['Bad'] });
    t.equal(issue.status, 400);
    t.match(JSON.stringify(issue.body.error.details), /entitlements/);
    const val = await s.req('POST', '/api/v1/licenses/validate', { token: 'x.y.z', entitlements: ['NOPE'] }, { key: null });
    t.equal(val.status, 400);
    // Sixty-four at most on a license, across requests.
    t.equal((await s.req('POST', `/api/v1/licenses/${l.id}/entitlements`, { entitlements: Array.from({ length: 64 }, (_, i) => `a${i}`) })).status, 200);
    const over = await s.req('POST', `/api/v1/licenses/${l.id}/entitlements`, { entitlements: ['one.more'] });
    t.equal(over.status, 400);
    t.equal(over.body.error.code, 'VALIDATION_FAILED');

    const host = new TestHost('hostile');
    const good = host.components(l.key);
    const digest = 'ab'.repeat(32);
    const hostile: Record<string, unknown>[] = [
      { components: { ...good, serial_of_my_choice: digest } },
      { components: { machine_id: 'not-hex-'.repeat(8) } },
      { components: { machine_id: 'AB'.repeat(32) } },
      { components: { machine_id: digest + 'ab' } },
      { components: { machine_id: 'CN7475158R0123' } },
      { components: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`c${i}`, digest])) },
      { components: { macs: [digest] } },
      { components: 'machine_id' },
      { environment: 'bare-metal' },
    ];
    for (const extra of hostile) {
      const r = await s.req('POST', '/api/v1/activations', host.activation(l.key, extra), { key: null });
      t.equal(r.status, 400, JSON.stringify(extra).slice(0, 60));
      t.equal(r.body.error.code, 'VALIDATION_FAILED');
    }
    const act = await activate(host, l.key);
    t.equal(act.status, 201);
    const r = await s.req('POST', `/api/v1/machines/${act.body.machine_id}/refresh`, { proof: host.proof(AUD_REFRESH_PROOF), components: { machine_id: 'zz' } }, { key: null });
    t.equal(r.status, 400, 'refresh checks components too');
  });
}
