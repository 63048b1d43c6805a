/**
 * The license client library against a real aegis-server and a real nats-server. Attacks on
 * the offline check of a module license token (a tampered payload, an unknown or missing
 * kid, alg none, HS256 keyed with the public key, an embedded jwk/jku key, a machine or
 * kernel token, expired, not yet valid, another module, a disallowed version, a bound token
 * on another host); the JWKS loader refusing a key set without Ed25519 keys; online
 * validation with its cache and its fallback once the server is gone; and the fleet license
 * client: licensed from the first envelope (file 0600), community without NATS, with a
 * forged or foreign envelope, a tampered file or an expired license. The README example
 * runs verbatim. Run once per storage backend.
 */
import type { Test } from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, generateKeyPair, exportJWK } from 'jose';
import { connect as natsConnect } from 'nats';
import { AUD_REFRESH_PROOF } from '../../../protocol/src/index.js';
import { activateTestHost, startTestServer, type TestServer } from '../../../test/harness/server.js';
import { startNats, type TestNats } from '../../../test/harness/nats.js';
import { eventually } from '../../../test/harness/middlebox.js';
import {
  LicenseClient,
  LicenseClientError,
  OnlineCache,
  loadJwks,
  parseFleetKey,
  sealEnvelope,
  validateOnline,
  verifyLicenseToken,
  type JwksDocument,
} from '../src/index.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const CLI = fileURLToPath(new URL('../../../server/src/cli.js', import.meta.url));
const README = fileURLToPath(new URL('../../../../clients/typescript/README.md', import.meta.url));
const LIBRARY = fileURLToPath(new URL('../src/index.js', import.meta.url));
const DAY_MS = 86_400_000;
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const parts = (tok: string) => tok.split('.') as [string, string, string];
const payloadOf = (tok: string) => JSON.parse(Buffer.from(parts(tok)[1], 'base64url').toString('utf8')) as Record<string, any>;
const headerOf = (tok: string) => JSON.parse(Buffer.from(parts(tok)[0], 'base64url').toString('utf8')) as Record<string, any>;

export function licenseClientSuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('license client library against aegis-server and nats-server', async (t) => {
    const tmp = mkdtempSync(join(tmpdir(), 'aegis-lic-client-'));
    t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
    const databaseUrl = (await newDatabase()) ?? `sqlite:${join(tmp, 'aegis.db')}`;
    const master = randomBytes(32).toString('base64');
    const nats: TestNats = await startNats();
    t.teardown(() => nats.stop());
    const s: TestServer = await startTestServer({ databaseUrl, natsUrl: nats.url, fleetKey: master, republishSeconds: 3600 });
    let serverUp = true;
    t.teardown(async () => {
      if (serverUp) await s.close();
    });
    await eventually('server on NATS', async () => s.app.distribution?.bus()?.isConnected() === true, 10_000);

    const tag = randomBytes(3).toString('hex');
    const cust = await s.req('POST', '/api/v1/customers', { name: `Module customer ${tag}`, external_id: `CUST-${tag}` });
    const issue = async (body: Record<string, unknown>) => {
      const r = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, ...body });
      if (r.status !== 201) throw new Error(`issue: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as { id: string; token: string; license_key: string };
    };
    const lic = await issue({ module_name: 'biz4a_payroll_drc', allowed_major_versions: ['17'], license_type: 'subscription', duration_days: 30 });
    const jwksCache = join(tmp, 'jwks.json');
    const loaded = await loadJwks(s.url, { cachePath: jwksCache });
    const jwks: JwksDocument = loaded.jwks;
    const kid = headerOf(lic.token).kid as string;

    await t.test('the JWKS comes from the server, is cached, and an unusable one is refused', async (t) => {
      t.equal(loaded.source, 'network');
      t.ok(jwks.keys.some((k) => k.kid === kid), "the token's kid is in the fetched set");
      t.same(JSON.parse(readFileSync(jwksCache, 'utf8')), jwks, 'cached as fetched');
      const before = readFileSync(jwksCache, 'utf8');
      const rsaOnly: typeof fetch = async () => new Response(JSON.stringify({ keys: [{ kty: 'RSA', kid: 'r1', n: 'AQAB', e: 'AQAB' }, { kty: 'OKP', crv: 'Ed25519', x: jwks.keys[0]!.x, d: 'secret', kid: 'leak' }] }));
      await t.rejects(loadJwks(s.url, { cachePath: jwksCache, fetch: rsaOnly }), { code: 'JWKS_NO_ED25519_KEYS' }, 'RSA keys and private JWKs are not verification keys');
      t.equal(readFileSync(jwksCache, 'utf8'), before, 'the refused set did not replace the cache');
      t.throws(() => verifyLicenseToken(lic.token, { publicKeys: [] }), LicenseClientError, 'no keys is a bad option, not a verdict');
    });

    await t.test('offline verdicts: every code the token can earn offline', async (t) => {
      const v = (tok: string, o: Record<string, unknown> = {}) => verifyLicenseToken(tok, { jwks, moduleName: 'biz4a_payroll_drc', ...o });
      for (const version of ['17', '17.0', '17.0.3']) t.match(v(lic.token, { version }), { ok: true, code: 'VALID', claims: { license_id: lic.id, customer: { id: `CUST-${tag}` } } }, `${version} matches allowed 17`);
      t.match(v(lic.token, { version: '16.0' }), { ok: false, code: 'VERSION_NOT_ALLOWED' });
      t.match(v(lic.token, { version: '17; DROP' }), { ok: false, code: 'VERSION_NOT_ALLOWED' }, 'not a version is not allowed');
      t.match(v(lic.token, { moduleName: 'biz4a_hr_cd' }), { ok: false, code: 'MODULE_MISMATCH' });
      const [h, p, sig] = parts(lic.token);
      const tampered = `${h}.${b64({ ...payloadOf(lic.token), module: { technical_name: 'biz4a_payroll_drc', allowed_major_versions: ['17', '18'] } })}.${sig}`;
      t.match(v(tampered, { version: '18' }), { ok: false, code: 'SIGNATURE_INVALID' }, 'a tampered payload');
      const noExp = { ...payloadOf(lic.token) };
      delete noExp.exp;
      t.match(v(`${h}.${b64(noExp)}.${sig}`), { ok: false, code: 'SIGNATURE_INVALID' }, 'exp removed (made perpetual)');
      t.match(v(`${b64({ ...headerOf(lic.token), kid: 'not-a-server-key' })}.${p}.${sig}`), { ok: false, code: 'UNKNOWN_KEY' }, 'wrong kid');
      const { kid: _k, ...kidless } = headerOf(lic.token);
      t.match(v(`${b64(kidless)}.${p}.${sig}`), { ok: false, code: 'UNKNOWN_KEY' }, 'no kid');
      t.match(v(`${b64({ alg: 'none', typ: 'JWT', kid })}.${p}.`), { ok: false, code: 'MALFORMED' }, 'alg none without a signature');
      t.match(v(`${b64({ alg: 'none', typ: 'JWT', kid })}.${p}.${sig}`), { ok: false, code: 'SIGNATURE_INVALID' }, 'alg none');
      const key = jwks.keys.find((k) => k.kid === kid)!;
      for (const secret of [JSON.stringify(key), key.x!, Buffer.from(key.x!, 'base64url').toString('latin1')]) {
        const hh = b64({ alg: 'HS256', typ: 'JWT', kid });
        const mac = createHmac('sha256', secret).update(`${hh}.${p}`).digest('base64url');
        t.match(v(`${hh}.${p}.${mac}`), { ok: false, code: 'SIGNATURE_INVALID' }, 'HS256 keyed with the public key');
      }
      const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      const ajwk = { ...(await exportJWK(attacker.publicKey)), kid };
      const selfSigned = await new SignJWT(payloadOf(lic.token)).setProtectedHeader({ alg: 'EdDSA', kid, jwk: ajwk }).sign(attacker.privateKey);
      t.match(v(selfSigned), { ok: false, code: 'SIGNATURE_INVALID' }, 'a key embedded in the header');
      const forged = await new SignJWT(payloadOf(lic.token)).setProtectedHeader({ alg: 'EdDSA', kid }).sign(attacker.privateKey);
      t.match(v(forged), { ok: false, code: 'SIGNATURE_INVALID' }, "another key under the server's kid");
      t.match(v(lic.token, { now: Date.now() + 31 * DAY_MS }), { ok: false, code: 'EXPIRED' });
      t.match(v(lic.token, { now: Date.now() - DAY_MS }), { ok: false, code: 'NOT_YET_VALID' });
      const exp = payloadOf(lic.token).exp as number;
      t.match(v(lic.token, { now: (exp + 10) * 1000 }), { ok: true }, 'within the clock skew after exp');
      t.match(v(lic.token, { now: (exp + 10) * 1000, clockSkewSeconds: 0 }), { ok: false, code: 'EXPIRED' });
      t.match(v('eyJhbGc...'), { ok: false, code: 'MALFORMED' });
      t.match(v(lic.token, { revoked: [lic.id] }), { ok: false, code: 'REVOKED' }, 'a license id the caller knows revoked');
      // Tokens the server signs for other purposes, with the same keys.
      const m = await activateTestHost(s, `lic-client-host-${tag}`, { customerId: cust.body.id });
      const tokens = (await s.req('POST', `/api/v1/machines/${m.machineId}/refresh`, { proof: m.host.proof(AUD_REFRESH_PROOF) }, { key: null })).body;
      t.match(v(tokens.license_token), { ok: false, code: 'WRONG_AUDIENCE' }, 'a machine license token');
      t.match(v(tokens.kernel_token), { ok: false, code: 'WRONG_AUDIENCE' }, 'a kernel token');
      t.match(v(m.host.proof(AUD_REFRESH_PROOF)), { ok: false, code: 'UNKNOWN_KEY' }, "a host proof (the host's own key)");
      // Server-signed claims the server does not issue today: incomplete, and bound to a host.
      const signing = s.keys.signingKey();
      const serverSign = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: signing.kid }).sign(signing.privateKey);
      const { module: _m, ...noModule } = payloadOf(lic.token);
      t.match(v(await serverSign(noModule)), { ok: false, code: 'MALFORMED' }, 'claims naming no module');
      const bound = await serverSign({ ...payloadOf(lic.token), hwid: 'a'.repeat(64) });
      t.match(v(bound, { fingerprint: 'a'.repeat(64) }), { ok: true }, 'a bound token on its host');
      t.match(v(bound, { fingerprint: 'b'.repeat(64) }), { ok: false, code: 'HWID_MISMATCH' }, 'on another host');
      t.match(v(bound), { ok: false, code: 'HWID_MISMATCH' }, 'with no fingerprint given');
      t.match(v(lic.token, { fingerprint: 'b'.repeat(64) }), { ok: true }, 'an unbound token ignores the fingerprint');
    });

    await t.test('the README example runs verbatim', async (t) => {
      const block = /<!-- example:verify -->\s*```js\n([\s\S]*?)```/.exec(readFileSync(README, 'utf8'));
      t.ok(block, 'the README carries the example');
      const file = join(tmp, 'example.mjs');
      writeFileSync(file, block![1]!.replace("'@aegis/license-client'", JSON.stringify(LIBRARY)));
      // Asynchronously: the server answering its fetch runs in this process.
      const r = await promisify(execFile)(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, AEGIS_SERVER: s.url, LICENSE_TOKEN: lic.token, JWKS_CACHE: join(tmp, 'example-jwks.json') } });
      t.match(r.stdout, new RegExp(`^VALID CUST-${tag} \\d+`), 'it prints the verdict, the customer and the expiry');
      t.ok(existsSync(join(tmp, 'example-jwks.json')), 'and cached the keys');
    });

    let fleetKeyB64 = '';
    const fleet = `shop-${tag}`;
    await t.test('fleet license client over NATS', async (t) => {
      const cli = (...args: string[]) =>
        spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, DATABASE_URL: databaseUrl, AEGIS_FLEET_KEY: master, AEGIS_KEYS_DIR: s.keysDir, LOG_LEVEL: 'error' } });
      const fleetLic = await issue({ tier: 'server', license_type: 'subscription', duration_days: 30, fleet });
      const shown = cli('fleet-key', 'show', fleet);
      t.equal(shown.status, 0, shown.stderr);
      fleetKeyB64 = shown.stdout.trim();
      const fleetKey = parseFleetKey(fleetKeyB64);
      const connect = () => natsConnect({ servers: nats.url, reconnect: false });
      const newClient = (path: string, o: Record<string, unknown> = {}) => new LicenseClient({ fleet, fleetKey: fleetKeyB64, jwks, connect, path, ...o });

      const path = join(tmp, 'svc', 'license.key');
      const client = newClient(path);
      t.teardown(() => client.stop());
      const started = Date.now();
      const pending = client.start();
      let done = false;
      void pending.then(() => (done = true));
      while (!done && Date.now() - started < 12_000) {
        await s.app.fleet!.publishFleet(fleet);
        await new Promise((r) => setTimeout(r, 300));
      }
      const st = await pending;
      const elapsed = Date.now() - started;
      t.match(st, { edition: 'enterprise', source: 'nats', license: { fleet, license_id: fleetLic.id, status: 'active', tier: 'server' } });
      t.ok(elapsed < 10_000, `licensed from the first envelope in ${elapsed} ms`);
      t.equal(statSync(path).mode & 0o777, 0o600, 'license file 0600');
      t.match(readFileSync(path, 'utf8'), /"ct"/, 'the sealed envelope is what is kept');
      await client.stop();

      await t.test('the file alone licenses, without NATS', async (t) => {
        const c = newClient(path, { connect: async () => Promise.reject(new Error('ECONNREFUSED')) });
        t.match(await c.start(), { edition: 'enterprise', source: 'file' });
        t.match(await newClient(path, { now: () => Date.now() + 40 * DAY_MS }).check(), { edition: 'community', reason: /expired/ }, 'an expired license is community');
      });

      await t.test('NATS up but no envelope: community after at most 10 s', async (t) => {
        const c = new LicenseClient({ fleet: `silent-${tag}`, fleetKey: fleetKeyB64, jwks, connect, path: join(tmp, 'silent', 'license.key') });
        const t0 = Date.now();
        t.match(await c.start(), { edition: 'community', reason: /no fleet license on NATS within 10000 ms/ });
        const waited = Date.now() - t0;
        t.ok(waited >= 9_900 && waited < 11_500, `waited ${waited} ms`);
        await c.stop();
      });

      await t.test('no NATS and no file: community at once', async (t) => {
        const c = newClient(join(tmp, 'none', 'license.key'), { connect: () => natsConnect({ servers: 'nats://127.0.0.1:1', reconnect: false }) });
        const t0 = Date.now();
        t.match(await c.start(), { edition: 'community', reason: /NATS unreachable/ });
        t.ok(Date.now() - t0 < 10_000);
      });

      const pub = await natsConnect({ servers: nats.url });
      t.teardown(() => pub.close());
      const rejectedWith = async (envelope: string): Promise<{ state: ReturnType<LicenseClient['state']>; reasons: string[]; file: boolean }> => {
        const p = join(tmp, `forged-${randomBytes(3).toString('hex')}`, 'license.key');
        const c = newClient(p, { firstMessageTimeoutMs: 4000 });
        const reasons: string[] = [];
        c.on('rejected', (r: string) => reasons.push(r));
        const pending = c.start();
        await eventually('forged envelope rejected', async () => {
          pub.publish(`aegis.license.${fleet}`, new TextEncoder().encode(envelope));
          await pub.flush();
          return reasons.length > 0;
        }, 4000);
        const state = await pending;
        await c.stop();
        return { state, reasons, file: existsSync(p) };
      };
      const current = (await s.app.fleet!.envelope(fleet)) as string;
      const inner = JSON.parse(readFileSync(path, 'utf8')) as { seq: number };
      const opened = (await import('../src/index.js')).openEnvelope(fleetKey, fleet, current);

      await t.test('an envelope sealed with another key is refused: community, nothing written', async (t) => {
        const r = await rejectedWith(sealEnvelope(randomBytes(32), fleet, 1, opened.seq + 10, opened.plaintext));
        t.match(r.state, { edition: 'community' });
        t.match(r.reasons[0], /does not decrypt/);
        t.notOk(r.file);
      });
      await t.test('the right fleet key around a license signed by another key: community', async (t) => {
        const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
        const claims = { ...JSON.parse(Buffer.from(opened.plaintext.split('.')[1]!, 'base64url').toString('utf8')), seq: opened.seq + 11 };
        const jws = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid }).sign(attacker.privateKey);
        const r = await rejectedWith(sealEnvelope(fleetKey, fleet, opened.gen, opened.seq + 11, jws));
        t.match(r.state, { edition: 'community' });
        t.match(r.reasons[0], /bad signature: SIGNATURE_INVALID/);
        t.notOk(r.file);
      });
      await t.test("another fleet's genuine envelope on this fleet's subject: community", async (t) => {
        const other = `other-${tag}`;
        await issue({ tier: 'basic', license_type: 'perpetual', fleet: other });
        const r = await rejectedWith((await s.app.fleet!.envelope(other)) as string);
        t.match(r.state, { edition: 'community' });
        t.match(r.reasons[0], /is for fleet/);
      });
      await t.test('a license file altered on disk: community', async (t) => {
        const env = JSON.parse(readFileSync(path, 'utf8')) as { ct: string; seq: number };
        const ct = Buffer.from(env.ct, 'base64url');
        ct[0] = ct[0]! ^ 1;
        writeFileSync(path, JSON.stringify({ ...env, ct: ct.toString('base64url') }));
        t.match(await client.check(), { edition: 'community', reason: /rejected/ }, 'the running client re-checks its file');
        const c = newClient(path, { connect: async () => Promise.reject(new Error('no NATS')) });
        t.match(await c.start(), { edition: 'community', reason: /rejected: envelope .* does not decrypt/ }, 'a new client too');
        writeFileSync(path, JSON.stringify({ ...env, seq: env.seq + 1 }));
        t.match(await newClient(path).check(), { edition: 'community' }, 'a changed seq (bound as AAD)');
        t.ok(inner.seq >= 0);
      });
    });

    await t.test('online validation: answers, cache, revocation, fallback once the server is gone', async (t) => {
      let calls = 0;
      const counting: typeof fetch = (input, init) => {
        calls++;
        return fetch(input, init);
      };
      const cache = new OnlineCache();
      const req = { token: lic.token, moduleName: 'biz4a_payroll_drc', version: '17.0' };
      const o = { fetch: counting, cache, cacheTtlMs: 60_000, offline: { jwks } };
      t.match(await validateOnline(s.url, req, o), { ok: true, code: 'VALID', source: 'online' });
      t.match(await validateOnline(s.url, req, o), { ok: true, code: 'VALID', source: 'cache' });
      t.equal(calls, 1, 'the second answer came from the cache');
      t.match(await validateOnline(s.url, { ...req, version: '16' }, o), { ok: false, code: 'VERSION_NOT_ALLOWED', source: 'online' });
      t.match(await validateOnline(s.url, { ...req, moduleName: 'biz4a_hr_cd' }, o), { ok: false, code: 'MODULE_MISMATCH', source: 'online' });
      await t.rejects(validateOnline(s.url, { ...req, version: '17; DROP' }, o), { code: 'SERVER_ERROR' }, 'a request the server refuses is an error, not a verdict');
      const other = await issue({ module_name: 'biz4a_hr_cd', allowed_major_versions: ['17'], license_type: 'perpetual' });
      const revokedReq = { token: other.token, moduleName: 'biz4a_hr_cd', version: '17' };
      t.match(await validateOnline(s.url, revokedReq, o), { ok: true, source: 'online' });
      t.equal((await s.req('DELETE', `/api/v1/licenses/${other.id}/revoke`, { reason: 'test' })).status, 200);
      t.match(await validateOnline(s.url, revokedReq, { ...o, cacheTtlMs: 0 }), { ok: false, code: 'REVOKED', source: 'online' }, 'revocation is known online');

      await s.close();
      serverUp = false;
      t.match(await validateOnline(s.url, revokedReq, { ...o, cacheTtlMs: 0 }), { ok: false, code: 'REVOKED', source: 'cache' }, 'server gone: a revoked license stays revoked');
      t.match(await validateOnline(s.url, req, { ...o, cacheTtlMs: 0 }), { ok: true, code: 'VALID', source: 'offline' }, 'server gone: verified offline now');
      t.match(await validateOnline(s.url, req, { ...o, cacheTtlMs: 0, now: () => Date.now() + 31 * DAY_MS }), { ok: false, code: 'EXPIRED', source: 'offline' }, 'not a stale cached VALID');
      t.match(await validateOnline(s.url, req, { fetch: counting, cache: new OnlineCache() }), { ok: false, code: 'UNKNOWN_KEY', source: 'offline' }, 'no keys: not valid');
      t.match(await loadJwks(s.url, { cachePath: jwksCache }), { source: 'cache', jwks }, 'the JWKS comes from the cache offline');
      await t.rejects(loadJwks(s.url, { cachePath: join(tmp, 'absent.json') }), { code: 'JWKS_UNAVAILABLE' });
    });
  });
}
