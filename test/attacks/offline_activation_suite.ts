/**
 * Offline (air-gapped) activation and deactivation against a real aegis-server: a request
 * file signed by the host key becomes a machine-bound license file, a release file frees
 * the seat; and what an attacker can make of the files (a changed byte, another key, a
 * replay, another customer's license, an old file, one seat too many, hostile bodies) is
 * refused with a clear code, without a seat taken or a nonce spent.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import {
  AUD_ACTIVATION_PROOF,
  OFFLINE_RELEASE_FORMAT,
  OFFLINE_RELEASE_TYP,
  OFFLINE_REQUEST_FORMAT,
  OFFLINE_REQUEST_TYP,
  jwkThumbprint,
  newOfflineNonce,
  signOfflineJws,
} from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

const ACT = '/api/v1/machines/offline-activations';
const REL = '/api/v1/machines/offline-deactivations';

function requestClaims(host: TestHost, licenseKey: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    license_key: licenseKey,
    hardware_id: host.hardwareId,
    components: host.components(licenseKey),
    environment: 'host',
    host_public_key: host.jwk,
    hostname: host.name,
    agent_version: '1.2.0',
    nonce: newOfflineNonce(),
    iat: Math.floor(Date.now() / 1000),
    ...extra,
  };
}

function requestFile(host: TestHost, licenseKey: string, extra: Record<string, unknown> = {}, signer: KeyObject = host.privateKey) {
  return { format: OFFLINE_REQUEST_FORMAT, jws: signOfflineJws(signer, OFFLINE_REQUEST_TYP, requestClaims(host, licenseKey, extra)) };
}

function releaseFile(host: TestHost, machineId: string, extra: Record<string, unknown> = {}, signer: KeyObject = host.privateKey) {
  const claims = { machine_id: machineId, hardware_id: host.hardwareId, host_key_thumbprint: jwkThumbprint(host.jwk), nonce: newOfflineNonce(), iat: Math.floor(Date.now() / 1000), ...extra };
  return { format: OFFLINE_RELEASE_FORMAT, jws: signOfflineJws(signer, OFFLINE_RELEASE_TYP, claims) };
}

/** The JWS with its payload replaced by `mutate(payload)`, the original signature kept. */
function tamperPayload(jws: string, mutate: (p: Record<string, unknown>) => void): string {
  const [h, p, s] = jws.split('.') as [string, string, string];
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
  mutate(payload);
  return `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
}

export function offlineActivationSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  t.before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-offline-'));
  });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let s: TestServer;
  t.before(async () => {
    const databaseUrl = (await newDatabase()) ?? `sqlite:${join(dir, 'aegis.db')}`;
    s = await startTestServer({ databaseUrl });
  });
  t.teardown(() => s?.close());

  const newLicense = async (opts: Record<string, unknown> = {}) => {
    const customer = (await s.req('POST', '/api/v1/customers', { name: `offline ${Math.random()}` })).body;
    const lic = await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual', max_machines: 5, ...opts });
    if (lic.status !== 201) throw new Error(JSON.stringify(lic.body));
    return { customerId: customer.id as string, licenseId: lic.body.id as string, key: lic.body.license_key as string };
  };
  const activeMachines = async (licenseId: string) =>
    ((await s.req('GET', `/api/v1/licenses/${licenseId}/machines`)).body.items as Array<{ status: string }>).filter((m) => m.status === 'active').length;

  t.test('a request file becomes a machine-bound license file; the release frees the seat', async (t) => {
    const lic = await newLicense({ entitlements: ['offline-feature'] });
    const host = new TestHost('airgap-1');
    const r = await s.req('POST', ACT, requestFile(host, lic.key));
    t.equal(r.status, 201, JSON.stringify(r.body));
    const f = r.body;
    t.equal(f.format, 'aegis-offline-license/1');
    t.equal(f.license_id, lic.licenseId);
    t.equal(f.hostname, 'airgap-1');
    t.equal(f.bundle.machine_id, f.machine_id);
    t.ok(f.bundle.kernel_token && f.bundle.jwks.keys.length > 0, 'the tokens and keys an online activation answers');
    const claims = JSON.parse(Buffer.from(f.bundle.license_token.split('.')[1], 'base64url').toString('utf8'));
    t.equal(claims.hwid, host.hardwareId, 'bound to the hardware id');
    t.equal(claims.cnf.jkt, jwkThumbprint(host.jwk), 'bound to the host key');
    t.ok(typeof claims.exp === 'number' && claims.exp > Date.now() / 1000, 'with an expiry');
    t.same(claims.entitlements, ['offline-feature'], 'entitlements as online');
    const v = await s.req('POST', '/api/v1/licenses/validate', { token: f.bundle.license_token, hardware_id: host.hardwareId }, { key: null });
    t.equal(v.body.valid, true, `the token validates online too: ${JSON.stringify(v.body)}`);
    t.equal(await activeMachines(lic.licenseId), 1, 'one seat');
    const audit = (await s.req('GET', `/api/v1/admin/audit-logs?event_type=machine.activated&limit=100`)).body.items.find((a: any) => a.machine_id === f.machine_id);
    t.equal(audit?.event_data?.offline, true, 'audited as an offline activation');

    const rel = await s.req('POST', REL, releaseFile(host, f.machine_id));
    t.equal(rel.status, 200, JSON.stringify(rel.body));
    t.equal(rel.body.status, 'deactivated');
    t.equal(await activeMachines(lic.licenseId), 0, 'the seat is free');
    const after = await s.req('POST', '/api/v1/licenses/validate', { token: f.bundle.license_token, hardware_id: host.hardwareId }, { key: null });
    t.equal(after.body.code, 'MACHINE_DEACTIVATED', 'its token no longer validates online');
  });

  t.test('a tampered request (any field or byte) is refused and takes no seat', async (t) => {
    const lic = await newLicense();
    const host = new TestHost('airgap-tamper');
    const good = requestFile(host, lic.key);
    const cases: Array<[string, unknown]> = [
      ['hostname changed', { ...good, jws: tamperPayload(good.jws, (p) => (p.hostname = 'evil')) }],
      ['hardware id changed', { ...good, jws: tamperPayload(good.jws, (p) => (p.hardware_id = new TestHost('other').hardwareId)) }],
      ['environment changed', { ...good, jws: tamperPayload(good.jws, (p) => (p.environment = 'vm')) }],
      ['iat changed', { ...good, jws: tamperPayload(good.jws, (p) => (p.iat = (p.iat as number) + 1)) }],
      ['signature byte flipped', { ...good, jws: good.jws.slice(0, -2) + (good.jws.at(-2) === 'A' ? 'B' : 'A') + good.jws.at(-1) }],
      ['header changed (alg none)', { ...good, jws: Buffer.from(JSON.stringify({ alg: 'none', typ: OFFLINE_REQUEST_TYP })).toString('base64url') + good.jws.slice(good.jws.indexOf('.')) }],
      ['a release presented as a request', { format: OFFLINE_REQUEST_FORMAT, jws: releaseFile(host, '00000000-0000-4000-8000-000000000000').jws }],
      ['an online activation proof presented as a request', { format: OFFLINE_REQUEST_FORMAT, jws: host.proof(AUD_ACTIVATION_PROOF) }],
    ];
    for (const [what, body] of cases) {
      const r = await s.req('POST', ACT, body);
      t.equal(r.status, 401, `${what}: ${JSON.stringify(r.body)}`);
      t.equal(r.body.error.code, 'PROOF_INVALID', what);
    }
    t.equal(await activeMachines(lic.licenseId), 0, 'no seat taken');
    t.equal((await s.req('POST', ACT, good)).status, 201, 'the untouched file still activates: refusals spent no nonce');
  });

  t.test('a request signed by another key than the one it names is refused', async (t) => {
    const lic = await newLicense();
    const host = new TestHost('airgap-named');
    const { privateKey: other } = generateKeyPairSync('ed25519');
    const r = await s.req('POST', ACT, requestFile(host, lic.key, {}, other));
    t.equal(r.status, 401);
    t.equal(r.body.error.code, 'PROOF_INVALID');
    t.match(r.body.error.message, /signature/);
    // And a request that names the attacker's key with the victim's hardware id takes no
    // seat bound to the victim's key: the seat goes to the key that signed.
    t.equal(await activeMachines(lic.licenseId), 0);
  });

  t.test('a replayed request is refused and the seat is not double-counted', async (t) => {
    const lic = await newLicense();
    const host = new TestHost('airgap-replay');
    const file = requestFile(host, lic.key);
    t.equal((await s.req('POST', ACT, file)).status, 201);
    const again = await s.req('POST', ACT, file);
    t.equal(again.status, 401, JSON.stringify(again.body));
    t.equal(again.body.error.code, 'PROOF_REPLAYED');
    // Concurrent replays: exactly none passes.
    const burst = await Promise.all([1, 2, 3].map(() => s.req('POST', ACT, file)));
    t.same(burst.map((b) => b.body.error?.code), ['PROOF_REPLAYED', 'PROOF_REPLAYED', 'PROOF_REPLAYED']);
    t.equal(await activeMachines(lic.licenseId), 1, 'one seat');
    // Concurrent first uses of one fresh file: exactly one wins.
    const host2 = new TestHost('airgap-race');
    const fresh = requestFile(host2, lic.key);
    const race = await Promise.all([1, 2, 3, 4].map(() => s.req('POST', ACT, fresh)));
    t.equal(race.filter((r) => r.status === 201).length, 1, `one of four concurrent uses wins: ${race.map((r) => r.status)}`);
    t.equal(await activeMachines(lic.licenseId), 2);
  });

  t.test("a customer-restricted key cannot activate on another customer's license (404), nor release its machine", async (t) => {
    const mine = await newLicense();
    const theirs = await newLicense();
    const keyA = (await s.app.apiKeys.create('offline-tenant', [...SCOPES], mine.customerId)).key;
    const host = new TestHost('airgap-tenant');
    const file = requestFile(host, theirs.key);
    const r = await s.req('POST', ACT, file, { key: keyA });
    t.equal(r.status, 404, JSON.stringify(r.body));
    t.equal(r.body.error.code, 'NOT_FOUND');
    t.equal(await activeMachines(theirs.licenseId), 0, 'no seat on their license');
    const own = await s.req('POST', ACT, requestFile(host, mine.key), { key: keyA });
    t.equal(own.status, 201, 'its own license works with the same key');
    // Their machine, activated by an unrestricted key: a release through keyA is 404 and changes nothing.
    const ok = await s.req('POST', ACT, file);
    t.equal(ok.status, 201, 'the refused file was not spent');
    const rel = await s.req('POST', REL, releaseFile(host, ok.body.machine_id), { key: keyA });
    t.equal(rel.status, 404);
    t.equal(await activeMachines(theirs.licenseId), 1, 'their seat is still held');
  });

  t.test('an expired (too old) or future-dated request is refused', async (t) => {
    const lic = await newLicense();
    const host = new TestHost('airgap-old');
    const now = Math.floor(Date.now() / 1000);
    for (const [what, iat] of [['8 days old', now - 8 * 86_400], ['an hour ahead', now + 3600]] as const) {
      const r = await s.req('POST', ACT, requestFile(host, lic.key, { iat }));
      t.equal(r.status, 401, what);
      t.equal(r.body.error.code, 'PROOF_INVALID', what);
    }
    const sixDays = await s.req('POST', ACT, requestFile(host, lic.key, { iat: now - 6 * 86_400 }));
    t.equal(sixDays.status, 201, 'a 6-day-old request is still within the window');
    // A file that was fine when written but travelled too long: the server clock decides.
    const late = requestFile(new TestHost('airgap-late'), lic.key);
    s.clock.advanceDays(8);
    try {
      const r = await s.req('POST', ACT, late);
      t.equal(r.body.error?.code, 'PROOF_INVALID', 'refused 8 days later');
    } finally {
      s.clock.advanceDays(-8);
    }
  });

  t.test('a request beyond the seat limit is refused like online, and the file stays usable once a seat is free', async (t) => {
    const lic = await newLicense({ max_machines: 1 });
    const a = new TestHost('airgap-seat-a');
    const b = new TestHost('airgap-seat-b');
    const first = await s.req('POST', ACT, requestFile(a, lic.key));
    t.equal(first.status, 201);
    const fileB = requestFile(b, lic.key);
    const second = await s.req('POST', ACT, fileB);
    t.equal(second.status, 409);
    t.equal(second.body.error.code, 'SEAT_LIMIT');
    // Online activation counts the offline seat the same way.
    const online = await s.req('POST', '/api/v1/activations', new TestHost('online-c').activation(lic.key), { key: null });
    t.equal(online.body.error?.code, 'SEAT_LIMIT', 'online activation sees the offline seat');
    t.equal(await activeMachines(lic.licenseId), 1);
    t.equal((await s.req('POST', REL, releaseFile(a, first.body.machine_id))).status, 200);
    t.equal((await s.req('POST', ACT, fileB)).status, 201, 'the refused request was not spent');
  });

  t.test('the shared seat binding: container policy and VM clones apply to offline requests too', async (t) => {
    const lic = await newLicense({ allow_containers: false });
    const c = await s.req('POST', ACT, requestFile(new TestHost('airgap-ctr'), lic.key, { environment: 'container' }));
    t.equal(c.body.error?.code, 'CONTAINER_NOT_ALLOWED');
    const orig = new TestHost('airgap-orig', { machine_id: 'd4'.repeat(16), system_uuid: '31111111-2222-3333-4444-555555555555', macs: ['52:54:00:00:00:07'] });
    t.equal((await s.req('POST', ACT, requestFile(orig, lic.key))).status, 201);
    const clone = new TestHost('airgap-clone', { machine_id: 'd4'.repeat(16), system_uuid: '31111111-2222-3333-4444-555555555555', macs: ['52:54:00:00:00:08'] });
    const cl = await s.req('POST', ACT, requestFile(clone, lic.key));
    t.equal(cl.body.error?.code, 'MACHINE_CLONE_DETECTED', JSON.stringify(cl.body));
  });

  t.test('a forged, replayed or tampered release is refused and the seat stays held', async (t) => {
    const lic = await newLicense();
    const host = new TestHost('airgap-rel');
    const act = await s.req('POST', ACT, requestFile(host, lic.key));
    const id = act.body.machine_id as string;
    const { privateKey: other } = generateKeyPairSync('ed25519');
    const forged = await s.req('POST', REL, releaseFile(host, id, {}, other));
    t.equal(forged.body.error?.code, 'PROOF_INVALID', 'signed by another key');
    const attacker = new TestHost('attacker');
    const foreign = await s.req('POST', REL, releaseFile(attacker, id));
    t.equal(foreign.body.error?.code, 'PROOF_INVALID', "another host's key naming this machine");
    const good = releaseFile(host, id);
    const tampered = await s.req('POST', REL, { ...good, jws: tamperPayload(good.jws, (p) => (p.nonce = newOfflineNonce())) });
    t.equal(tampered.body.error?.code, 'PROOF_INVALID', 'a changed nonce breaks the signature');
    const asRequest = await s.req('POST', REL, { format: OFFLINE_RELEASE_FORMAT, jws: requestFile(host, lic.key).jws });
    t.equal(asRequest.body.error?.code, 'PROOF_INVALID', 'a request is not a release');
    const old = await s.req('POST', REL, releaseFile(host, id, { iat: Math.floor(Date.now() / 1000) - 8 * 86_400 }));
    t.equal(old.body.error?.code, 'PROOF_INVALID', 'too old');
    t.equal(await activeMachines(lic.licenseId), 1, 'still held after every refusal');
    t.equal((await s.req('POST', REL, good)).status, 200);
    const replay = await s.req('POST', REL, good);
    t.equal(replay.body.error?.code, 'PROOF_REPLAYED', 'replayed');
    // Activated again (a new machine): the old release cannot end the new seat.
    const again = await s.req('POST', ACT, requestFile(host, lic.key));
    t.equal(again.status, 201);
    t.equal((await s.req('POST', REL, good)).body.error?.code, 'PROOF_REPLAYED');
    const wrongMachine = await s.req('POST', REL, releaseFile(host, '00000000-0000-4000-8000-000000000000'));
    t.equal(wrongMachine.status, 404, 'an unknown machine');
    t.equal(await activeMachines(lic.licenseId), 1);
  });

  t.test('oversized, malformed and hostile bodies are refused before anything is touched', async (t) => {
    const lic = await newLicense();
    const host = new TestHost('airgap-hostile');
    const big = await s.req('POST', ACT, { format: OFFLINE_REQUEST_FORMAT, jws: 'a'.repeat(70 * 1024) });
    t.equal(big.status, 413);
    t.equal(big.body.error.code, 'PAYLOAD_TOO_LARGE');
    const bad = await s.req('POST', ACT, '{"format": "aegis-offline-activation-request/1", "jws":');
    t.equal(bad.body.error.code, 'MALFORMED_JSON');
    const cases: Array<[string, unknown]> = [
      ['unknown field', { ...requestFile(host, lic.key), extra: 1 }],
      ['wrong format', { ...requestFile(host, lic.key), format: 'aegis-offline-activation-request/2' }],
      ['not a JWS', { format: OFFLINE_REQUEST_FORMAT, jws: 'not.a.jws!' }],
      ['an array', [requestFile(host, lic.key)]],
    ];
    for (const [what, body] of cases) {
      const r = await s.req('POST', ACT, body);
      t.equal(r.status, 400, `${what}: ${JSON.stringify(r.body)}`);
      t.equal(r.body.error.code, 'VALIDATION_FAILED', what);
    }
    // Payloads that are signed but not a request: unknown members, a private key member.
    const extra = await s.req('POST', ACT, requestFile(host, lic.key, { admin: true }));
    t.equal(extra.body.error?.code, 'PROOF_INVALID', 'unknown payload member');
    const priv = await s.req('POST', ACT, requestFile(host, lic.key, { host_public_key: { ...host.jwk, d: 'x'.repeat(43) } }));
    t.equal(priv.body.error?.code, 'PROOF_INVALID', 'a JWK with a private member');
    const nokey = await s.req('POST', ACT, requestFile(host, 'AEGIS-00000-00000-00000-00000'));
    t.equal(nokey.status, 404, 'an unknown license key');
    const noApiKey = await s.req('POST', ACT, requestFile(host, lic.key), { key: null });
    t.equal(noApiKey.status, 401, 'no API key');
    t.equal(await activeMachines(lic.licenseId), 0);
  });
}
