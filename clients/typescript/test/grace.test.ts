/**
 * Grace periods through the library: a module license issued with `grace_period_seconds`
 * carries a `grace_seconds` claim; past its exp the offline verdict is VALID_IN_GRACE
 * (with grace_ends_at) until exp + grace, then EXPIRED; the server (its clock moved past
 * expiry) answers the same, and validateOnline reports it as ok.
 */
import t from 'tap';
import { startTestServer } from '../../../test/harness/server.js';
import { OnlineCache, validateOnline, verifyLicenseToken } from '../src/index.js';

t.test('a module license in grace verifies VALID_IN_GRACE offline and online, then EXPIRED', async (t) => {
  const s = await startTestServer();
  t.teardown(() => s.close());
  const c = await s.req('POST', '/api/v1/customers', { name: 'Grace Client Co' });
  const expires = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_600_000);
  const l = await s.req('POST', '/api/v1/licenses', {
    customer_id: c.body.id,
    module_name: 'grace_module',
    license_type: 'subscription',
    expires_at: expires.toISOString(),
    grace_period_seconds: 600,
  });
  t.equal(l.status, 201, l.status === 201 ? 'issued' : JSON.stringify(l.body));
  t.equal(l.body.grace_period_seconds, 600);
  const token: string = l.body.token;
  const jwks = (await s.req('GET', '/.well-known/jwks.json')).body;
  const exp = expires.getTime();

  t.match(verifyLicenseToken(token, { jwks, now: exp - 1000 }), { ok: true, code: 'VALID' }, 'before expiry: VALID');
  const inGrace = verifyLicenseToken(token, { jwks, now: exp + 60_000 });
  t.match(inGrace, { ok: true, code: 'VALID_IN_GRACE' }, 'after expiry, within grace');
  t.equal(inGrace.grace_ends_at, new Date(exp + 600_000).toISOString(), 'grace_ends_at is exp + grace_seconds');
  t.match(verifyLicenseToken(token, { jwks, now: exp + 601_000 }), { ok: false, code: 'EXPIRED' }, 'after grace: EXPIRED');

  s.clock.offsetMs = exp + 60_000 - Date.now();
  const online = await validateOnline(s.url, { token, moduleName: 'grace_module' }, { cache: new OnlineCache() });
  t.match(online, { ok: true, code: 'VALID_IN_GRACE', source: 'online' }, 'the server answers VALID_IN_GRACE too');
  t.equal(online.grace_ends_at, new Date(exp + 600_000).toISOString());
  s.clock.offsetMs = exp + 601_000 - Date.now();
  t.match(await validateOnline(s.url, { token, moduleName: 'grace_module' }, { cache: new OnlineCache() }), { ok: false, code: 'EXPIRED' }, 'and EXPIRED after it');
});
