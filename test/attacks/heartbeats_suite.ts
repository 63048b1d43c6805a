/**
 * Attacks on heartbeats, floating seats and grace periods, run once per storage backend
 * (heartbeats_sqlite.test.ts, heartbeats_postgres.test.ts) against a real server on port
 * 0 whose clock the test moves (the server's Clock abstraction) and whose culler the test
 * runs at the moved time (lifecycle.cull(), what the periodic culler calls).
 *
 *   replayed heartbeats (same proof, same or an older seq) are refused
 *   a heartbeat with another machine's or another customer's proof, or a forged body, is refused
 *   a host that stops heartbeating is culled (deactivate: seat freed) or marked dead (keep: seat kept)
 *   floating: 3 hosts share 2 seats; the third gets one only once a lease lapsed, and a
 *     lapsed lease is not revived by a replayed (or a fresh) heartbeat
 *   grace: an expired license validates VALID_IN_GRACE until grace_ends_at, then EXPIRED
 */
import type { Test } from 'tap';
import { AUD_ACTIVATION_PROOF, AUD_HEARTBEAT_PROOF, AUD_REFRESH_PROOF, signHostProof } from '../../protocol/src/index.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

export function heartbeatsSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(async () => {
    await s?.close();
  });
  // Each test moves the clock forward from where it stands; no test needs it back.
  const advance = (seconds: number) => {
    s.clock.offsetMs += seconds * 1000;
  };
  const serverNow = () => Math.floor(s.clock.now().getTime() / 1000);

  async function license(body: Record<string, unknown>): Promise<{ id: string; key: string; customerId: string }> {
    const c = await s.req('POST', '/api/v1/customers', { name: `Heartbeat ${Math.random().toString(36).slice(2, 8)}` });
    const r = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', ...body });
    if (r.status !== 201) throw new Error(`license issue: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id, key: r.body.license_key, customerId: c.body.id };
  }
  // Proofs are signed at the server's (moved) time, as a host whose clock is right signs them.
  const activate = (host: TestHost, key: string) =>
    s.req('POST', '/api/v1/activations', host.activation(key, { proof: host.proof(AUD_ACTIVATION_PROOF, { iat: serverNow() }) }), { key: null });
  async function activated(host: TestHost, key: string) {
    const r = await activate(host, key);
    if (r.status !== 201 && r.status !== 200) throw new Error(`activation: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }
  /** A heartbeat proof as the agent signs it: the host key, at the server's (moved) time. */
  const beatProof = (host: TestHost, seq: number, extra: { jti?: string; hwid?: string } = {}) =>
    signHostProof(host.privateKey, { aud: AUD_HEARTBEAT_PROOF, hwid: extra.hwid ?? host.hardwareId, iat: serverNow(), seq, ...(extra.jti ? { jti: extra.jti } : {}) });
  const heartbeat = (machineId: string, proof: string) => s.req('POST', `/api/v1/machines/${machineId}/heartbeat`, { proof }, { key: null });
  const validate = (token: string) => s.req('POST', '/api/v1/licenses/validate', { token }, { key: null });
  const machine = (id: string) => s.req('GET', `/api/v1/machines/${id}`);

  t.test('defaults keep today\'s behaviour: no heartbeat required, nothing culled', async (t) => {
    const lic = await license({});
    const got = await s.req('GET', `/api/v1/licenses/${lic.id}`);
    t.match(got.body, { heartbeat_interval_seconds: null, heartbeat_cull: 'deactivate', floating: false, lease_ttl_seconds: null, grace_period_seconds: null });
    const h = new TestHost('hb-default');
    const act = await activated(h, lic.key);
    t.match((await machine(act.machine_id)).body, { status: 'active', heartbeat_status: null, last_heartbeat_at: null, lease_expires_at: null });
    advance(3 * 86_400);
    const culled = await s.app.lifecycle.cull();
    t.notOk(culled.deactivated.includes(act.machine_id), 'a machine whose license wants no heartbeats is never culled');
    t.equal((await machine(act.machine_id)).body.status, 'active');
    t.equal((await s.req('POST', '/api/v1/licenses', { customer_id: lic.customerId, tier: 'server', license_type: 'perpetual', floating: true })).body.error.code, 'VALIDATION_FAILED', 'a floating license needs lease_ttl_seconds');
    t.equal((await s.req('POST', '/api/v1/licenses', { customer_id: lic.customerId, tier: 'server', license_type: 'perpetual', heartbeat_cull: 'explode' })).status, 400, 'an unknown cull strategy is refused');
  });

  t.test('a replayed heartbeat is refused; the seq must grow', async (t) => {
    const lic = await license({ heartbeat_interval_seconds: 60 });
    const h = new TestHost('hb-replay');
    const act = await activated(h, lic.key);
    const first = beatProof(h, 1);
    const ok = await heartbeat(act.machine_id, first);
    t.equal(ok.status, 200, JSON.stringify(ok.body));
    t.match(ok.body, { machine_id: act.machine_id, heartbeat_status: 'alive', seq: 1, lease_expires_at: null });
    const again = await heartbeat(act.machine_id, first);
    t.equal(again.status, 401);
    t.equal(again.body.error.code, 'PROOF_REPLAYED', 'the same proof twice: its jti was used');
    const sameSeq = await heartbeat(act.machine_id, beatProof(h, 1));
    t.equal(sameSeq.body.error.code, 'PROOF_REPLAYED', 'a fresh proof with a seq already accepted');
    t.match(sameSeq.body.error.message, /seq 1 is not greater/);
    t.equal((await heartbeat(act.machine_id, beatProof(h, 5))).status, 200, 'a greater seq is accepted');
    t.equal((await heartbeat(act.machine_id, beatProof(h, 3))).body.error.code, 'PROOF_REPLAYED', 'an older seq (reordered or held back) is refused');
    const m = (await machine(act.machine_id)).body;
    t.match(m, { heartbeat_status: 'alive' });
    t.ok(m.last_heartbeat_at, 'GET machine shows the last heartbeat');
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?event_type=machine.heartbeat&license_id=${lic.id}`);
    t.ok(audit.body.items.some((i: { outcome: string; reason: string }) => i.outcome === 'refused' && /^PROOF_REPLAYED/.test(i.reason)), 'refusals are audited');
  });

  t.test('another machine\'s proof, another customer\'s machine, a forged body: refused', async (t) => {
    const licA = await license({ heartbeat_interval_seconds: 60 });
    const licB = await license({ heartbeat_interval_seconds: 60 });
    const a = new TestHost('hb-a');
    const a2 = new TestHost('hb-a2');
    const b = new TestHost('hb-other-customer');
    const actA = await activated(a, licA.key);
    const licA2 = await s.req('POST', '/api/v1/licenses', { customer_id: licA.customerId, tier: 'server', license_type: 'perpetual', heartbeat_interval_seconds: 60 });
    const actA2 = await activated(a2, licA2.body.license_key);
    const actB = await activated(b, licB.key);
    // B's host signs for B's hardware id, sent to A's machine: A's key does not verify it.
    const cross = await heartbeat(actA.machine_id, beatProof(b, 1));
    t.equal(cross.body.error.code, 'PROOF_INVALID', 'another customer\'s host cannot heartbeat this machine');
    // B's host signs claiming A's hardware id: still not A's key.
    t.equal((await heartbeat(actA.machine_id, beatProof(b, 1, { hwid: a.hardwareId }))).body.error.code, 'PROOF_INVALID', 'naming the victim\'s hwid does not help');
    t.equal((await heartbeat(actA.machine_id, beatProof(a2, 1, { hwid: a.hardwareId }))).body.error.code, 'PROOF_INVALID', 'another machine of the same customer cannot heartbeat it either');
    // A proof of A sent for B's machine: B's key does not verify it.
    t.equal((await heartbeat(actB.machine_id, beatProof(a, 1))).body.error.code, 'PROOF_INVALID');
    t.equal((await heartbeat(actA2.machine_id, beatProof(a, 1))).body.error.code, 'PROOF_INVALID');
    // Forged body: the seq raised in the payload, the signature kept.
    const [h, p, sig] = beatProof(a, 1).split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, seq: 99 })).toString('base64url')}.${sig}`;
    t.equal((await heartbeat(actA.machine_id, forged)).body.error.code, 'PROOF_INVALID', 'a payload changed after signing does not verify');
    // A refresh proof (another audience) is no heartbeat.
    t.equal((await heartbeat(actA.machine_id, a.proof(AUD_REFRESH_PROOF, { iat: serverNow() }))).body.error.code, 'PROOF_INVALID', 'another audience is refused');
    // A heartbeat proof without a seq.
    t.equal((await heartbeat(actA.machine_id, a.proof(AUD_HEARTBEAT_PROOF, { iat: serverNow() }))).body.error.code, 'PROOF_INVALID', 'a heartbeat without seq is refused');
    // Hostile bodies.
    t.equal((await s.req('POST', `/api/v1/machines/${actA.machine_id}/heartbeat`, { proof: beatProof(a, 2), seq: 7 }, { key: null })).status, 400, 'unknown fields are refused');
    t.equal((await s.req('POST', `/api/v1/machines/${actA.machine_id}/heartbeat`, { proof: 'x'.repeat(5000) }, { key: null })).status, 400, 'an oversized proof is refused');
    t.equal((await heartbeat('00000000-0000-4000-8000-000000000000', beatProof(a, 1))).status, 404, 'an unknown machine is 404');
    // None of it took: the seq is untouched, so A's genuine seq 1 still counts.
    t.equal((await heartbeat(actA.machine_id, beatProof(a, 1))).status, 200, 'the genuine host\'s heartbeat is accepted');
    // GET machine: another customer's key sees 404.
    const keyB = (await s.app.apiKeys.create('heartbeat-b-only', ['licenses:read'], licB.customerId)).key;
    t.equal((await s.req('GET', `/api/v1/machines/${actA.machine_id}`, undefined, { key: keyB })).status, 404, 'a key of another customer cannot see the machine');
    t.equal((await s.req('GET', `/api/v1/machines/${actB.machine_id}`, undefined, { key: keyB })).status, 200, 'but sees its own');
  });

  t.test('heartbeat_cull deactivate: a host that stops heartbeating is culled and its seat freed', async (t) => {
    const lic = await license({ heartbeat_interval_seconds: 60, grace_period_seconds: 30, max_machines: 1 });
    const h = new TestHost('hb-cull');
    const act = await activated(h, lic.key);
    t.equal((await heartbeat(act.machine_id, beatProof(h, 1))).status, 200);
    t.match((await validate(act.license_token)).body, { valid: true, code: 'VALID' });
    t.equal((await activate(new TestHost('hb-cull-2'), lic.key)).body.error.code, 'SEAT_LIMIT', 'the one seat is held');
    advance(75); // past the window (60), within grace (30)
    const inGrace = (await validate(act.license_token)).body;
    t.match(inGrace, { valid: true, code: 'VALID_IN_GRACE' }, 'lost contact within grace: VALID_IN_GRACE');
    t.ok(Date.parse(inGrace.grace_ends_at) > s.clock.now().getTime(), 'grace_ends_at is ahead');
    t.same((await s.app.lifecycle.cull()).deactivated.includes(act.machine_id), false, 'not culled within grace');
    advance(30); // past window + grace
    const culled = await s.app.lifecycle.cull();
    t.ok(culled.deactivated.includes(act.machine_id), 'culled after the window and grace');
    t.match((await machine(act.machine_id)).body, { status: 'deactivated' });
    t.match((await validate(act.license_token)).body, { valid: false, code: 'MACHINE_DEACTIVATED' });
    t.equal((await heartbeat(act.machine_id, beatProof(h, 2))).body.error.code, 'MACHINE_DEACTIVATED', 'a culled machine cannot heartbeat its way back');
    t.equal((await activate(new TestHost('hb-cull-2'), lic.key)).status, 201, 'the seat is free for another host');
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?event_type=machine.culled&license_id=${lic.id}`);
    t.equal(audit.body.items.length, 1, 'the cull is audited once');
    t.equal((await s.app.lifecycle.cull()).deactivated.includes(act.machine_id), false, 'a second cull does nothing more');
  });

  t.test('heartbeat_cull keep: a silent host is marked dead, keeps its seat, and comes back', async (t) => {
    const lic = await license({ heartbeat_interval_seconds: 60, heartbeat_cull: 'keep', max_machines: 1 });
    const h = new TestHost('hb-keep');
    const act = await activated(h, lic.key);
    t.equal((await heartbeat(act.machine_id, beatProof(h, 1))).status, 200);
    advance(61);
    const culled = await s.app.lifecycle.cull();
    t.ok(culled.dead.includes(act.machine_id), 'marked dead');
    t.match((await machine(act.machine_id)).body, { status: 'active', heartbeat_status: 'dead' });
    t.match((await validate(act.license_token)).body, { valid: false, code: 'HEARTBEAT_DEAD' });
    t.equal((await activate(new TestHost('hb-keep-2'), lic.key)).body.error.code, 'SEAT_LIMIT', 'the seat is kept');
    const back = await heartbeat(act.machine_id, beatProof(h, 2));
    t.equal(back.status, 200, 'a dead machine that heartbeats again is alive');
    t.match((await machine(act.machine_id)).body, { status: 'active', heartbeat_status: 'alive' });
    t.match((await validate(act.license_token)).body, { valid: true, code: 'VALID' });
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?license_id=${lic.id}`);
    const types = audit.body.items.map((i: { event_type: string }) => i.event_type);
    t.ok(types.includes('machine.heartbeat_dead') && types.includes('machine.heartbeat_revived'), `dead and revived are audited (${types.join(', ')})`);
  });

  t.test('floating: 3 hosts share 2 seats; the third gets one when a lease lapses; a lapsed lease is not revived', async (t) => {
    const lic = await license({ floating: true, lease_ttl_seconds: 120, max_machines: 2 });
    const [h1, h2, h3] = [new TestHost('float-1'), new TestHost('float-2'), new TestHost('float-3')];
    const a1 = await activated(h1, lic.key);
    const a2 = await activated(h2, lic.key);
    const m1 = (await machine(a1.machine_id)).body;
    t.ok(m1.lease_expires_at, 'a floating seat has a lease');
    t.equal((await activate(h3, lic.key)).body.error.code, 'SEAT_LIMIT', 'the third host is refused while both leases run');
    advance(60);
    // h1 renews; h2 goes silent. Keep one captured heartbeat of h2 from before the lapse.
    const r1 = await heartbeat(a1.machine_id, beatProof(h1, 1));
    t.equal(r1.status, 200);
    t.ok(Date.parse(r1.body.lease_expires_at) > Date.parse(m1.lease_expires_at), 'a heartbeat renews the lease');
    const captured = beatProof(h2, 1);
    t.equal((await heartbeat(a2.machine_id, captured)).status, 200, 'h2 heartbeats once (and an eavesdropper keeps that body)');
    t.equal((await activate(h3, lic.key)).body.error.code, 'SEAT_LIMIT', 'still full');
    advance(100); // h2's lease (renewed at 60, ttl 120) runs to 180: not yet
    t.equal((await heartbeat(a1.machine_id, beatProof(h1, 2))).status, 200, 'h1 keeps renewing');
    advance(30); // now 190: h2's lease lapsed, h1's (renewed at 160) runs to 280
    t.match((await validate(a2.license_token)).body, { valid: false, code: 'MACHINE_DEACTIVATED' }, 'a lapsed lease no longer validates, culler or not');
    const third = await activate(h3, lic.key);
    t.equal(third.status, 201, `the third host gets the lapsed seat: ${JSON.stringify(third.body)}`);
    t.match((await machine(a2.machine_id)).body, { status: 'deactivated' });
    const replay = await heartbeat(a2.machine_id, captured);
    t.equal(replay.status, 401, 'the captured heartbeat replayed');
    t.equal(replay.body.error.code, 'PROOF_REPLAYED', 'is refused');
    t.equal((await heartbeat(a2.machine_id, beatProof(h2, 2))).body.error.code, 'MACHINE_DEACTIVATED', 'and even a fresh heartbeat does not revive a lapsed lease');
    t.match((await machine(a2.machine_id)).body, { status: 'deactivated' }, 'the lapsed seat stays ended');
    t.equal((await activate(h2, lic.key)).body.error.code, 'SEAT_LIMIT', 'h2 now waits for a seat like any new host');
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?event_type=machine.lease_expired&license_id=${lic.id}`);
    t.equal(audit.body.items.length, 1, 'the lapse is audited');
    // The culler ends lapsed leases too, with no activation to trigger it.
    advance(200);
    const culled = await s.app.lifecycle.cull();
    t.ok(culled.deactivated.includes(a1.machine_id) && culled.deactivated.includes(third.body.machine_id), 'the culler frees lapsed leases');
  });

  t.test('grace: an expired license validates VALID_IN_GRACE until grace_ends_at, then EXPIRED', async (t) => {
    // Whole seconds: a token's exp (and so its grace end) is in seconds.
    const expires = new Date(Math.floor(s.clock.now().getTime() / 1000) * 1000 + 3_600_000).toISOString();
    const lic = await license({ license_type: 'subscription', expires_at: expires, grace_period_seconds: 600 });
    const h = new TestHost('grace-expiry');
    const act = await activated(h, lic.key);
    const claims = JSON.parse(Buffer.from(act.license_token.split('.')[1], 'base64url').toString());
    t.equal(claims.grace_seconds, 600, 'the token carries the grace claim');
    t.match((await validate(act.license_token)).body, { valid: true, code: 'VALID' });
    advance(3600 + 10); // past expiry
    const v = (await validate(act.license_token)).body;
    t.match(v, { valid: true, code: 'VALID_IN_GRACE' });
    t.equal(v.grace_ends_at, new Date(Date.parse(expires) + 600_000).toISOString(), 'grace ends at expiry + grace_period_seconds');
    t.equal((await s.req('GET', `/api/v1/licenses/${lic.id}`)).body.status, 'expired', 'the license itself reads expired');
    t.equal((await activate(new TestHost('grace-new'), lic.key)).body.error.code, 'LICENSE_EXPIRED', 'no new seats in grace');
    advance(600); // past grace
    t.match((await validate(act.license_token)).body, { valid: false, code: 'EXPIRED' }, 'after grace: EXPIRED');
    // Without a grace period: EXPIRED at once.
    const plain = await license({ license_type: 'subscription', expires_at: new Date(s.clock.now().getTime() + 3_600_000).toISOString() });
    const p = await activated(new TestHost('grace-none'), plain.key);
    advance(3600 + 10);
    t.match((await validate(p.license_token)).body, { valid: false, code: 'EXPIRED' }, 'no grace period, no grace');
  });
}
