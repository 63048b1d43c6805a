/**
 * Attacks on how long a license token stays good: a deactivated machine, a machine the
 * server never knew, a revoked license, and a token kept past its bounded lifetime. Run
 * once per storage backend (validity_sqlite.test.ts, validity_postgres.test.ts) against a
 * real server on port 0.
 */
import type { Test } from 'tap';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { AUD_DEACTIVATION_PROOF, AUD_REFRESH_PROOF } from '../../protocol/src/index.js';
import { loadConfig } from '../../server/src/config.js';
import { TokenService } from '../../server/src/tokens.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const DAY = 86_400;

export function validitySuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: TestServer;

  t.before(async () => {
    const url = await newDatabase();
    s = await startTestServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(async () => {
    await s?.close();
  });

  async function license(body: Record<string, unknown> = {}): Promise<{ id: string; key: string; body: any }> {
    const c = await s.req('POST', '/api/v1/customers', { name: `Validity ${Math.random().toString(36).slice(2, 8)}` });
    const r = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', ...body });
    if (r.status !== 201) throw new Error(`license issue: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id, key: r.body.license_key, body: r.body };
  }

  async function activate(host: TestHost, key: string) {
    const r = await s.req('POST', '/api/v1/activations', host.activation(key), { key: null });
    if (r.status !== 201) throw new Error(`activation: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  const validate = (token: string) => s.req('POST', '/api/v1/licenses/validate', { token }, { key: null });

  t.test('a token of a machine an admin deactivated no longer validates', async (t) => {
    const lic = await license();
    const h = new TestHost('deactivated-by-admin');
    const act = await activate(h, lic.key);
    t.match((await validate(act.license_token)).body, { valid: true, code: 'VALID' }, 'valid while the seat is held');
    t.equal((await s.req('DELETE', `/api/v1/machines/${act.machine_id}`)).status, 200);
    const v = await validate(act.license_token);
    t.equal(v.status, 200);
    t.match(v.body, { valid: false, code: 'MACHINE_DEACTIVATED', message: /deactivated/ }, 'the seat is gone, so is validity');
    const audit = await s.req('GET', `/api/v1/admin/audit-logs?event_type=license.validate&license_id=${lic.id}`);
    t.match(audit.body.items[0], { outcome: 'refused', machine_id: act.machine_id, reason: /^MACHINE_DEACTIVATED/ }, 'the refusal is audited');
  });

  t.test('a token of a machine that deactivated itself no longer validates', async (t) => {
    const lic = await license();
    const h = new TestHost('deactivated-by-host');
    const act = await activate(h, lic.key);
    const d = await s.req('DELETE', `/api/v1/machines/${act.machine_id}`, { proof: h.proof(AUD_DEACTIVATION_PROOF) }, { key: null });
    t.equal(d.status, 200, JSON.stringify(d.body));
    t.match((await validate(act.license_token)).body, { valid: false, code: 'MACHINE_DEACTIVATED' });
  });

  t.test('a genuinely signed token naming a machine the server does not know is refused', async (t) => {
    const lic = await license();
    const h = new TestHost('known');
    const act = await activate(h, lic.key);
    const other = await license();
    const h2 = new TestHost('other-license');
    const act2 = await activate(h2, other.key);
    const payload = (await jwtVerify(act.license_token, createLocalJWKSet(act.jwks))).payload as any;
    const tokens = new TokenService(s.keys);
    const { iss: _iss, aud: _aud, jti: _jti, ...claims } = payload;
    const ghost = await tokens.signLicense({ ...claims, sub: '00000000-0000-4000-8000-000000000000' });
    t.match((await validate(ghost)).body, { valid: false, code: 'MACHINE_UNKNOWN' }, 'no such machine');
    const crossed = await tokens.signLicense({ ...claims, sub: act2.machine_id });
    t.match((await validate(crossed)).body, { valid: false, code: 'MACHINE_UNKNOWN' }, 'a machine of another license');
    const noSub = await tokens.signLicense({ ...claims, sub: undefined as unknown as string });
    t.match((await validate(noSub)).body, { valid: false, code: 'MALFORMED' }, 'a license token without sub');
  });

  t.test('a token of a revoked license no longer validates, and its machine cannot refresh', async (t) => {
    const lic = await license();
    const h = new TestHost('revoked');
    const act = await activate(h, lic.key);
    await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'chargeback' });
    t.match((await validate(act.license_token)).body, { valid: false, code: 'REVOKED', message: /chargeback/ });
    const r = await s.req('POST', `/api/v1/machines/${act.machine_id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF) }, { key: null });
    t.equal(r.body.error.code, 'LICENSE_REVOKED');
  });

  t.test('machine-bound tokens of a perpetual license are bounded, and refresh renews them', async (t) => {
    const lic = await license();
    const h = new TestHost('perpetual');
    const act = await activate(h, lic.key);
    t.equal(act.license_expires_at, null, 'the license itself is perpetual');
    const lt = (await jwtVerify(act.license_token, createLocalJWKSet(act.jwks))).payload;
    t.equal(typeof lt.exp, 'number', 'the token carries exp');
    t.equal((lt.exp as number) - (lt.iat as number), 30 * DAY, 'default lifetime 30 days');
    s.clock.advanceDays(31);
    try {
      t.match((await validate(act.license_token)).body, { valid: false, code: 'EXPIRED', message: /token/ }, 'an old token is over');
      const iat = Math.floor(s.clock.now().getTime() / 1000);
      const r = await s.req('POST', `/api/v1/machines/${act.machine_id}/refresh`, { proof: h.proof(AUD_REFRESH_PROOF, { iat }) }, { key: null });
      t.equal(r.status, 200, 'the license is not over: the machine refreshes');
      t.equal(r.body.license_expires_at, null);
      t.match((await validate(r.body.license_token)).body, { valid: true, code: 'VALID' }, 'the refreshed token validates');
    } finally {
      s.clock.offsetMs = 0;
    }
  });

  t.test('a token never outlives its license, and a long subscription is bounded too', async (t) => {
    const short = await license({ license_type: 'subscription', duration_days: 5 });
    const a = await activate(new TestHost('short-sub'), short.key);
    const st = (await jwtVerify(a.license_token, createLocalJWKSet(a.jwks))).payload;
    t.equal(st.exp, Math.floor(Date.parse(short.body.expires_at) / 1000), 'capped at the license expiry');
    const long = await license({ license_type: 'subscription', duration_days: 365 });
    const b = await activate(new TestHost('long-sub'), long.key);
    const lt = (await jwtVerify(b.license_token, createLocalJWKSet(b.jwks))).payload;
    t.equal((lt.exp as number) - (lt.iat as number), 30 * DAY, 'bounded by the token lifetime');
    t.equal(b.license_expires_at, long.body.expires_at, 'the answer names the license expiry, not the token');
  });

  t.test('AEGIS_LICENSE_TOKEN_TTL sets the lifetime and refuses nonsense', async (t) => {
    const base = { listen: '127.0.0.1:0', database: 'sqlite::memory:', keysDir: s.keysDir };
    t.equal(loadConfig(base, {}).licenseTokenTtlSeconds, 30 * DAY);
    t.equal(loadConfig(base, { AEGIS_LICENSE_TOKEN_TTL: '86400' }).licenseTokenTtlSeconds, DAY);
    for (const bad of ['0', '-5', 'week', '1.5', String(400 * DAY)]) {
      t.throws(() => loadConfig(base, { AEGIS_LICENSE_TOKEN_TTL: bad }), /AEGIS_LICENSE_TOKEN_TTL/, `refuses ${bad}`);
    }
    t.throws(
      () => loadConfig(base, { AEGIS_LICENSE_TOKEN_TTL: '3600', AEGIS_KERNEL_TOKEN_TTL: '7200' }),
      /at least AEGIS_KERNEL_TOKEN_TTL/,
      'shorter than the kernel token would lapse between refreshes',
    );
    const tiny = await startTestServer({ databaseUrl: await newDatabase(), licenseTokenTtlSeconds: 3600 });
    try {
      const c = await tiny.req('POST', '/api/v1/customers', { name: 'Tiny' });
      const l = await tiny.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'basic', license_type: 'perpetual' });
      const r = await tiny.req('POST', '/api/v1/activations', new TestHost('tiny').activation(l.body.license_key), { key: null });
      const p = (await jwtVerify(r.body.license_token, createLocalJWKSet(r.body.jwks))).payload;
      t.equal((p.exp as number) - (p.iat as number), 3600);
    } finally {
      await tiny.close();
    }
  });
}
