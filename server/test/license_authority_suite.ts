/**
 * The license-authority suite, run once per storage backend (sqlite.test.ts,
 * postgres.test.ts) against a real server on port 0.
 */
import type { Test } from 'tap';
import { createHmac, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import {
  AGENT_API,
  AUD_ACTIVATION_PROOF,
  AUD_AGENT_TOKEN_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_KERNEL,
  AUD_REFRESH_PROOF,
  LICENSE_KEY_PATTERN,
  SHELL_SAFE_LICENSE_KEY_PATTERN,
  featureMask,
  jwkThumbprint,
} from '../../protocol/src/index.js';
import { startApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startTestServer, TestHost, type TestServer } from '../../test/harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

function b64(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString('base64url');
}

export function licenseAuthoritySuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(async () => {
    await s?.close();
  });

  async function customer(name = 'Acme Corp'): Promise<string> {
    const r = await s.req('POST', '/api/v1/customers', { name, email: `${name.replace(/\W/g, '').toLowerCase()}@example.com`, company: name });
    if (r.status !== 201) throw new Error(`customer create: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.id;
  }

  async function license(body: Record<string, unknown> = {}): Promise<{ id: string; key: string; body: any }> {
    const customer_id = (body.customer_id as string | undefined) ?? (await customer(`Cust ${Math.random().toString(36).slice(2, 8)}`));
    const r = await s.req('POST', '/api/v1/licenses', { customer_id, tier: 'server', license_type: 'perpetual', ...body });
    if (r.status !== 201) throw new Error(`license issue: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id, key: r.body.license_key, body: r.body };
  }

  async function activate(host: TestHost, key: string, extra: Record<string, unknown> = {}) {
    return s.req('POST', '/api/v1/activations', host.activation(key, extra), { key: null });
  }

  t.test('system endpoints: health, info, JWKS', async (t) => {
    const h = await s.req('GET', '/health', undefined, { key: null });
    t.equal(h.status, 200);
    t.equal(h.body.status, 'ok');
    t.match(h.body.checks, { database: 'ok', signing_key: /^ok/ });
    const i = await s.req('GET', '/info', undefined, { key: null });
    t.equal(i.body.name, 'aegis-server');
    const j = await s.req('GET', '/.well-known/jwks.json', undefined, { key: null });
    t.equal(j.body.keys.length, 1);
    t.match(j.body.keys[0], { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', kid: /^aegis-\d{4}-\d{2}$/ });
    t.notOk('d' in j.body.keys[0], 'no private member in JWKS');
  });

  t.test('admin API keys: 401 without or with an unknown key, 403 without the scope', async (t) => {
    t.equal((await s.req('GET', '/api/v1/customers', undefined, { key: null })).status, 401);
    const unknown = await s.req('GET', '/api/v1/customers', undefined, { key: 'aegis_sk_not-a-real-key-at-all' });
    t.equal(unknown.status, 401);
    t.equal(unknown.body.error.code, 'UNAUTHORIZED');
    const reader = await s.app.apiKeys.create('reader', ['customers:read']);
    t.equal((await s.req('GET', '/api/v1/customers', undefined, { key: reader.key })).status, 200);
    const denied = await s.req('POST', '/api/v1/customers', { name: 'X' }, { key: reader.key });
    t.equal(denied.status, 403);
    t.equal(denied.body.error.code, 'FORBIDDEN');
    t.equal((await s.req('GET', '/api/v1/admin/stats', undefined, { key: reader.key })).status, 403);
    const bearer = await s.req('GET', '/api/v1/customers', undefined, { key: null, headers: { authorization: `Bearer ${reader.key}` } });
    t.equal(bearer.status, 200, 'Authorization: Bearer accepted');
  });

  t.test('customers: CRUD, filters, pagination, guarded delete', async (t) => {
    const ids: string[] = [];
    for (const n of ['Zeta Ltd', 'Alpha GmbH', 'Beta SA']) ids.push(await customer(n));
    const got = await s.req('GET', `/api/v1/customers/${ids[1]}`);
    t.equal(got.body.name, 'Alpha GmbH');
    t.equal(got.body.is_active, true);
    const patched = await s.req('PATCH', `/api/v1/customers/${ids[1]}`, { company: 'Alpha AG', is_active: false });
    t.equal(patched.status, 200);
    t.equal(patched.body.company, 'Alpha AG');
    const inactive = await s.req('GET', '/api/v1/customers?is_active=false');
    t.ok(inactive.body.items.some((c: any) => c.id === ids[1]));
    t.ok(inactive.body.items.every((c: any) => c.is_active === false));
    const search = await s.req('GET', '/api/v1/customers?q=beta');
    t.same(search.body.items.map((c: any) => c.name), ['Beta SA']);
    const page1 = await s.req('GET', '/api/v1/customers?limit=2&offset=0');
    const page2 = await s.req('GET', '/api/v1/customers?limit=2&offset=2');
    t.equal(page1.body.items.length, 2);
    t.ok(page1.body.total >= 3);
    t.notOk(page2.body.items.some((c: any) => page1.body.items.some((d: any) => d.id === c.id)), 'pages do not overlap');
    t.equal((await s.req('GET', '/api/v1/customers?limit=0')).status, 400);
    t.equal((await s.req('PATCH', `/api/v1/customers/${ids[0]}`, {})).status, 400, 'empty patch refused');

    const lic = await license({ customer_id: ids[0] });
    const refused = await s.req('DELETE', `/api/v1/customers/${ids[0]}`);
    t.equal(refused.status, 409);
    t.equal(refused.body.error.code, 'CUSTOMER_HAS_ACTIVE_LICENSES');
    t.same(refused.body.error.details.active_license_ids, [lic.id]);
    t.equal((await s.req('GET', `/api/v1/customers/${ids[0]}`)).status, 200, 'nothing lost on refusal');
    t.equal((await s.req('DELETE', `/api/v1/customers/${ids[0]}?force=true`)).status, 204);
    t.equal((await s.req('GET', `/api/v1/customers/${ids[0]}`)).status, 404);
    t.equal((await s.req('GET', `/api/v1/licenses/${lic.id}`)).status, 404, 'its licenses went with it');
    t.equal((await s.req('DELETE', `/api/v1/customers/${ids[2]}`)).status, 204, 'no licenses: plain delete');
  });

  t.test('licenses: issue shows the key once; types, expiry rules, filters', async (t) => {
    const cid = await customer('Licensee Inc');
    const perpetual = await license({ customer_id: cid, tier: 'gamer', max_machines: 3, allowed_major_versions: ['1', '2'], features: ['docker_integration'] });
    t.match(perpetual.key, LICENSE_KEY_PATTERN);
    t.match(perpetual.key, SHELL_SAFE_LICENSE_KEY_PATTERN, 'issued keys hold only [A-Z0-9-]');
    t.equal(perpetual.body.key_suffix, perpetual.key.slice(-5));
    t.equal(perpetual.body.expires_at, null);
    t.equal(perpetual.body.max_machines, 3);
    t.ok(perpetual.body.features.includes('gaming_optimizations') && perpetual.body.features.includes('docker_integration'));
    const fetched = await s.req('GET', `/api/v1/licenses/${perpetual.id}`);
    t.notOk('license_key' in fetched.body, 'key never shown again');
    t.notOk(JSON.stringify(fetched.body).includes(perpetual.key), 'key not in any field');
    const rowCount = await s.app.ctx.db.selectFrom('licenses').select('key_hash').where('id', '=', perpetual.id).executeTakeFirstOrThrow();
    t.not(rowCount.key_hash, perpetual.key, 'stored as a hash');
    t.match(rowCount.key_hash, /^[0-9a-f]{64}$/);

    const sub = await license({ customer_id: cid, license_type: 'subscription', duration_days: 30 });
    const days = (Date.parse(sub.body.expires_at) - Date.now()) / 86_400_000;
    t.ok(days > 29.9 && days <= 30, 'duration_days sets expiry');
    const demo = await license({ customer_id: cid, license_type: 'demo' });
    t.ok(demo.body.expires_at !== null, 'demo gets a default expiry');

    const bad = [
      [{ license_type: 'subscription' }, '/expires_at'],
      [{ license_type: 'perpetual', duration_days: 3 }, '/duration_days'],
      [{ license_type: 'demo', duration_days: 90 }, '/duration_days'],
      [{ license_type: 'subscription', expires_at: '2001-01-01T00:00:00Z' }, '/expires_at'],
      [{ tier: 'platinum' }, '/tier'],
      [{ max_machines: 0 }, '/max_machines'],
      [{ features: ['root_shell'] }, '/features/0'],
      [{ surprise: true }, '/surprise'],
    ] as const;
    for (const [body, path] of bad) {
      const r = await s.req('POST', '/api/v1/licenses', { customer_id: cid, tier: 'server', license_type: 'perpetual', ...body });
      t.equal(r.status, 400, JSON.stringify(body));
      t.ok(
        JSON.stringify(r.body.error.details).includes(`"${path}"`),
        `error names ${path}: ${JSON.stringify(r.body.error)}`,
      );
    }
    const noCustomer = await s.req('POST', '/api/v1/licenses', { customer_id: 'nope', tier: 'server', license_type: 'perpetual' });
    t.equal(noCustomer.status, 400);

    const list = await s.req('GET', `/api/v1/licenses?customer_id=${cid}&license_type=subscription`);
    t.same(list.body.items.map((l: any) => l.id), [sub.id]);
    const byTier = await s.req('GET', `/api/v1/licenses?customer_id=${cid}&tier=gamer`);
    t.same(byTier.body.items.map((l: any) => l.id), [perpetual.id]);
    t.equal((await s.req('GET', '/api/v1/licenses?status=bogus')).status, 400);

    const revoked = await s.req('DELETE', `/api/v1/licenses/${sub.id}/revoke`, { reason: 'customer asked' });
    t.equal(revoked.status, 200);
    t.equal(revoked.body.status, 'revoked');
    t.equal(revoked.body.revoke_reason, 'customer asked');
    const onlyRevoked = await s.req('GET', `/api/v1/licenses?customer_id=${cid}&status=revoked`);
    t.same(onlyRevoked.body.items.map((l: any) => l.id), [sub.id]);
    t.equal((await s.req('DELETE', `/api/v1/licenses/${sub.id}/revoke`, {})).status, 400, 'reason required');
    t.equal((await s.req('GET', '/api/v1/licenses/00000000-0000-0000-0000-000000000000')).status, 404);
  });

  t.test('activation: tokens, claims, idempotency, seats, host-key binding', async (t) => {
    const lic = await license({ tier: 'server', max_machines: 2, allowed_major_versions: ['1'] });
    const a = new TestHost('host-a');
    const r = await activate(a, lic.key);
    t.equal(r.status, 201, JSON.stringify(r.body));
    t.match(r.body, { machine_id: String, license_token: String, kernel_token: String, jwks: { keys: Array } });

    const jwks = createLocalJWKSet(r.body.jwks);
    const lt = await jwtVerify(r.body.license_token, jwks, { algorithms: ['EdDSA'], audience: 'aegis-license' });
    t.equal(lt.payload.sub, r.body.machine_id);
    t.equal(lt.payload.hwid, a.hardwareId);
    t.equal(lt.payload.tier, 'server');
    t.equal((lt.payload.exp as number) - (lt.payload.iat as number), 30 * 86_400, 'a perpetual license token is bounded too (30 days by default)');
    t.equal(r.body.license_expires_at, null, 'the license itself stays perpetual');
    t.same((lt.payload.cnf as any).jkt, jwkThumbprint(a.jwk));
    t.ok((lt.payload.features as string[]).includes('segmentation_enforce'));
    const kt = await jwtVerify(r.body.kernel_token, jwks, { algorithms: ['EdDSA'], audience: AUD_KERNEL });
    t.equal(kt.protectedHeader.kid, s.keys.activeKid());
    t.equal((kt.payload.exp as number) - (kt.payload.iat as number), 3600, 'kernel token lives 60 minutes');
    t.equal(kt.payload.fmask, featureMask(kt.payload.features as any));
    t.equal(kt.payload.hwid, a.hardwareId);

    const again = await activate(a, lic.key);
    t.equal(again.status, 200, 'same machine re-activating is idempotent');
    t.equal(again.body.machine_id, r.body.machine_id);

    const b = new TestHost('host-b');
    t.equal((await activate(b, lic.key)).status, 201, 'second seat');
    const c = new TestHost('host-c');
    const full = await activate(c, lic.key);
    t.equal(full.status, 409);
    t.equal(full.body.error.code, 'SEAT_LIMIT');
    t.match(full.body.error.message, /seat/);

    // Someone who knows host-a's hardware id but not its key cannot take the seat.
    const thief = new TestHost('thief');
    const stolen = await s.req(
      'POST',
      '/api/v1/activations',
      { ...thief.activation(lic.key), hardware_id: a.hardwareId, proof: thief.proof(AUD_ACTIVATION_PROOF, { hwid: a.hardwareId }) },
      { key: null },
    );
    t.equal(stolen.status, 409);
    t.equal(stolen.body.error.code, 'HOST_KEY_MISMATCH');

    const old = await activate(new TestHost('old-agent'), lic.key, { agent_version: '2.0.0' });
    t.equal(old.status, 403);
    t.equal(old.body.error.code, 'VERSION_MISMATCH');

    const machines = await s.req('GET', `/api/v1/licenses/${lic.id}/machines`);
    t.equal(machines.body.items.filter((m: any) => m.status === 'active').length, 2);
    t.notOk('host_public_key' in machines.body.items[0]);

    // Deactivation by the machine itself frees a seat; then host-c fits.
    const deact = await s.req('DELETE', `/api/v1/machines/${r.body.machine_id}`, { proof: a.proof(AUD_DEACTIVATION_PROOF) }, { key: null });
    t.equal(deact.status, 200);
    t.equal(deact.body.status, 'deactivated');
    t.equal((await activate(c, lic.key)).status, 201, 'freed seat is usable');
  });

  t.test('activation refusals: unknown keys, proofs, revoked and expired licenses', async (t) => {
    const lic = await license({ license_type: 'subscription', duration_days: 10 });
    const h = new TestHost('h1');
    const unknown = await activate(h, 'AEGIS-00000-00000-00000-00000');
    const malformed = await activate(h, 'AEGIS-GAMER-2024-ACTIVE');
    t.equal(unknown.status, 404);
    t.same(unknown.body, malformed.body, 'unknown and malformed keys look the same');

    const proofCases: Array<[string, string]> = [
      ['wrong audience', h.proof(AUD_REFRESH_PROOF)],
      ['stale iat', h.proof(AUD_ACTIVATION_PROOF, { iat: Math.floor(Date.now() / 1000) - 3600 })],
      ['wrong hwid', h.proof(AUD_ACTIVATION_PROOF, { hwid: 'f'.repeat(64) })],
      ['signed by another key', new TestHost('x').proof(AUD_ACTIVATION_PROOF, { hwid: h.hardwareId })],
      ['not a JWS', 'hello'],
    ];
    for (const [name, proof] of proofCases) {
      const r = await activate(h, lic.key, { proof });
      t.equal(r.status, 401, name);
      t.equal(r.body.error.code, 'PROOF_INVALID', name);
    }
    const proof = h.proof(AUD_ACTIVATION_PROOF);
    t.equal((await activate(h, lic.key, { proof })).status, 201);
    const replay = await activate(h, lic.key, { proof });
    t.equal(replay.status, 401);
    t.equal(replay.body.error.code, 'PROOF_REPLAYED');

    const priv = await activate(h, lic.key, { host_public_key: { ...h.jwk, d: 'AAAA' } });
    t.equal(priv.status, 400, 'a private JWK is refused');

    await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'chargeback' });
    const revoked = await activate(new TestHost('h2'), lic.key);
    t.equal(revoked.status, 403);
    t.equal(revoked.body.error.code, 'LICENSE_REVOKED');

    const exp = await license({ license_type: 'demo', duration_days: 1 });
    s.clock.advanceDays(2);
    try {
      const later = Math.floor(s.clock.now().getTime() / 1000);
      const host = new TestHost('h3');
      const r = await activate(host, exp.key, { proof: host.proof(AUD_ACTIVATION_PROOF, { iat: later }) });
      t.equal(r.status, 403);
      t.equal(r.body.error.code, 'LICENSE_EXPIRED');
    } finally {
      s.clock.offsetMs = 0;
    }
  });

  t.test('refresh: fresh tokens with a proof; revocation and deactivation stop it', async (t) => {
    const lic = await license({ license_type: 'subscription', duration_days: 1 });
    const h = new TestHost('refresher');
    const act = await activate(h, lic.key);
    const id = act.body.machine_id;
    const r = await s.req('POST', `/api/v1/machines/${id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(r.status, 200);
    const kt = await jwtVerify(r.body.kernel_token, createLocalJWKSet(r.body.jwks), { audience: AUD_KERNEL });
    t.ok((kt.payload.exp as number) <= Date.parse(lic.body.expires_at) / 1000, 'kernel token never outlives the license');
    const lt = await jwtVerify(r.body.license_token, createLocalJWKSet(r.body.jwks), { audience: 'aegis-license' });
    t.equal(lt.payload.exp, Math.floor(Date.parse(lic.body.expires_at) / 1000), 'subscription license token carries exp');

    const other = new TestHost('other');
    const forged = await s.req('POST', `/api/v1/machines/${id}/refresh`, { proof: other.proof(AUD_REFRESH_PROOF, { hwid: h.hardwareId }) }, { key: null });
    t.equal(forged.status, 401, 'a proof by another key is refused');
    t.equal((await s.req('POST', `/api/v1/machines/nope/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null })).status, 404);

    await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'fraud' });
    const rv = await s.req('POST', `/api/v1/machines/${id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(rv.status, 403);
    t.equal(rv.body.error.code, 'LICENSE_REVOKED');

    const lic2 = await license();
    const h2 = new TestHost('deactivated');
    const a2 = await activate(h2, lic2.key);
    t.equal((await s.req('DELETE', `/api/v1/machines/${a2.body.machine_id}`)).status, 200, 'admin deactivation');
    const d = await s.req('POST', `/api/v1/machines/${a2.body.machine_id}/refresh`, { proof: h2.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(d.body.error.code, 'MACHINE_DEACTIVATED');
    const noProof = await s.req('DELETE', `/api/v1/machines/${a2.body.machine_id}`, {}, { key: null });
    t.equal(noProof.status, 400, 'self-deactivation needs a proof');
  });

  t.test('force-deleting a customer ends its machines everywhere, and the audit says so', async (t) => {
    const cid = await customer('Doomed Ltd');
    const lic = await license({ customer_id: cid });
    const h = new TestHost(`doomed-${process.pid}`);
    const act = await activate(h, lic.key);
    t.equal(act.status, 201);
    const id = act.body.machine_id;
    const agentToken = async (scope: string) =>
      s.req('POST', AGENT_API.token, { machine_id: id, proof: h.proof(AUD_AGENT_TOKEN_PROOF), scope: [scope] }, { key: null });
    const tok = await agentToken('status:write');
    t.equal(tok.status, 200, JSON.stringify(tok.body));
    const st = await s.req('POST', AGENT_API.status, { edition: 'licensed', services: [] }, { key: null, headers: { authorization: `Bearer ${tok.body.access_token}` } });
    t.equal(st.status, 202);
    t.equal((await s.req('GET', `/api/v1/agents/${id}`)).body.host, h.name, 'registry row is the machine, labelled with its hostname');
    const unused = (await agentToken('snapshots:read')).body.access_token as string;

    t.equal((await s.req('DELETE', `/api/v1/customers/${cid}?force=true`)).status, 204);
    t.equal((await s.req('POST', `/api/v1/machines/${id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null })).status, 404, 'no refresh');
    t.equal((await agentToken('snapshots:read')).status, 404, 'no agent token');
    const snap = await fetch(s.url + AGENT_API.snapshots, { headers: { authorization: `Bearer ${unused}` } });
    t.equal(snap.status, 404, 'an access token issued before the deletion is refused');
    const v = await s.req('POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null });
    t.equal(v.body.code, 'REVOKED', 'its license token no longer validates');
    t.equal((await s.req('GET', `/api/v1/agents/${id}`)).status, 404, 'registry row removed');

    const log = await s.req('GET', `/api/v1/admin/audit-logs?event_type=customer.deleted&customer_id=${cid}`);
    t.equal(log.body.items.length, 1);
    t.equal(log.body.items[0].reason, 'forced');
    t.same(log.body.items[0].event_data, {
      licenses_removed_while_active: [lic.id],
      machines_removed: [id],
      certificates_revoked: 0,
      nats_users_revoked: 0,
      agents_removed: [id],
    });
  });

  t.test('license expiry: activation, refresh, the agent API and validation all refuse', async (t) => {
    const lic = await license({ license_type: 'demo', duration_days: 1 });
    const h = new TestHost('expiring');
    const act = await activate(h, lic.key);
    t.equal(act.status, 201);
    const id = act.body.machine_id;
    t.equal((await s.req('POST', AGENT_API.token, { machine_id: id, proof: h.proof(AUD_AGENT_TOKEN_PROOF) }, { key: null })).status, 200, 'usable before expiry');
    s.clock.advanceDays(2);
    try {
      const iat = Math.floor(s.clock.now().getTime() / 1000);
      const refresh = await s.req('POST', `/api/v1/machines/${id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF, { iat }) }, { key: null });
      t.equal(refresh.status, 403);
      t.equal(refresh.body.error.code, 'LICENSE_EXPIRED');
      const tok = await s.req('POST', AGENT_API.token, { machine_id: id, proof: h.proof(AUD_AGENT_TOKEN_PROOF, { iat }) }, { key: null });
      t.equal(tok.status, 403, 'no agent token for a machine whose license expired');
      t.equal(tok.body.error.code, 'LICENSE_EXPIRED');
      t.equal((await s.req('POST', '/api/v1/licenses/validate', { token: act.body.license_token }, { key: null })).body.code, 'EXPIRED');
      const refusal = await s.req('GET', `/api/v1/admin/audit-logs?event_type=machine.refresh&license_id=${lic.id}`);
      t.match(refusal.body.items[0], { outcome: 'refused', machine_id: id, reason: /^LICENSE_EXPIRED/ }, 'refused refresh audited with its ids');
    } finally {
      s.clock.offsetMs = 0;
    }
  });

  t.test('validate: every verdict, and forged tokens', async (t) => {
    const lic = await license({ license_type: 'subscription', duration_days: 5, allowed_major_versions: ['1'] });
    const h = new TestHost('validator');
    const act = await activate(h, lic.key);
    const token: string = act.body.license_token;
    const v = (body: Record<string, unknown>) => s.req('POST', '/api/v1/licenses/validate', body, { key: null });

    const good = await v({ token, product: 'aegis-agent', version: '1.4.2', hardware_id: h.hardwareId });
    t.match(good.body, { valid: true, code: 'VALID', claims: { license_id: lic.id } });
    t.equal((await v({ token, version: '2.0.0' })).body.code, 'VERSION_MISMATCH');
    t.equal((await v({ token, hardware_id: 'a'.repeat(64) })).body.code, 'HWID_MISMATCH');
    t.equal((await v({ token, product: 'other' })).body.code, 'PRODUCT_MISMATCH');
    t.equal((await v({ token: 'garbage' })).body.code, 'MALFORMED');
    t.equal((await v({ token: act.body.kernel_token })).body.code, 'WRONG_AUDIENCE');

    const [hd, pl, sig] = token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(pl, 'base64url').toString());
    const header = JSON.parse(Buffer.from(hd, 'base64url').toString());
    const tampered = `${hd}.${b64({ ...payload, tier: 'server', max_machines: 999, features: ['segmentation_enforce'] })}.${sig}`;
    t.equal((await v({ token: tampered })).body.code, 'SIGNATURE_INVALID', 'modified payload');
    const flipped = `${hd}.${pl}.${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
    t.equal((await v({ token: flipped })).body.code, 'SIGNATURE_INVALID', 'flipped signature');
    const none = `${b64({ alg: 'none', typ: 'JWT', kid: header.kid })}.${pl}.`;
    t.equal((await v({ token: none })).body.valid, false, 'alg none');
    t.equal((await v({ token: `${b64({ alg: 'none', typ: 'JWT', kid: header.kid })}.${pl}.AAAA` })).body.code, 'SIGNATURE_INVALID');
    // HS256 "signed" with the public key as the HMAC secret: the classic confusion attack.
    const pubPem = createPublicKey(s.keys.signingKey().privateKey).export({ type: 'spki', format: 'pem' });
    const hsHead = b64({ alg: 'HS256', typ: 'JWT', kid: header.kid });
    const hsSig = createHmac('sha256', pubPem).update(`${hsHead}.${pl}`).digest('base64url');
    t.equal((await v({ token: `${hsHead}.${pl}.${hsSig}` })).body.code, 'SIGNATURE_INVALID', 'HS256 with the public key');
    // A token signed by an attacker's key, with a kid that is not ours or is a path.
    const evil = generateKeyPairSync('ed25519').privateKey;
    for (const kid of ['attacker-1', '../../keys/aegis-2026-01', header.kid]) {
      const eh = b64({ alg: 'EdDSA', typ: 'JWT', kid });
      const es = sign(null, Buffer.from(`${eh}.${pl}`), evil).toString('base64url');
      const r = await v({ token: `${eh}.${pl}.${es}` });
      t.equal(r.body.valid, false, `attacker token kid=${kid}`);
      t.equal(r.body.code, kid === header.kid ? 'SIGNATURE_INVALID' : 'UNKNOWN_KEY', `attacker kid=${kid}`);
    }
    const jwkHead = b64({ alg: 'EdDSA', typ: 'JWT', kid: header.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: 'A'.repeat(43) } });
    t.equal((await v({ token: `${jwkHead}.${pl}.${sig}` })).body.valid, false, 'embedded jwk header refused');

    s.clock.advanceDays(6);
    try {
      t.equal((await v({ token })).body.code, 'EXPIRED');
    } finally {
      s.clock.offsetMs = 0;
    }
    s.clock.advanceDays(-1);
    try {
      t.equal((await v({ token })).body.code, 'NOT_YET_VALID');
    } finally {
      s.clock.offsetMs = 0;
    }
    await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'test' });
    t.equal((await v({ token })).body.code, 'REVOKED');
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?event_type=license.validate&license_id=${lic.id}`);
    t.ok(audit.body.items.length >= 3, 'refused validations are audited');
    t.ok(audit.body.items.every((e: any) => e.outcome === 'refused'));
  });

  t.test('key rotation: old tokens keep validating, retired kid does not', async (t) => {
    const lic = await license();
    const h = new TestHost('rotation');
    const before = await activate(h, lic.key);
    const oldKid = s.keys.activeKid()!;
    s.keys.rotate(); // what `aegis-server keys rotate` does, seen by the running server
    const newKid = s.keys.activeKid()!;
    t.not(newKid, oldKid);
    const jwks = await s.req('GET', '/.well-known/jwks.json', undefined, { key: null });
    t.same(jwks.body.keys.map((k: any) => k.kid).sort(), [oldKid, newKid].sort());
    const after = await s.req('POST', `/api/v1/machines/${before.body.machine_id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(JSON.parse(Buffer.from(after.body.license_token.split('.')[0], 'base64url').toString()).kid, newKid, 'new tokens use the new kid');
    const v = async (token: string) => (await s.req('POST', '/api/v1/licenses/validate', { token }, { key: null })).body.code;
    t.equal(await v(before.body.license_token), 'VALID', 'token of the old kid still validates');
    t.throws(() => s.keys.retire(newKid), /active signing key/);
    s.keys.retire(oldKid);
    t.equal(await v(before.body.license_token), 'UNKNOWN_KEY', 'retired kid no longer validates');
    t.equal(await v(after.body.license_token), 'VALID');
    const jwks2 = await s.req('GET', '/.well-known/jwks.json', undefined, { key: null });
    t.same(jwks2.body.keys.map((k: any) => k.kid), [newKid], 'retired key left the JWKS');
  });

  t.test('bad input: size, content type, JSON, schema', async (t) => {
    const big = await s.req('POST', '/api/v1/customers', JSON.stringify({ name: 'x'.repeat(1024 * 1024 + 10) }));
    t.equal(big.status, 413);
    t.equal(big.body.error.code, 'PAYLOAD_TOO_LARGE');
    const type = await s.req('POST', '/api/v1/customers', 'name=x', { headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    t.equal(type.status, 415);
    const json = await s.req('POST', '/api/v1/customers', '{"name": "x",');
    t.equal(json.status, 400);
    t.equal(json.body.error.code, 'MALFORMED_JSON');
    const schema = await s.req('POST', '/api/v1/customers', { name: 42, extra: 1 });
    t.equal(schema.status, 400);
    t.equal(schema.body.error.code, 'VALIDATION_FAILED');
    t.same(schema.body.error.details.map((d: any) => d.path).sort(), ['/extra', '/name']);
    const arr = await s.req('POST', '/api/v1/activations', [], { key: null });
    t.equal(arr.status, 400);
    t.equal((await s.req('GET', '/api/v1/nothing-here')).status, 404);
    t.equal((await s.req('PUT', '/api/v1/customers')).status, 405);
    const fp = await s.req('POST', '/api/v1/licenses/fingerprint', { machine_id: 'abc', macs: ['52:54:00:12:34:56'] }, { key: null });
    t.match(fp.body, { hardware_id: /^[0-9a-f]{64}$/, components: { machine_id: 'abc' } });
    const fpBad = await s.req('POST', '/api/v1/licenses/fingerprint', { machine_id: 7 }, { key: null });
    t.equal(fpBad.status, 400);
    t.equal(fpBad.body.error.details[0].path, '/machine_id');
  });

  t.test('concurrent activations of a one-seat license: exactly one wins', async (t) => {
    const lic = await license({ max_machines: 1 });
    const hosts = Array.from({ length: 12 }, (_, i) => new TestHost(`racer-${i}`));
    const results = await Promise.all(hosts.map((h) => activate(h, lic.key)));
    const statuses = results.map((r) => r.status);
    t.equal(statuses.filter((x) => x === 201).length, 1, `one winner: ${statuses.join(',')}`);
    t.equal(statuses.filter((x) => x === 409).length, hosts.length - 1);
    t.ok(results.filter((r) => r.status === 409).every((r) => r.body.error.code === 'SEAT_LIMIT'));
    const machines = await s.req('GET', `/api/v1/licenses/${lic.id}/machines`);
    t.equal(machines.body.items.length, 1, 'one machine row');
  });

  t.test('audit trail and stats', async (t) => {
    const lic = await license();
    await activate(new TestHost('audited'), lic.key);
    await activate(new TestHost('refused'), lic.key);
    await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'audit test' });
    const log = await s.req('GET', `/api/v1/admin/audit-logs?license_id=${lic.id}`);
    const events = log.body.items.map((e: any) => `${e.event_type}:${e.outcome}`);
    t.ok(events.includes('license.issued:ok'), events.join(' '));
    t.ok(events.includes('machine.activated:ok'));
    t.ok(events.includes('machine.activate:refused'));
    t.ok(events.includes('license.revoked:ok'));
    const refusal = log.body.items.find((e: any) => e.outcome === 'refused');
    t.match(refusal.reason, /^SEAT_LIMIT/);
    t.match(refusal.actor, /^host:refused/);
    const revoke = log.body.items.find((e: any) => e.event_type === 'license.revoked');
    t.equal(revoke.actor, 'api_key:test-admin');
    t.equal(revoke.reason, 'audit test');
    // (Scoped to this license: earlier tests recorded entries with the test clock moved ahead.)
    const since = await s.req('GET', `/api/v1/admin/audit-logs?license_id=${lic.id}&since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`);
    t.equal(since.body.items.length, 0, 'since filter');
    t.equal((await s.req('GET', '/api/v1/admin/audit-logs?since=yesterday')).status, 400);
    const stats = await s.req('GET', '/api/v1/admin/stats');
    t.ok(stats.body.licenses.total >= 1);
    t.ok(stats.body.licenses.by_status.revoked >= 1);
    t.ok(stats.body.machines.active >= 1);
    t.ok(stats.body.activations_last_24h >= 1);
  });

  t.test('rate limits answer 429 with Retry-After', async (t) => {
    const limited = await startTestServer({
      databaseUrl: await newDatabase(),
      rateLimits: 'validate_per_ip=3/min,activation_per_ip=2/min',
    });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 5; i++) codes.push((await limited.req('POST', '/api/v1/licenses/validate', { token: 'x' }, { key: null })).status);
      t.same(codes, [200, 200, 200, 429, 429]);
      const r = await limited.req('POST', '/api/v1/licenses/validate', { token: 'x' }, { key: null });
      t.equal(r.body.error.code, 'RATE_LIMITED');
      t.ok(Number(r.headers.get('retry-after')) >= 1);
      const h = new TestHost('limited');
      const act: number[] = [];
      for (let i = 0; i < 3; i++) act.push((await limited.req('POST', '/api/v1/activations', h.activation('AEGIS-00000-00000-00000-00000'), { key: null })).status);
      t.same(act, [404, 404, 429], 'activation attempts are limited per IP, even for unknown keys');
    } finally {
      await limited.close();
    }
    const perLicense = await startTestServer({ databaseUrl: await newDatabase(), rateLimits: 'validate_per_license=2/min' });
    try {
      const c = await perLicense.req('POST', '/api/v1/customers', { name: 'RL' });
      const issue = async () => (await perLicense.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'basic', license_type: 'perpetual' })).body.license_key;
      const tokenOf = async (key: string) => {
        const h = new TestHost(`rl-${key.slice(-5)}`);
        return (await perLicense.req('POST', '/api/v1/activations', h.activation(key), { key: null })).body.license_token as string;
      };
      const [t1, t2] = [await tokenOf(await issue()), await tokenOf(await issue())];
      const v = async (token: string) => (await perLicense.req('POST', '/api/v1/licenses/validate', { token }, { key: null })).status;
      t.same([await v(t1), await v(t1), await v(t1)], [200, 200, 429], 'validation limited per license');
      t.equal(await v(t2), 200, 'another license has its own budget');
    } finally {
      await perLicense.close();
    }
  });

  t.test('refuses to start on a private key others can read', async (t) => {
    const kid = s.keys.activeKid()!;
    const path = join(s.keysDir, `${kid}.private.pem`);
    chmodSync(path, 0o644);
    try {
      const config = loadConfig({ listen: '127.0.0.1:0', database: 'sqlite::memory:', keysDir: s.keysDir }, {});
      await t.rejects(startApp(config, { logger: createLogger({ silent: true }) }), { code: 'INSECURE_KEY_FILE', message: /chmod 600/ });
      const health = await s.req('GET', '/health', undefined, { key: null });
      t.equal(health.status, 503, 'a running server reports the insecure key as unhealthy');
    } finally {
      chmodSync(path, 0o600);
    }
  });
}
